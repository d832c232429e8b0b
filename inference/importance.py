"""Per-data-point importance weights for any Pyro model/guide pair.

For a model ``p(x, z) = prod_n p(x_n, z_n)`` whose local latents ``z_n`` live in a data plate, and a guide
``q(z | x) = prod_n q(z_n | x_n)`` with the same plate, one vectorized pass draws ``K`` particles
``z_n^(k) ~ q(. | x_n)`` for every data point at once and returns the ``K x N`` matrix of log weights::

    log w_nk = log p(x_n, z_n^(k)) - log q(z_n^(k) | x_n).

Unlike :func:`pyro.infer.importance.vectorized_importance_weights`, which sums every site into one weight per
particle (the joint weight of the whole batch), the data plate's dimension is kept, so a log-sum-exp over ``k``
gives one estimate per data point. Log densities are the distributions' own ``log_prob`` with masks applied but
**without** the plate's subsample scale (``N / B``) or any ``poutine.scale``: the scale is a property of a
stochastic objective over minibatches, not of the density, and applying it inside a log-sum-exp (as Pyro's
``RenyiELBO`` does) distorts the weights.

Gradient estimators need those log weights split into their parts (likelihood, prior, guide) and, depending on
the estimator, with some gradient paths stopped: :func:`per_example_log_weight_parts` gives them all from one pass.
"""

from contextlib import nullcontext
from typing import NamedTuple, Optional

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from inference.stop_gradient import (
    DetachSamples,
    PathwiseGradientScale,
    detached_values,
    pathwise_scaled_values,
    stopped_guide_trace,
)

PARTICLE_PLATE = "particles"


class ImportanceTraces(NamedTuple):
    """Model and guide traces of one vectorized pass, with the particle plate at ``particle_dim``."""

    model_trace: poutine.Trace
    guide_trace: poutine.Trace
    particle_dim: int
    num_particles: int
    model_trace_at_detached_z: Optional[poutine.Trace] = None


def in_particle_plate(fn, num_particles: int, particle_dim: int):
    """``fn`` run inside a plate of ``num_particles`` independent particles at ``particle_dim``."""

    def vectorized(*args, **kwargs):
        with pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim):
            return fn(*args, **kwargs)

    return vectorized


def guide_and_model_traces(model, guide, *args, **kwargs):
    """Trace the guide, then the model replayed on the guide's draws: ``(guide_trace, model_trace)``."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return guide_trace, model_trace


def forked_rng():
    """A context in which random draws (on the CPU and every initialised GPU) leave the generators as they were."""
    initialised = torch.cuda.is_available() and torch.cuda.is_initialized()
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if initialised else [])


def guess_max_plate_nesting(model, guide, *args, **kwargs) -> int:
    """Run guide and model once, without recording anything globally, and return the deepest plate nesting.

    The random number generator's state is restored afterwards, so guessing does not change later draws.
    """
    with forked_rng(), poutine.block():
        guide_trace, model_trace = guide_and_model_traces(model, guide, *args, **kwargs)
    dims = [
        -frame.dim
        for trace in (model_trace, guide_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return max(dims, default=0)


def vectorized_traces(
    model,
    guide,
    *args,
    num_particles=1,
    max_plate_nesting=None,
    model_at_detached_z=False,
    replayed_values=None,
    **kwargs,
):
    """Draw ``num_particles`` guide samples in one batched pass and replay the model on them.

    The particle plate sits just left of the model's own plates, at ``dim = -(max_plate_nesting + 1)``. With
    ``model_at_detached_z`` the model is replayed a second time on the guide's values detached (and the same
    subsample), so its log density there has a gradient to the model's parameters only. ``replayed_values``, a
    function of the guide's trace, gives the trace the model is replayed on (default: the guide's own).

    :returns: :class:`ImportanceTraces`
    """
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, guide, *args, **kwargs)
    particle_dim = -(max_plate_nesting + 1)

    def vectorize(fn):
        return in_particle_plate(fn, num_particles, particle_dim)

    def replayed_model(guide_trace):
        trace = poutine.trace(poutine.replay(vectorize(model), trace=guide_trace)).get_trace(*args, **kwargs)
        return prune_subsample_sites(trace)

    guide_trace = poutine.trace(vectorize(guide)).get_trace(*args, **kwargs)
    model_trace_at_detached_z = replayed_model(detached_values(guide_trace)) if model_at_detached_z else None
    return ImportanceTraces(
        replayed_model(replayed_values(guide_trace) if replayed_values is not None else guide_trace),
        prune_subsample_sites(guide_trace),
        particle_dim,
        num_particles,
        model_trace_at_detached_z,
    )


def site_log_prob(site) -> torch.Tensor:
    """``log_prob`` of one sample site, masked, **unscaled** (no subsample or ``poutine.scale`` factor)."""
    log_p = site["fn"].log_prob(site["value"])
    return scale_and_mask(log_p, 1.0, site["mask"])


def data_plate_frame(site, data_plate):
    """The frame of the plate named ``data_plate`` among a site's plates, or ``None``."""
    for frame in site["cond_indep_stack"]:
        if frame.name == data_plate:
            return frame
    return None


