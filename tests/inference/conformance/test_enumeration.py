"""Guide sites marked for parallel enumeration, summed exactly by ``is``, ``iwae`` and ``iwae-dreg``.

On the catalogue's mixture (a class ``y``, then ``z | y``), the stratified estimate
``log (1/K) sum_k sum_y p(x, y, z_yk) / q(z_yk | x, y)`` must equal the same sum written by hand on the same draws,
and its variance across draws must be below that of the estimate that draws ``y`` from ``q(y | x)``.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import estimator, log_marginal_likelihood
from inference.importance import per_example_log_weights
from inference.objectives.elbo import EnumerationIgnoredWarning
from tests.inference.conformance.catalogue import MIXTURE_MEANS, MIXTURE_WEIGHTS, NOISE, build

K = 5


def by_hand_log_weights(x, seed):
    """``(3, K, B)`` log weights ``log p(x, y, z_yk) - log q(z_yk | x, y)``: the guide's ``z`` for every class at
    once, from the same standard normal draws as the library's pass."""
    means, weights = MIXTURE_MEANS.to(x), MIXTURE_WEIGHTS.to(x)
    s = pyro.param("s").detach()
    loc = (0.8 * x + 0.2 * means.unsqueeze(-1)).unsqueeze(1)  # (3, 1, B)
    pyro.set_rng_seed(seed)
    z = dist.Normal(loc.expand(3, K, len(x)), s).rsample()
    log_p = weights.log()[:, None, None] + dist.Normal(means[:, None, None], 1.0).log_prob(z)
    log_p = log_p + dist.Normal(z, NOISE).log_prob(x)
    return log_p - dist.Normal(loc, s).log_prob(z)


def test_the_enumerated_sum_is_the_by_hand_sum_of_per_class_importance_sampling(float64):
    pair = build("enumerated class")
    pair.guide(*pair.args)  # create its parameters
    pyro.set_rng_seed(5)
    ours = per_example_log_weights(pair.model, pair.guide, *pair.args, num_particles=K, max_plate_nesting=1)
    by_hand = by_hand_log_weights(pair.args[0], 5).logsumexp(0)  # (K, B): the classes summed per particle
    assert (ours - by_hand).abs().max() < 1e-12, (ours - by_hand).abs().max()
    bound = (by_hand.logsumexp(0) - math.log(K)).sum()
    for name in ("iwae", "iwae-dreg"):
        pyro.set_rng_seed(5)
        loss = estimator(name, num_particles=K, max_plate_nesting=1).loss(pair.model, pair.guide, *pair.args)
        assert loss == pytest.approx(-bound.item(), rel=1e-12)


def test_the_enumerated_sum_has_less_variance_than_drawing_the_class(float64):
    """300 estimates at K = 10 per example, stratified and sampled: each example's variance is lower enumerated
    (the part from the draw of ``y`` is gone), and both means are near the exact value."""
    pair = build("enumerated class")
    repeats, k = 300, 10
    variances, means = {}, {}
    for enumerate_guide in (True, False):
        pyro.set_rng_seed(0)
        with torch.no_grad():
            log_w = per_example_log_weights(
                pair.model,
                pair.guide,
                *pair.args,
                num_particles=repeats * k,
                max_plate_nesting=1,
                enumerate_guide=enumerate_guide,
            )
        estimates = log_w.reshape(repeats, k, -1).logsumexp(1) - math.log(k)
        variances[enumerate_guide], means[enumerate_guide] = estimates.var(0), estimates.mean(0)
    assert (variances[True] < variances[False]).all(), (variances[True], variances[False])
    assert (means[True] - pair.exact).abs().max() < 0.05


def test_is_sums_enumerated_sites_and_reports_per_example_estimates(float64):
    pair = build("enumerated class")
    result = log_marginal_likelihood(pair.model, pair.guide, *pair.args, num_samples=2000, seed=0)
    assert (result.log_px - pair.exact).abs().max() < 0.02


def test_elbo_says_it_draws_a_site_marked_for_enumeration_and_names_what_sums_it(float64):
    pair = build("enumerated class")
    with pytest.warns(EnumerationIgnoredWarning, match=r"\['y'\].*'iwae' \(any K\) and 'iwae-dreg' sum them"):
        estimator("elbo", max_plate_nesting=1).loss(pair.model, pair.guide, *pair.args)
