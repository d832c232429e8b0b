"""MIWAE, CIWAE and PIWAE against plain-torch reference gradients on the linear-Gaussian problem (``test_iwae.py``)."""

import math

import pyro
import pytest
import torch

import inference.objectives.elbo  # noqa: F401 (registers the estimators used below)
import inference.objectives.tighter_bounds  # noqa: F401
from inference.objectives.estimators import estimator
from tests.inference.gradient_problem import (
    GUIDE_PARAMS,
    MODEL_PARAMS,
    LinearGaussianProblem,
    deviations,
    iwae_bound,
)


def miwae_bound(num_outer, num_inner):
    def bound(log_w):
        groups = log_w.reshape(log_w.shape[0], num_outer, num_inner, *log_w.shape[2:])
        return (torch.logsumexp(groups, 2) - math.log(num_inner)).mean(1)

    return bound


def ciwae_bound(beta):
    def bound(log_w):
        return beta * log_w.mean(1) + (1 - beta) * iwae_bound(log_w)

    return bound


@pytest.mark.parametrize(
    "name, options, bound, num_draws",
    [
        ("miwae", {"num_particles": 3, "num_outer": 2}, miwae_bound(2, 3), 6),
        ("ciwae", {"num_particles": 4, "beta": 0.3}, ciwae_bound(0.3), 4),
    ],
)
def test_gradient_is_unbiased_for_its_bound(problem, name, options, bound, num_draws):
    pyro.set_rng_seed(0)
    reference = problem.reference_gradient(bound, num_draws, num_draws=100_000)
    estimate = problem.estimator_gradient(estimator(name, **options))
    assert deviations(estimate, reference, MODEL_PARAMS + GUIDE_PARAMS) < 4.0


@pytest.mark.parametrize("num_inner", [1, 2])
def test_piwae_follows_iwae_for_the_model_and_miwae_for_the_guide(problem, num_inner):
    S = 4
    pyro.set_rng_seed(1)
    model_reference = problem.reference_gradient(iwae_bound, S, num_draws=100_000)
    guide_reference = problem.reference_gradient(miwae_bound(S // num_inner, num_inner), S, num_draws=100_000)
    estimate = problem.estimator_gradient(estimator("piwae", num_particles=S, num_inner=num_inner))
    assert deviations(estimate, model_reference, MODEL_PARAMS) < 4.0
    assert deviations(estimate, guide_reference, GUIDE_PARAMS) < 4.0
    # and the guide's target is distinguishable from IWAE's
    assert deviations(estimate, model_reference, GUIDE_PARAMS) > 10.0


@pytest.mark.parametrize("num_inner", [1, 2])
def test_piwae_is_iwae_for_the_model_and_miwae_for_the_guide_on_the_same_draws(num_inner):
    """Exactly, draw by draw, in single precision, with a guide 20 times too wide: log weights spread over hundreds
    of nats, so most IWAE weights underflow to 0 while each draw still carries its MIWAE share for the guide (one
    model pass rescales the gradient through z by the ratio of the two; it must stay finite and right)."""
    from inference.importance import ParticleDraw, per_example_log_weight_parts
    from inference.objectives.objective import normalized_weights

    problem = LinearGaussianProblem()
    params = dict(problem.mismatched, log_diag=problem.exact["log_diag"] + 3.0)
    S = 8

    def draw(fn, *args, **kwargs):
        problem.set_params(params)
        pyro.set_rng_seed(3)
        return fn(*args, **kwargs)

    def gradient(name, **options):
        loss = estimator(name, max_plate_nesting=1, **options).differentiable_loss(
            problem.model, problem.guide, problem.x
        )
        loss.backward()
        return {param: leaf.grad.clone() for param, leaf in problem.leaves().items()}

    model, guide, args = problem.model, problem.guide, (problem.x,)
    parts = draw(per_example_log_weight_parts, model, guide, args, {}, ParticleDraw(S, max_plate_nesting=1))
    wbar = normalized_weights(parts.log_weights)
    assert (wbar == 0).any() and (parts.log_weights.max(0).values - parts.log_weights.min(0).values).min() > 200
    piwae = draw(gradient, "piwae", num_particles=S, num_inner=num_inner)
    iwae = draw(gradient, "iwae", num_particles=S)
    miwae = draw(gradient, "miwae", num_particles=num_inner, num_outer=S // num_inner)
    for name in MODEL_PARAMS:
        torch.testing.assert_close(piwae[name], iwae[name], rtol=1e-5, atol=1e-5 * iwae[name].abs().max().item())
    for name in GUIDE_PARAMS:
        torch.testing.assert_close(piwae[name], miwae[name], rtol=1e-5, atol=1e-5 * miwae[name].abs().max().item())
        assert not torch.allclose(piwae[name], iwae[name], rtol=1e-2)  # the guide's target is not IWAE's


def test_special_cases_coincide_on_the_same_draws(problem):
    def loss(name, **options):
        pyro.set_rng_seed(2)
        est = estimator(name, max_plate_nesting=1, **options)
        return est.loss(problem.model, problem.guide, problem.x)

    iwae = loss("iwae", num_particles=6)
    assert loss("miwae", num_particles=6, num_outer=1) == pytest.approx(iwae, rel=1e-12)
    assert loss("ciwae", num_particles=6, beta=0.0) == pytest.approx(iwae, rel=1e-12)
    assert loss("piwae", num_particles=6, num_inner=3) == pytest.approx(iwae, rel=1e-12)
    assert loss("miwae", num_particles=1, num_outer=6) == pytest.approx(loss("elbo-stl", num_particles=6), rel=1e-12)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="num_outer"):
        estimator("miwae", num_outer=0)
    with pytest.raises(ValueError, match="beta"):
        estimator("ciwae", beta=1.5)
    with pytest.raises(ValueError, match="num_inner.*dividing"):
        estimator("piwae", num_particles=6, num_inner=4)