def outside_data_plate_error(name, site, data_plate) -> ValueError:
    role = "observed" if site["is_observed"] else "latent"
    return ValueError(
        f"sample site '{name}' ({role}) is outside the data plate '{data_plate}', so log p(x) does not factor over "
        "data points. Put every local site inside the data plate, pass data_plate=<your plate's name>, or pass "
        "data_plate=None for one joint estimate of the batch."
    )


def per_example_log_prob(trace, particle_dim, num_particles, data_plate="data", sites=None):
    """Sum the unscaled log densities of a trace's sample sites, keeping particles and data points apart.

    :param trace: a trace from :func:`vectorized_traces`.
    :param str data_plate: name of the plate over independent data points, or ``None`` to sum over it too.
    :param sites: optional predicate ``site -> bool`` choosing which sites to sum (default: all sample sites).
    :returns: a tensor of shape ``(num_particles, batch_size)`` (``(num_particles,)`` when ``data_plate`` is None;
        ``(num_particles, 1)`` when no site is selected).
    """
    total = 0.0
    batch_size = None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["infer"].get("is_auxiliary"):
            continue
        if sites is not None and not sites(site):
            continue
        log_p = site_log_prob(site)
        log_p = log_p.reshape((1,) * max(0, -particle_dim - log_p.dim()) + log_p.shape)
        keep = [particle_dim]
        if data_plate is not None:
            frame = data_plate_frame(site, data_plate)
            if frame is None:
                raise outside_data_plate_error(name, site, data_plate)
            keep.append(frame.dim)
            batch_size = frame.size
        other = [d for d in range(-log_p.dim(), 0) if d not in keep]
        log_p = log_p.sum(other) if other else log_p
        total = total + log_p
    if isinstance(total, float):  # no site matched: zero, broadcastable against any (K, B)
        return torch.zeros((num_particles,) if data_plate is None else (num_particles, 1))
    return total.expand((num_particles,) if data_plate is None else (num_particles, batch_size))


def per_example_log_weights(
    model, guide, *args, num_particles=1, data_plate="data", max_plate_nesting=None, **kwargs
) -> torch.Tensor:
    """Log importance weights ``log p(x_n, z_nk) - log q(z_nk | x_n)`` of shape ``(num_particles, batch_size)``.

    Gradients flow through the weights (reparameterized sites); wrap in ``torch.no_grad()`` for evaluation.
    """
    traces = vectorized_traces(
        model, guide, *args, num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs
    )
    check_data_plate(traces, data_plate)
    log_p = per_example_log_prob(traces.model_trace, traces.particle_dim, num_particles, data_plate)
    log_q = per_example_log_prob(traces.guide_trace, traces.particle_dim, num_particles, data_plate)
    return log_p - log_q


def data_plate_scale(trace, data_plate="data") -> float:
    """The subsample scale ``full_size / size`` of the data plate (1 without subsampling or data plate).

    Objectives that take a log-sum-exp over particles per data point apply this factor *outside* it.
    """
    if data_plate is None:
        return 1.0
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        frame = data_plate_frame(site, data_plate)
        if frame is not None:
            return 1.0 if frame.full_size is None else frame.full_size / frame.size
    return 1.0


def check_data_plate(traces: ImportanceTraces, data_plate: Optional[str]):
    """Raise a clear error when ``data_plate`` names no plate of the model."""
    if data_plate is None:
        return
    seen = {
        frame.name
        for site in traces.model_trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.name != PARTICLE_PLATE
    }
    if data_plate not in seen:
        raise ValueError(
            f"no sample site of the model lies in a plate named '{data_plate}' (plates seen: {sorted(seen)}). "
            "Pass data_plate=<the name of your plate over data points>, or data_plate=None for one joint "
            "estimate of the whole batch."
        )


