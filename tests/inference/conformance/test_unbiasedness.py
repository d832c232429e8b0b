"""The estimators whose gradient is not Pyro's at K = 1 are unbiased for it: over M seeded draws, every gradient
element's mean lies within 4.5 combined standard errors of the reference's mean (``Trace_ELBO`` at K = 1; ``iwae``
at the same K for ``vimco`` and for an enumerated ``iwae-dreg``). With about a hundred elements compared, 4.5
standard errors leave a chance of about 1 in 1,000 that an unbiased estimator fails."""

import pytest
import torch

from inference import estimator
from tests.inference.conformance.catalogue import build
from tests.inference.conformance.test_estimators import loss_and_gradients, options, reference, sampled_iwae_loss

DRAWS = 300
CASES = [
    ("pyro.param guide", "elbo-stl", 1),
    ("pyro.param guide", "iwae-stl", 1),
    ("pyro.param guide", "iwae-dreg", 1),
    ("pyro.param guide", "score", 1),
    ("AutoNormal", "elbo-stl", 1),
    ("AutoNormal", "iwae-dreg", 1),
    ("AutoNormal", "score", 1),
    ("poutine.scale on latents", "iwae-dreg", 1),
    ("poutine.scale on latents", "score", 1),
    ("pyro.param guide", "vimco", 3),
    ("enumerated class", "vimco", 3),
    ("enumerated class", "score", 1),
    ("enumerated class", "iwae-dreg", 3),
]


def gradient_draws(loss_fn, pair):
    draws = [loss_and_gradients(loss_fn, pair, seed)[1] for seed in range(DRAWS)]
    return {name: torch.stack([draw[name] for draw in draws]) for name in draws[0]}


@pytest.mark.parametrize("key, name, num_particles", CASES)
def test_unbiased_for_the_reference_gradient(key, name, num_particles, float64):
    pair = build(key)
    ours = gradient_draws(estimator(name, **options(pair, num_particles)).differentiable_loss, pair)
    if num_particles == 1:
        ref = gradient_draws(reference(pair, name), pair)
    elif pair.enumerated and name == "vimco":  # VIMCO draws the class: its bound is the sampled one
        ref = gradient_draws(sampled_iwae_loss(pair, num_particles), pair)
    else:
        ref = gradient_draws(estimator("iwae", **options(pair, num_particles)).differentiable_loss, pair)
    assert ours.keys() == ref.keys()
    for param in ref:
        a, b = ours[param], ref[param]
        stderr = (a.var(0) / DRAWS + b.var(0) / DRAWS).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() <= 4.5 * stderr + 1e-9).all(), (param, a.mean(0), b.mean(0), stderr)
