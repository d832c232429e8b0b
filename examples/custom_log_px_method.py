"""A new log p(x) method is one class: defensive importance sampling, registered as ``"is-defensive"``.

Importance sampling with the guide as proposal fails where ``q(z | x)`` has lighter tails than the posterior: a
rare draw with ``q(z | x) << p(z | x)`` carries a huge weight, and the weights' variance can be infinite. Hesterberg
(1995) mixes a "defensive" component with heavier tails into the proposal; with the prior as that component::

    m(z | x) = alpha q(z | x) + (1 - alpha) p(z),
    log p_K(x) = log (1/K) sum_k p(x, z_k) / m(z_k | x),    z_k ~ m(. | x).

Every weight is then at most ``p(x | z) / (1 - alpha)`` (bounded where the likelihood is) and at most ``1 / alpha``
times the guide's own weight ``p(x, z) / q(z | x)``. The draws are stratified, as Owen and Zhou (2000) do: ``K_q =
round(alpha K)`` come from the guide and the other ``K - K_q`` from the prior (at least one of each), and ``alpha``
in ``m`` is the guide's share ``K_q / K``, which keeps ``E[p_K(x)] = p(x)``::

    (K_q / K) E_q[p(x, z) / m] + (1 - K_q / K) E_p[p(x, z) / m] = integral of m p(x, z) / m dz = p(x).

Use it from Python once this file has run (``log_marginal_likelihood(model, guide, x, method="is-defensive",
alpha=0.8)``), or from the command line, where the file is named as a plugin::

    pyro-vae train --dataset digits --epochs 1 --hidden-sizes 16 --latent-dim 2 --out runs/tiny
    pyro-vae evaluate runs/tiny --plugin examples/custom_log_px_method.py --method is-defensive \
                      --num-samples 1000 --method-options '{"alpha": 0.8}'

which writes ``runs/tiny/eval/is-defensive-test.json``. Run this file to compare it with ``"is"`` and the exact
log p(x) of a linear-Gaussian model under a guide whose tails are too light.

References:
    T. Hesterberg. Weighted average importance sampling and defensive mixture distributions. Technometrics 37(2),
    1995.
    A. Owen, Y. Zhou. Safe and effective importance sampling. Journal of the American Statistical Association
    95(449), 2000.
"""

import math

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites

from inference import LOG_PX_METHODS, LogPxMethod, pareto_khat
from inference.evaluation.ais import prior_proposal
from inference.evaluation.log_marginal_likelihood import (
    PerExampleEstimate,
    check_positive_int,
    particles_per_pass,
    summarize_log_weights,
)
from inference.importance import check_importance_traces, in_particle_plate, per_example_log_prob, vectorized_traces


@LOG_PX_METHODS.register("is-defensive")
class DefensiveImportanceSampling(LogPxMethod):
    """``"is-defensive"``: importance sampling from the mixture ``alpha q(z | x) + (1 - alpha) p(z)`` (module
    docstring). The ELBO it reports is the guide's, ``E_q[log p(x, z) - log q(z | x)]`` over its guide draws, as
    ``"is"`` reports it.

    :param int num_samples: ``K`` per data point, at least 2 (one from each component).
    :param float alpha: the guide's share of the mixture, strictly between 0 and 1 (1 is ``"is"``, 0 ``"is-prior"``).
    :param particle_batch_size: particles per vectorized pass, as for ``"is"``.

    The model's latent sites must be those the guide draws, inside the data plate, and the guide must have a
    density at any ``z`` (not a point mass, not an autoguide drawing at auxiliary sites): the mixture needs
    ``q(z | x)`` at the prior's draws too.
    """

    name = "is-defensive"

    def __init__(self, num_samples: int = 5000, alpha: float = 0.9, particle_batch_size="auto"):
        check_positive_int(num_samples, "num_samples")
        if num_samples < 2:
            raise ValueError("'is-defensive' draws from the guide and the prior: num_samples must be 2 or more, got 1")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise ValueError(
                f"alpha must lie strictly between 0 and 1, got {alpha!r} (alpha = 1 is method 'is', 0 'is-prior')"
            )
        if particle_batch_size not in (None, "auto"):
            check_positive_int(particle_batch_size, "particle_batch_size", 'or "auto" or None')
        self.num_samples = num_samples
        self.alpha = alpha
        self.particle_batch_size = particle_batch_size
        self.num_guide_draws = min(max(round(alpha * num_samples), 1), num_samples - 1)

    @property
    def num_draws(self) -> int:
        return self.num_samples

    def proposal(self, model, guide):
        """The guide, whose sites and plates the prior's draws share."""
        return guide

    def estimate(self, model, guide, args, kwargs, data_plate, max_plate_nesting, on_particles=None):
        guide_share = self.num_guide_draws / self.num_samples
        draws = [(guide, self.num_guide_draws), (prior_proposal(model), self.num_samples - self.num_guide_draws)]
        log_w, guide_log_w = [], []
        for component, count in draws:
            per_pass = particles_per_pass(self.particle_batch_size, count, args, data_plate)
            for start in range(0, count, per_pass):
                size = min(per_pass, count - start)
                log_joint, log_prior, log_guide = log_densities_at_draws(
                    model, guide, component, args, kwargs, size, max_plate_nesting, data_plate
                )
                log_w.append(log_joint - mixture_log_density(log_guide, log_prior, guide_share))
                if component is guide:
                    guide_log_w.append(log_joint - log_guide)
                if on_particles is not None:
                    on_particles(size)
        log_w = torch.cat(log_w)
        if not torch.isfinite(log_w).all():
            raise FloatingPointError("non-finite importance weights: the model or guide produced NaN/inf log densities")
        summary = summarize_log_weights(log_w)._replace(elbo=torch.cat(guide_log_w).mean(0))
        return PerExampleEstimate(*summary, khat=pareto_khat(log_w))


