"""The variational Renyi bound against a plain-torch reference on the linear-Gaussian problem (``test_iwae.py``)."""

import math

import pyro
import pytest
import torch

import inference.objectives.renyi  # noqa: F401 (registers the estimator)
from inference.objectives.estimators import estimator
from tests.inference.gradient_problem import BATCH, GUIDE_PARAMS, MODEL_PARAMS, deviations


def renyi_bound(alpha):
    def bound(log_w):
        return (torch.logsumexp((1 - alpha) * log_w, 1) - math.log(log_w.shape[1])) / (1 - alpha)

    return bound


@pytest.mark.parametrize("alpha", [0.5, -0.5])
def test_gradient_is_unbiased_for_the_renyi_bound_gradient(problem, alpha):
    K = 4
    pyro.set_rng_seed(0)
    reference = problem.reference_gradient(renyi_bound(alpha), K, num_draws=100_000)
    estimate = problem.estimator_gradient(estimator("renyi", alpha=alpha, num_particles=K))
    assert deviations(estimate, reference, MODEL_PARAMS + GUIDE_PARAMS) < 4.0


def test_alpha_zero_is_iwae_and_alpha_one_is_the_elbo(problem):
    def loss(name, **options):
        pyro.set_rng_seed(1)
        return estimator(name, num_particles=5, max_plate_nesting=1, **options).loss(
            problem.model, problem.guide, problem.x
        )

    assert loss("renyi", alpha=0.0) == pytest.approx(loss("iwae"), rel=1e-12)
    assert loss("renyi", alpha=1.0) == pytest.approx(loss("ciwae", beta=1.0), rel=1e-12)
    # the bound decreases in alpha: same draws, so the order holds draw by draw (power means)
    assert loss("renyi", alpha=-0.5) < loss("renyi", alpha=0.0) < loss("renyi", alpha=0.5) < loss("renyi", alpha=1.0)


def test_minibatch_loss_is_scaled_outside_the_log_sum_exp(problem):
    est = estimator("renyi", alpha=0.5, num_particles=5, max_plate_nesting=1)
    pyro.set_rng_seed(2)
    full = est.loss(problem.model, problem.guide, problem.x)
    pyro.set_rng_seed(2)
    sub = est.loss(problem.model, problem.guide, problem.x, num_data=10 * BATCH)
    assert sub == pytest.approx(10 * full, rel=1e-12)
