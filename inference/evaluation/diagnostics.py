"""How far to trust an importance-weighted log p(x), and what the encoder uses.

Per data point, from the log importance weights ``log w_nk`` (``k = 1..K``):

* **Pareto k-hat** (Vehtari et al. 2024): the shape of a generalized Pareto distribution fitted to the largest
  weights (PSIS; :mod:`inference.evaluation.pareto` fits every data point at once, as :func:`arviz.psislw` does
  one at a time). Below 0.5 the weights have finite variance and the estimate converges quickly; between 0.5 and
  0.7 it converges slowly; above 0.7 the estimate is unreliable however many particles.
* **Effective sample size** ``ESS_n = (sum_k w_nk)^2 / sum_k w_nk^2`` (Kong 1992).

Per model, from the guide ``q(z | x) = prod_u q(z_u | x)`` and the prior ``p(z)`` of one latent site:

* ``KL(q(z_u | x) || p(z_u))`` per latent dimension ``u``, averaged over data points (closed form where
  :func:`torch.distributions.kl_divergence` has one, else Monte Carlo);
* **active units** (Burda et al. 2016): dimension ``u`` is active when ``A_u = Cov_x(E_q[z_u | x]) > 0.01``.

:func:`to_inference_data` collects per-example results (and optional posterior draws of ``z``) in an
:class:`arviz.InferenceData`, so they can be saved as netCDF and explored in arviz.

References:
    A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. Pareto smoothed importance sampling. JMLR 25(72), 2024.
    A. Kong. A note on importance sampling using standardized weights. Technical report 348, U. Chicago, 1992.
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
"""

import math
import os
import warnings
from typing import Dict, Optional

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Independent, kl_divergence

from inference.atomic import atomic_write
from inference.evaluation.pareto import MIN_SAMPLES_FOR_KHAT, pareto_khat  # noqa: F401 (part of this module's API)
from inference.importance import guide_and_model_traces, per_example_log_prob, vectorized_traces

KHAT_GOOD = 0.5
KHAT_BAD = 0.7


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """Kong's ``(sum_k w_k)^2 / sum_k w_k^2`` per data point, from ``(num_samples, batch_size)`` log weights.

    The weights are divided by their largest first, so both sums are in ``[1, K]`` and their logarithms never
    cancel: at log weights near 1e15 the unshifted difference of two logsumexps loses every digit.
    """
    relative = log_weights - log_weights.max(0).values
    return torch.exp(2 * torch.logsumexp(relative, 0) - torch.logsumexp(2 * relative, 0))


def _single_latent_site(trace, site):
    latents = [
        name
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and not node["is_observed"] and not node["infer"].get("is_auxiliary")
    ]
    if site is None:
        if len(latents) != 1:
            raise ValueError(f"the guide has latent sites {latents}; choose one with site=<name>")
        return latents[0]
    if site not in latents:
        raise ValueError(f"no latent site '{site}' in the guide; its latent sites are {latents}")
    return site