def mixture_log_density(log_guide, log_prior, alpha):
    """``log(alpha q(z | x) + (1 - alpha) p(z))`` from ``log q`` and ``log p(z)``."""
    return torch.logaddexp(log_guide + math.log(alpha), log_prior + math.log1p(-alpha))


@torch.no_grad()
def log_densities_at_draws(model, guide, proposal, args, kwargs, num_particles, max_plate_nesting, data_plate):
    """``(log p(x, z), log p(z), log q(z | x))``, each of shape ``(num_particles, batch_size)``, at
    ``num_particles`` draws of ``z`` from ``proposal`` (the guide or the prior) for each data point: the model and
    the guide are both replayed on the draws."""
    traces = vectorized_traces(
        model, proposal, *args, num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs
    )
    check_importance_traces(traces, data_plate)
    guide_in_plate = in_particle_plate(guide, num_particles, traces.particle_dim)
    guide_trace = poutine.trace(poutine.replay(guide_in_plate, trace=traces.model_trace)).get_trace(*args, **kwargs)
    guide_trace = prune_subsample_sites(guide_trace)
    check_guide_density_at_draws(traces.model_trace, guide_trace)

    def per_example(trace, sites=None):
        return per_example_log_prob(trace, traces.particle_dim, num_particles, data_plate, sites)

    log_prior = per_example(traces.model_trace, sites=lambda site: not site["is_observed"])
    return per_example(traces.model_trace), log_prior, per_example(guide_trace)


def check_guide_density_at_draws(model_trace, guide_trace):
    """Refuse a guide whose density at a given ``z`` replaying it does not give: one drawing sites that are not the
    model's latent sites (an autoguide's auxiliary sites) or leaving some of them out, or a point mass."""
    latent = {name for name, site in model_trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]}
    drawn = {name for name, site in guide_trace.nodes.items() if site["type"] == "sample"}
    if drawn != latent:
        raise ValueError(
            f"'is-defensive' needs q(z | x) at the prior's draws too, so the guide must draw exactly the model's "
            f"latent sites {sorted(latent)}; it draws {sorted(drawn)} (an autoguide draws at auxiliary sites). Use "
            "method 'is' or 'is-prior'."
        )
    for name in drawn:
        if isinstance(unwrapped(guide_trace.nodes[name]["fn"]), dist.Delta):
            raise ValueError(
                f"guide site '{name}' is a point mass (Delta), which has no density to mix with the prior's: "
                "use method 'is-prior'."
            )


def unwrapped(fn):
    """A distribution without its ``Independent`` and mask wrappers."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def main(num_samples=2000, num_data=200, alpha=0.9, scale_factor=0.5, seed=0):
    """``"is"`` and ``"is-defensive"`` on a linear-Gaussian model under a guide whose scales are ``scale_factor``
    times the posterior's, against the exact log p(x); returns ``(exact mean, {method: LogMarginalLikelihood})``."""
    import warnings

    from inference import UnreliableEstimateWarning, log_marginal_likelihood
    from pyro_vae.data.linear_gaussian import LinearGaussian

    lg = LinearGaussian.random(data_dim=5, latent_dim=2, sigma=0.5, seed=seed)
    x = lg.sample(num_data, seed=seed + 1)
    guide = lg.shifted_guide(shift=0.0, scale_factor=scale_factor)
    exact = lg.log_marginal(x).mean().item()
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreliableEstimateWarning)  # "is" under a too narrow guide: the point here
        for method, options in (("is", {}), ("is-defensive", {"alpha": alpha})):
            results[method] = log_marginal_likelihood(
                lg.model, guide, x, method=method, num_samples=num_samples, seed=seed, **options
            )
    print(f"exact log p(x): {exact:.4f} nats per example")
    for method, result in results.items():
        print(
            f"{method:>13}: {result.mean:.4f} +- {result.mc_stderr_of_mean:.4f} (Monte Carlo), "
            f"{result.khat_fraction_above:.0%} of examples with k-hat above 0.7"
        )
    return exact, results


if __name__ == "__main__":
    main()
