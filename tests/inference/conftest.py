import pytest

from tests.inference.gradient_problem import LinearGaussianProblem


@pytest.fixture
def problem(float64):
    problem = LinearGaussianProblem()
    problem.set_params(problem.mismatched)
    return problem