def per_dimension(fn):
    """The distribution of each latent dimension: ``fn`` with its ``Independent`` wrappers removed."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn


def _guide_and_prior(model, guide, args, kwargs, site):
    with torch.no_grad(), poutine.block():
        guide_trace, model_trace = guide_and_model_traces(model, guide, *args, **kwargs)
        site = _single_latent_site(prune_subsample_sites(guide_trace), site)
    posterior = guide_trace.nodes[site]["fn"]
    prior = model_trace.nodes[site]["fn"]
    return posterior, prior, site


def kl_per_dimension(model, guide, *args, site=None, num_samples=1000, **kwargs) -> torch.Tensor:
    """``KL(q(z_u | x_n) || p(z_u))`` for each latent dimension ``u``, averaged over the data points of ``args``.

    The guide's and the prior's distributions of ``site`` are read from a guide trace and a model trace replayed
    on it; both are unwrapped from ``Independent`` to per-dimension distributions. Pairs without a registered
    closed form fall back to a Monte Carlo estimate with ``num_samples`` draws from ``q``.

    :param str site: the latent site (default: the guide's only latent site).
    :returns: shape ``(latent_dim,)`` (the site's event shape, flattened).
    """
    posterior, prior, site = _guide_and_prior(model, guide, args, kwargs, site)
    q, p = per_dimension(posterior), per_dimension(prior)
    if q.event_shape or p.event_shape:
        raise ValueError(
            f"site '{site}' has a {type(p).__name__} prior or {type(q).__name__} guide that does not factor over "
            "dimensions, so there is no KL per dimension: use kl_from_prior for the whole KL"
        )
    try:
        kl = kl_divergence(q, p)
    except NotImplementedError:
        kl = _monte_carlo_kl(q, p, num_samples)
    kl = kl.expand(posterior.batch_shape + posterior.event_shape)
    return kl.reshape(-1, math.prod(posterior.event_shape)).mean(0)


def kl_from_prior(model, guide, *args, site=None, num_samples=1000, **kwargs) -> torch.Tensor:
    """``KL(q(z | x_n) || p(z))`` of one latent site, per data point: closed form where torch has one, else a
    Monte Carlo estimate with ``num_samples`` draws from ``q`` (drawn a few at a time, so memory stays bounded for
    a mixture prior with many components)."""
    posterior, prior, _ = _guide_and_prior(model, guide, args, kwargs, site)
    try:
        return kl_divergence(posterior, prior)
    except NotImplementedError:
        return _monte_carlo_kl(posterior, prior, num_samples)


@torch.no_grad()
def _monte_carlo_kl(q, p, num_samples, chunk=20):
    total = 0.0
    for start in range(0, num_samples, chunk):
        z = q.sample((min(chunk, num_samples - start),))
        total = total + (q.log_prob(z) - p.log_prob(z)).sum(0)
    return total / num_samples


def posterior_means(guide, *args, site=None, num_samples=1000, **kwargs) -> torch.Tensor:
    """``E_q[z | x_n]`` of one latent site for every data point: shape ``(batch_size, latent_dim)``.

    Uses the guide distribution's ``mean`` where it has one, else the average of ``num_samples`` draws.
    """
    with torch.no_grad(), poutine.block():
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
        site = _single_latent_site(guide_trace, site)
        fn = guide_trace.nodes[site]["fn"]
        try:
            mean = fn.mean
        except NotImplementedError:
            mean = fn.sample((num_samples,)).mean(0)
    mean = mean.expand(fn.batch_shape + fn.event_shape)
    return mean.reshape(-1, math.prod(fn.event_shape))


def latent_activity(guide, *args, site=None, **kwargs) -> torch.Tensor:
    """``A_u = Cov_x(E_q[z_u | x])`` per latent dimension: the variance over data points of the posterior means."""
    means = posterior_means(guide, *args, site=site, **kwargs)
    if means.shape[0] < 2:
        raise ValueError("latent activity is a variance over data points; pass at least two data points")
    return means.var(0, unbiased=True)


def active_units(guide, *args, site=None, threshold=0.01, **kwargs) -> int:
    """The number of latent dimensions with :func:`latent_activity` above ``threshold`` (Burda et al. 2016)."""
    return int((latent_activity(guide, *args, site=site, **kwargs) > threshold).sum())


@torch.no_grad()
def importance_resampled_latents(
    model, guide, *args, site=None, num_draws=100, num_samples=1000, data_plate="data", **kwargs
):
    """Approximate posterior draws of one latent site per data point by sampling-importance-resampling.

    ``num_samples`` guide particles are weighted by ``p(x_n, z) / q(z | x_n)`` and ``num_draws`` are resampled
    with replacement per data point. The site's value must be laid out ``(particles, batch_size, ...)``, as in a
    model whose only plate is the data plate. Returns shape ``(num_draws, batch_size, latent_dim)``.
    """
    traces = vectorized_traces(model, guide, *args, num_particles=num_samples, **kwargs)
    site = _single_latent_site(traces.guide_trace, site)
    log_p = per_example_log_prob(traces.model_trace, traces.particle_dim, num_samples, data_plate)
    log_w = log_p - per_example_log_prob(traces.guide_trace, traces.particle_dim, num_samples, data_plate)
    batch_size = log_w.shape[1]
    value = traces.guide_trace.nodes[site]["value"].reshape(num_samples, batch_size, -1)
    index = pyro.distributions.Categorical(logits=log_w.T).sample((num_draws,))
    return value[index, torch.arange(batch_size, device=value.device)]


def to_inference_data(result, latent_draws: Optional[Dict[int, torch.Tensor]] = None, attrs: Optional[dict] = None):
    """Per-example results as an :class:`arviz.InferenceData`.

    :param result: a :class:`~inference.evaluation.log_marginal_likelihood.LogMarginalLikelihood`.
    :param dict latent_draws: optional ``{example index: draws}`` with draws of shape ``(num_draws, latent_dim)``
        (e.g. from :func:`importance_resampled_latents`), stored as the ``posterior`` group with one chain and
        dims ``(chain, draw, example, latent_dim)``.
    :param dict attrs: extra attributes (e.g. the summary) stored on every group.
    :returns: ``InferenceData`` with a ``log_marginal_likelihood`` group holding per-example ``log_px``,
        ``log_px_mc_stderr``, ``elbo``, ``ess`` and ``khat`` over the dim ``example``.
    """
    import arviz
    import xarray

    # netCDF attributes hold numbers and strings (not booleans, lists or tables)
    attrs = {
        key: value
        for key, value in (attrs or {}).items()
        if isinstance(value, (int, float, str)) and not isinstance(value, bool)
    }
    attrs.setdefault("method", result.method)
    attrs.setdefault("num_samples", result.num_samples)
    example = np.arange(result.num_examples)
    per_example = {
        "log_px": result.log_px,
        "log_px_mc_stderr": result.mc_stderr,
        "elbo": result.elbo,
        "ess": result.ess,
    }
    if getattr(result, "khat", None) is not None:
        per_example["khat"] = result.khat
    dataset = xarray.Dataset(
        {name: ("example", value.detach().double().cpu().numpy()) for name, value in per_example.items()},
        coords={"example": example},
        attrs=attrs,
    )
    groups = {"log_marginal_likelihood": dataset}
    if latent_draws:
        chosen = sorted(latent_draws)
        draws = torch.stack([latent_draws[i].reshape(latent_draws[i].shape[0], -1) for i in chosen], 1)
        groups["posterior"] = xarray.Dataset(
            {"z": (("chain", "draw", "example", "latent_dim"), draws.unsqueeze(0).double().cpu().numpy())},
            coords={
                "chain": [0],
                "draw": np.arange(draws.shape[0]),
                "example": np.asarray(chosen),
                "latent_dim": np.arange(draws.shape[-1]),
            },
            attrs=attrs,
        )
    if not hasattr(arviz, "InferenceData"):
        # arviz >= 1 stores results as an xarray DataTree with the groups as children
        return xarray.DataTree.from_dict(groups)
    with warnings.catch_warnings():
        # "log_marginal_likelihood" is not one of arviz's standard group names; arviz keeps it all the same
        warnings.simplefilter("ignore", UserWarning)
        return arviz.InferenceData(**groups)


def save_inference_data(result, path, latent_draws=None, attrs=None) -> str:
    """Write :func:`to_inference_data` to ``path`` as netCDF (open it with ``arviz.from_netcdf(path)``)."""
    data = to_inference_data(result, latent_draws=latent_draws, attrs=attrs)
    atomic_write(path, lambda tmp: data.to_netcdf(tmp, engine="h5netcdf"), by_path=True)  # never half-written
    return os.fspath(path)