class LogWeightParts(NamedTuple):
    r"""The parts of the log weights of ``K`` particles for ``B`` data points, each of shape ``(K, B)``, unscaled.

    With KL weight ``beta`` (1 gives the true importance weight)::

        log w_nk = log p(x_n | z_nk) + beta (log p(z_nk) - log q(z_nk | x_n))

    ``log_guide_stopped``, ``log_joint_at_detached_z`` and ``model_pathwise_scale`` are ``None`` unless requested
    from :func:`per_example_log_weight_parts`.
    """

    log_likelihood: torch.Tensor  # observed model sites: log p(x_n | z_nk)
    log_prior: torch.Tensor  # latent model sites: log p(z_nk)
    log_guide: torch.Tensor  # every guide site: log q(z_nk | x_n)
    log_guide_nonreparam: torch.Tensor  # guide sites without rsample (their only gradient is a score function)
    log_guide_stopped: Optional[torch.Tensor]  # log q_sg(phi)(z_nk): guide parameters detached, gradient through z
    log_joint_at_detached_z: Optional[torch.Tensor]  # log p(x_n | z) + beta log p(z) at z detached: model gradient
    scale: float  # the data plate's subsample scale N / B
    kl_weight: float  # beta
    #: Per latent site ``{"value": z (K, B, ...), "guide": q's distribution, "prior": p's distribution}`` (from one
    #: vectorized pass; objectives on the aggregate posterior read them).
    sites: Optional[dict] = None
    #: With ``scale_model_pathwise``: the factor on the gradient through ``z`` into the model parts
    #: (``log_likelihood``, ``log_prior``), which the estimator sets before its surrogate is differentiated.
    model_pathwise_scale: Optional[PathwiseGradientScale] = None

    @property
    def log_weights(self) -> torch.Tensor:
        """``log p(x | z) + beta (log p(z) - log q(z | x))``."""
        return self.log_likelihood + self.kl_weight * (self.log_prior - self.log_guide)

    @property
    def log_weights_stopped(self) -> torch.Tensor:
        """The log weights with the guide's parameters stopped in ``log q`` (the STL/DReG path derivative)."""
        return self.log_likelihood + self.kl_weight * (self.log_prior - self.log_guide_stopped)


def check_reparameterized(guide_trace, estimator_name):
    """Raise a clear error when a latent guide site cannot be reparameterized (no ``rsample``, or enumerated)."""
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        if not site["fn"].has_rsample or site["infer"].get("enumerate"):
            raise ValueError(
                f"'{estimator_name}' needs reparameterized guide samples, but guide site '{name}' "
                f"({type(site['fn']).__name__}) has no rsample. Use 'elbo' (which adds a score-function term for "
                "non-reparameterizable sites), or give the guide a reparameterizable distribution."
            )


def check_has_density(guide_trace, estimator_name):
    """Raise a clear error when a latent guide site is a point mass (``Delta``): a score-function gradient
    ``f(z) grad log q(z)`` needs a density, and a point mass gives its parameters no gradient that way."""
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        if isinstance(site["fn"], dist.Delta):
            raise ValueError(
                f"'{estimator_name}' uses score-function gradients, which need a guide with a density, but guide "
                f"site '{name}' is a point mass (Delta). Use a reparameterized estimator such as 'elbo' or 'iwae'."
            )


def per_example_log_weight_parts(
    model,
    guide,
    args,
    kwargs,
    *,
    num_particles=1,
    max_plate_nesting=None,
    data_plate="data",
    kl_weight=1.0,
    vectorize_particles=True,
    detach_samples=False,
    require_rsample=False,
    stop_guide_parameters=False,
    model_at_detached_z=False,
    scale_model_pathwise=False,
    estimator_name="estimator",
) -> LogWeightParts:
    """Draw ``num_particles`` guide samples per data point in one batched pass and split the log weights into the
    parts of :class:`LogWeightParts`.

    :param bool vectorize_particles: ``False`` draws the particles one pass at a time (less memory, same result).
    :param bool detach_samples: detach every latent value (see :class:`~inference.stop_gradient.DetachSamples`), so
        the parts carry gradients only through distribution parameters: ``log p`` to the model, ``log q`` to the
        guide.
    :param bool require_rsample: refuse guide sites without ``rsample`` (naming ``estimator_name``).
    :param bool stop_guide_parameters: also compute ``log_guide_stopped``.
    :param bool model_at_detached_z: also compute ``log_joint_at_detached_z`` (the model replayed a second time).
    :param bool scale_model_pathwise: replay the model on values whose gradient passes through a
        :class:`~inference.stop_gradient.PathwiseGradientScale` (``model_pathwise_scale``), so one model pass gives
        its parameters and the path through ``z`` different weights.
    """
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, guide, *args, **kwargs)
    if not vectorize_particles and num_particles > 1:
        options = dict(
            max_plate_nesting=max_plate_nesting,
            data_plate=data_plate,
            kl_weight=kl_weight,
            detach_samples=detach_samples,
            require_rsample=require_rsample,
            stop_guide_parameters=stop_guide_parameters,
            model_at_detached_z=model_at_detached_z,
            scale_model_pathwise=scale_model_pathwise,
            estimator_name=estimator_name,
        )
        draws = [per_example_log_weight_parts(model, guide, args, kwargs, **options) for _ in range(num_particles)]
        concatenated = {
            name: torch.cat([getattr(draw, name) for draw in draws])
            for name, value in draws[0]._asdict().items()
            if torch.is_tensor(value)
        }
        if scale_model_pathwise:
            concatenated["model_pathwise_scale"] = PathwiseGradientScale([draw.model_pathwise_scale for draw in draws])
        return draws[0]._replace(**concatenated)

    particle_dim = -(max_plate_nesting + 1)
    scale = PathwiseGradientScale() if scale_model_pathwise else None

    def factor_shape(name, site):
        return pathwise_factor_shape(name, site, particle_dim, num_particles, data_plate)

    with DetachSamples() if detach_samples else nullcontext():
        traces = vectorized_traces(
            model,
            guide,
            *args,
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            model_at_detached_z=model_at_detached_z,
            replayed_values=(lambda trace: pathwise_scaled_values(trace, scale, factor_shape)) if scale else None,
            **kwargs,
        )
    check_data_plate(traces, data_plate)
    if require_rsample:
        check_reparameterized(traces.guide_trace, estimator_name)
    else:
        check_has_density(traces.guide_trace, estimator_name)
    log_guide = per_example_log_prob(traces.guide_trace, traces.particle_dim, num_particles, data_plate)

    def log_prob(trace, sites=None):
        if sites is not None and not any(site["type"] == "sample" and sites(site) for site in trace.nodes.values()):
            return torch.zeros_like(log_guide)  # per_example_log_prob cannot tell the batch size from no sites
        return per_example_log_prob(trace, traces.particle_dim, num_particles, data_plate, sites=sites)

    def observed(site):
        return site["is_observed"]

    def latent(site):
        return not site["is_observed"]

    log_guide_stopped = log_prob(stopped_guide_trace(traces.guide_trace)) if stop_guide_parameters else None
    log_joint_at_detached_z = None
    if model_at_detached_z:
        at_detached_z = traces.model_trace_at_detached_z
        log_joint_at_detached_z = log_prob(at_detached_z, observed) + kl_weight * log_prob(at_detached_z, latent)
    return LogWeightParts(
        log_likelihood=log_prob(traces.model_trace, observed),
        log_prior=log_prob(traces.model_trace, latent),
        log_guide=log_guide,
        log_guide_nonreparam=log_prob(traces.guide_trace, lambda site: not site["fn"].has_rsample),
        log_guide_stopped=log_guide_stopped,
        log_joint_at_detached_z=log_joint_at_detached_z,
        scale=data_plate_scale(traces.model_trace, data_plate),
        kl_weight=kl_weight,
        sites=latent_sites(traces),
        model_pathwise_scale=scale,
    )


def pathwise_factor_shape(name, site, particle_dim, num_particles, data_plate) -> list:
    """The shape that makes a ``(K, B)`` factor (``(K,)`` without data plate) broadcast against a site's value:
    ``K`` at the particle dimension, ``B`` at the data plate's, 1 elsewhere (event dimensions included)."""
    value = site["value"]
    batch_dims = value.dim() - site["fn"].event_dim
    shape = [1] * value.dim()
    dims = [(particle_dim, num_particles)]
    if data_plate is not None:
        frame = data_plate_frame(site, data_plate)
        if frame is None:
            raise outside_data_plate_error(name, site, data_plate)
        dims.append((frame.dim, frame.size))
    for dim, size in dims:
        if batch_dims + dim < 0 or value.shape[batch_dims + dim] != size:
            raise ValueError(
                f"guide site '{name}': its value of shape {tuple(value.shape)} does not hold {size} entries at "
                f"batch dimension {dim}, so its gradient cannot be weighted per particle and data point"
            )
        shape[batch_dims + dim] = size
    return shape


def latent_sites(traces) -> dict:
    """``{name: {"value", "guide", "prior"}}`` of every latent sample site the guide draws."""
    sites = {}
    for name, site in traces.guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        model_site = traces.model_trace.nodes.get(name)
        if model_site is not None:
            sites[name] = {"value": site["value"], "guide": site["fn"], "prior": model_site["fn"]}
    return sites
