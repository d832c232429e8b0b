"""Per-data-point importance weights for any Pyro model/guide pair.

For a model ``p(x, z) = prod_n p(x_n, z_n)`` whose local latents ``z_n`` live in a data plate, and a guide
``q(z | x) = prod_n q(z_n | x_n)`` with the same plate, one vectorized pass draws ``K`` particles
``z_n^(k) ~ q(. | x_n)`` for every data point at once and returns the ``K x N`` matrix of log weights::

    log w_nk = log p(x_n, z_n^(k)) - log q(z_n^(k) | x_n).

Unlike :func:`pyro.infer.importance.vectorized_importance_weights`, which sums every site into one weight per
particle (the joint weight of the whole batch), the data plate's dimension is kept, so a log-sum-exp over ``k``
gives one estimate per data point.

**Which sites count, and with which scale.** ``log q`` sums every guide sample site, auxiliary ones included (an
autoguide draws at an auxiliary site and hands the value on through ``Delta`` sites that carry the transform's
log-Jacobian), exactly the sites Pyro's ``Trace_ELBO`` counts. Each site's log density is multiplied by its scale
(``poutine.scale``, a plate's subsample factor) *divided by the data plate's subsample factor* ``N / B``, with masks
applied. So for a site ``s`` with scale ``c_s`` (1 unless the program says otherwise)::

    log w_nk = sum_{s in model} c_s log p_s(x_n, z_nk) - sum_{s in guide} c_s log q_s(z_nk | x_n),

which is the true log weight when every ``c_s = 1``, and at ``K = 1`` sums to ``Trace_ELBO``'s estimate once the
data plate's factor is applied *outside* (as every objective here does: inside a log-sum-exp, as in Pyro's
``RenyiELBO``, it would distort the weights). A program that scales a latent site (KL annealing with
``poutine.scale``) thus gets the annealed weights it asked for; its log p(x) is that of the scaled joint.

**Enumerated guide sites.** A discrete guide site marked for parallel enumeration
(``infer={"enumerate": "parallel"}``, :func:`pyro.infer.config_enumerate`) can be summed exactly instead of drawn
(``enumerate_guide=True``): every value ``y`` of it gets its own ``K`` draws of the later sites, and the weights of
the strata are added::

    log w_nk = log sum_y p(x_n, y, z_nyk) / q(z_nyk | x_n, y)

(``q(y | x)`` cancels: ``sum_y q(y | x) [p / (q(y | x) q(z | x, y))]``), an unbiased estimate of ``p(x_n)`` whose
variance has no part from ``y``. A model site marked for enumeration that the guide does not draw is summed the
same way. The enumerated values sit at batch dimensions left of the particle plate.

Gradient estimators need those log weights split into their parts (likelihood, prior, guide) and, depending on
the estimator, with some gradient paths stopped: :func:`per_example_log_weight_parts` gives them all from one pass.
"""

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import NamedTuple, Optional

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from inference.stop_gradient import (
    DetachSamples,
    PathwiseValues,
    detached_values,
    pathwise_scaled_values,
    stopped_guide_trace,
)

PARTICLE_PLATE = "particles"


class ImportanceTraces(NamedTuple):
    """Model and guide traces of one pass, with the particle plate at ``particle_dim`` (where the one particle of
    a pass without a particle plate would be)."""

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
    vectorize=True,
    enumerate_guide=False,
    **kwargs,
):
    """Draw ``num_particles`` guide samples in one batched pass and replay the model on them.

    The particle plate sits just left of the model's own plates, at ``dim = -(max_plate_nesting + 1)``. With
    ``vectorize=False`` there is no particle plate and ``num_particles`` must be 1: the programs run as written,
    for guides that index their batch positionally (``states[:, t]``). With ``enumerate_guide`` the guide's sites
    marked for parallel enumeration, and the model's that the guide does not draw, take all their values at the
    dimensions left of the particle plate (:class:`pyro.poutine.enum_messenger.EnumMessenger`). With
    ``model_at_detached_z`` the model is replayed a second time on the guide's values detached (and the same
    subsample), so its log density there has a gradient to the model's parameters only. ``replayed_values``, a
    function of the guide's trace, gives the trace the model is replayed on (default: the guide's own).

    :returns: :class:`ImportanceTraces`
    """
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, guide, *args, **kwargs)
    if not vectorize and num_particles != 1:
        raise ValueError(f"unvectorized passes draw one particle each, not {num_particles}")
    particle_dim = -(max_plate_nesting + 1)  # without a plate, the dimension where one particle would be
    enum_dim = particle_dim - 1

    def vectorize_fn(fn):
        fn = in_particle_plate(fn, num_particles, particle_dim) if vectorize else fn
        return poutine.enum(fn, first_available_dim=enum_dim) if enumerate_guide else fn

    def replayed_model(guide_trace):
        trace = poutine.trace(poutine.replay(vectorize_fn(model), trace=guide_trace)).get_trace(*args, **kwargs)
        return prune_subsample_sites(trace)

    with noted_on_failure(PARTICLE_DIMENSION_NOTE if vectorize else None):
        guide_trace = poutine.trace(vectorize_fn(guide)).get_trace(*args, **kwargs)
        model_trace_at_detached_z = replayed_model(detached_values(guide_trace)) if model_at_detached_z else None
        model_trace = replayed_model(replayed_values(guide_trace) if replayed_values is not None else guide_trace)
    return ImportanceTraces(
        model_trace, prune_subsample_sites(guide_trace), particle_dim, num_particles, model_trace_at_detached_z
    )


PARTICLE_DIMENSION_NOTE = (
    "The particles were drawn in one vectorized pass, which gives every latent value a leading particle dimension. "
    "If the model or guide cannot take one (it indexes or stacks its batch positionally, e.g. states[:, t]), pass "
    "vectorize_particles=False: each particle is then drawn in a pass of its own, without that dimension."
)


def auxiliary_sites(guide_trace) -> list:
    """The names of a guide trace's auxiliary sample sites (where an autoguide draws; its model sites are ``Delta``s
    of those draws, so its density at given latents is not what running it conditioned on them gives)."""
    return [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and site["infer"].get("is_auxiliary")
    ]


@contextmanager
def noted_on_failure(note):
    """Add ``note`` to a shape error raised inside (what the user can change to avoid it)."""
    try:
        yield
    except (RuntimeError, ValueError, IndexError) as error:
        if note is not None:
            error.add_note(note)
        raise


def is_enumerated(site) -> bool:
    """Whether a sample site took all its values at an enumeration dimension."""
    return site["infer"].get("_enumerate_dim") is not None


def site_log_prob(site, data_scale=1.0, scaled=True) -> torch.Tensor:
    """``log_prob`` of one sample site, masked, times its scale over the data plate's subsample factor (unless
    not ``scaled``: the density the value was drawn from, whose gradient is a score function)."""
    log_p = site["fn"].log_prob(site["value"])
    return scale_and_mask(log_p, site["scale"] / data_scale if scaled else 1.0, site["mask"])


def data_plate_frame(site, data_plate):
    """The frame of the plate named ``data_plate`` among a site's plates, or ``None``."""
    for frame in site["cond_indep_stack"]:
        if frame.name == data_plate:
            return frame
    return None


def subsample_factor(frame) -> float:
    """A plate's subsample scale ``full_size / size`` (1 without subsampling)."""
    return 1.0 if frame is None or frame.full_size is None else frame.full_size / frame.size


def outside_data_plate_error(name, site, data_plate) -> ValueError:
    role = "observed" if site["is_observed"] else "latent"
    if site["infer"].get("is_auxiliary"):
        role = "auxiliary guide site, where an autoguide such as AutoDiagonalNormal draws all latents jointly"
    return ValueError(
        f"sample site '{name}' ({role}) is outside the data plate '{data_plate}', so log p(x) does not factor over "
        "data points. Put every local site inside the data plate (AutoNormal does, per site), pass "
        "data_plate=<your plate's name>, or pass data_plate=None for one joint estimate of the batch."
    )


def counted_in_log_q(site) -> bool:
    """Whether a guide site's density is part of ``log q``: all but the enumerated ones (their ``q(y | x)`` cancels
    from the sum over ``y``)."""
    return not is_enumerated(site)


def per_example_log_prob(trace, particle_dim, num_particles, data_plate="data", sites=None, scaled=True):
    """Sum the log densities of a trace's sample sites (scaled as the module docstring says), keeping particles,
    data points and enumerated values apart.

    :param trace: a trace from :func:`vectorized_traces`.
    :param int particle_dim: the particle plate's dimension; a trace run without one (a single particle) has size 1
        or nothing there.
    :param str data_plate: name of the plate over independent data points, or ``None`` to sum over it too.
    :param sites: optional predicate ``site -> bool`` choosing which sites to sum (default: all sample sites).
    :param bool scaled: apply the sites' scales (see :func:`site_log_prob`).
    :returns: a tensor of shape ``(num_particles, batch_size)`` (``(num_particles, 1)`` when ``data_plate`` is None
        or no site is selected), with the enumerated values' dimensions left of it where a site has them.
    """
    total = 0.0
    batch_size = 1
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or (sites is not None and not sites(site)):
            continue
        frame = None
        if data_plate is not None:
            frame = data_plate_frame(site, data_plate)
            if frame is None:
                raise outside_data_plate_error(name, site, data_plate)
            batch_size = frame.size
        log_p = torch.as_tensor(site_log_prob(site, subsample_factor(frame), scaled))
        total = total + particles_and_data_of(log_p, particle_dim, frame)
    if isinstance(total, float):  # no site matched: zero, broadcastable against any (K, B)
        return torch.zeros(num_particles, 1)
    return total.expand(total.shape[:-2] + (num_particles, batch_size))


def particles_and_data_of(log_p: torch.Tensor, particle_dim: int, frame) -> torch.Tensor:
    """Sum a site's log densities over its plates other than the data plate's ``frame``: shape ``(..., K, B)``
    (``(..., K, 1)`` without ``frame``), the dimensions left of the particle plate (enumerated values) kept."""
    log_p = log_p.reshape((1,) * max(0, -particle_dim - log_p.dim()) + log_p.shape)
    other = [d for d in range(particle_dim + 1, 0) if frame is None or d != frame.dim]
    log_p = log_p.sum(other) if other else log_p
    return log_p if frame is not None else log_p.unsqueeze(-1)


def sum_over_enumerated(log_w: torch.Tensor) -> torch.Tensor:
    """``log sum_y w_y`` over the enumerated values' dimensions left of ``(K, B)``: the stratified weight."""
    return log_w.logsumexp(tuple(range(log_w.dim() - 2))) if log_w.dim() > 2 else log_w


def per_example_log_weights(
    model,
    guide,
    *args,
    num_particles=1,
    data_plate="data",
    max_plate_nesting=None,
    vectorize_particles=True,
    enumerate_guide=True,
    **kwargs,
) -> torch.Tensor:
    """Log importance weights ``log p(x_n, z_nk) - log q(z_nk | x_n)`` of shape ``(num_particles, batch_size)``
    (``(num_particles, 1)`` with ``data_plate=None``), enumerated sites summed (see the module docstring).

    Gradients flow through the weights (reparameterized sites); wrap in ``torch.no_grad()`` for evaluation.
    ``vectorize_particles=False`` draws the particles one pass each, without a particle plate.
    """
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, guide, *args, **kwargs)
    passes = [num_particles] if vectorize_particles else [1] * num_particles
    log_w = []
    for size in passes:
        traces = vectorized_traces(
            model,
            guide,
            *args,
            num_particles=size,
            max_plate_nesting=max_plate_nesting,
            vectorize=vectorize_particles,
            enumerate_guide=enumerate_guide,
            **kwargs,
        )
        check_importance_traces(traces, data_plate, enumerate_guide)
        log_p = per_example_log_prob(traces.model_trace, traces.particle_dim, size, data_plate)
        log_q = per_example_log_prob(traces.guide_trace, traces.particle_dim, size, data_plate, counted_in_log_q)
        log_w.append(sum_over_enumerated(log_p - log_q))
    return torch.cat(log_w) if len(log_w) > 1 else log_w[0]


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
            return subsample_factor(frame)
    return 1.0


def check_importance_traces(traces: ImportanceTraces, data_plate: Optional[str], enumerate_guide: bool = False):
    """Raise a clear error when ``data_plate`` names no plate of the model, or when a latent site of the model has
    no guide site (drawn from the prior while the weight counts its density, the weight would be wrong)."""
    if data_plate is not None:
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
    for name, site in traces.model_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name in traces.guide_trace.nodes:
            continue
        if enumerate_guide and is_enumerated(site):
            continue  # summed exactly in the model
        marked = site["infer"].get("enumerate") == "parallel"
        raise ValueError(
            f"latent site '{name}' of the model has no site in the guide, so it would be drawn from the prior while "
            "its density counts in the weight. Draw it in the guide"
            + (
                ", or use an estimator that enumerates it ('iwae', or log p(x) method 'is')"
                if marked
                else ", or mark it for enumeration (pyro.infer.config_enumerate) if it is discrete"
            )
            + "."
        )


class LogWeightParts(NamedTuple):
    r"""The parts of the log weights of ``K`` particles for ``B`` data points, each of shape ``(K, B)``, unscaled.

    With KL weight ``beta`` (1 gives the true importance weight)::

        log w_nk = log p(x_n | z_nk) + beta (log p(z_nk) - log q(z_nk | x_n))

    ``log_guide_stopped``, ``log_joint_at_detached_z``, ``log_guide_score`` and ``model_pathwise_values`` are
    ``None`` unless the estimator's :class:`GradientNeeds` ask for them.
    """

    log_likelihood: torch.Tensor  # observed model sites: log p(x_n | z_nk)
    log_prior: torch.Tensor  # latent model sites: log p(z_nk)
    log_guide: torch.Tensor  # every guide site: log q(z_nk | x_n)
    #: Guide sites without rsample, **unscaled**: the density their draws came from, whose gradient is the score
    #: function. (A site scaled by ``c``, as in KL annealing, enters the weights as ``c log q``, but the gradient of
    #: ``E_q[f]`` is ``E_q[f grad log q]`` whatever ``f``.)
    log_guide_nonreparam: torch.Tensor
    log_guide_stopped: Optional[torch.Tensor]  # log q_sg(phi)(z_nk): guide parameters detached, gradient through z
    log_joint_at_detached_z: Optional[torch.Tensor]  # log p(x_n | z) + beta log p(z) at z detached: model gradient
    scale: float  # the data plate's subsample scale N / B
    kl_weight: float  # beta
    #: Per latent site ``{"value": z (K, B, ...), "guide": q's distribution, "prior": p's distribution}`` (from one
    #: vectorized pass; objectives on the aggregate posterior read them).
    sites: Optional[dict] = None
    #: With ``needs.detach_samples``: every guide site's ``log q``, unscaled, for estimators whose guide gradient is all
    #: score function (as ``log_guide_nonreparam``).
    log_guide_score: Optional[torch.Tensor] = None
    #: With ``needs.scale_model_pathwise``: the latent values the model parts (``log_likelihood``, ``log_prior``) were
    #: computed at, whose gradient the factor an estimator's surrogate returns with it rescales.
    model_pathwise_values: Optional[PathwiseValues] = None

    @property
    def log_weights(self) -> torch.Tensor:
        """``log p(x | z) + beta (log p(z) - log q(z | x))``, of shape ``(K, B)``: enumerated values summed."""
        return sum_over_enumerated(self.log_likelihood + self.kl_weight * (self.log_prior - self.log_guide))

    @property
    def log_weights_stopped(self) -> torch.Tensor:
        """The log weights with the guide's parameters stopped in ``log q`` (the STL/DReG path derivative)."""
        return sum_over_enumerated(self.log_likelihood + self.kl_weight * (self.log_prior - self.log_guide_stopped))


def check_reparameterized(guide_trace, estimator_name, enumerates=False):
    """Raise a clear error when a guide site cannot be reparameterized (no ``rsample``), unless it was enumerated
    (``enumerates``: the estimator sums such sites exactly); the message names the estimators that serve it."""
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or is_enumerated(site) or site["fn"].has_rsample:
            continue
        family = type(site["fn"]).__name__
        score = (
            "'vimco' (the importance-weighted bound with per-sample baselines), 'score' or 'rws', which give it "
            "score-function gradients, or 'elbo'"
        )
        if site["infer"].get("enumerate") == "parallel" and not enumerates:
            fix = (
                f"It is marked for enumeration, which 'iwae' sums exactly and '{estimator_name}' does not: use "
                f"'iwae', {score}."
            )
        elif site["fn"].has_enumerate_support and not site["infer"].get("enumerate"):
            fix = (
                f"Use {score}; or mark the site for parallel enumeration (infer={{'enumerate': 'parallel'}} or "
                "pyro.infer.config_enumerate) and use 'iwae', which sums it exactly."
            )
        else:
            fix = f"Use {score}; or give the guide a reparameterizable distribution."
        raise ValueError(
            f"'{estimator_name}' needs reparameterized guide samples, but guide site '{name}' ({family}) has no "
            f"rsample. {fix}"
        )


def check_has_density(guide_trace, estimator_name):
    """Raise a clear error when a latent guide site is a point mass (``Delta``) not drawn through an auxiliary site:
    a score-function gradient ``f(z) grad log q(z)`` needs a density, and a point mass gives its parameters no
    gradient that way. (An autoguide's ``Delta`` sites pass on a value drawn at an auxiliary site, whose density
    carries the score.)"""
    if auxiliary_sites(guide_trace):
        return
    for site in guide_trace.nodes.values():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if isinstance(site["fn"], dist.Delta):
            raise ValueError(
                f"'{estimator_name}' uses score-function gradients, which need a guide with a density, but guide "
                f"site '{site['name']}' is a point mass (Delta). Use a reparameterized estimator such as 'elbo' or "
                "'iwae'."
            )


@dataclass(frozen=True)
class GradientNeeds:
    """Which parts of the log weights an estimator's gradient needs, beyond ``log p(x | z)``, ``log p(z)`` and
    ``log q(z | x)``; every importance-weighted estimator declares its own (``needs = GradientNeeds(...)``), and
    :func:`per_example_log_weight_parts` computes just those.

    :param bool require_rsample: pathwise gradients: refuse guide sites without ``rsample`` (else a site needs a
        density, for its score-function term).
    :param bool detach_samples: detach every latent value (:class:`~inference.stop_gradient.DetachSamples`), so
        the parts carry gradients only through distribution parameters (``log p`` to the model, ``log q`` to the
        guide), and give ``log_guide_score``.
    :param bool stop_guide_parameters: also give ``log_guide_stopped``, ``log q`` with the guide's parameters
        detached (sticking-the-landing, DReG); the guide's distributions must allow it.
    :param bool model_at_detached_z: also give ``log_joint_at_detached_z`` (the model replayed a second time).
    :param bool scale_model_pathwise: replay the model on values whose gradient passes through a
        :class:`~inference.stop_gradient.PathwiseValues` (``model_pathwise_values``), so one model pass gives
        its parameters and the path through ``z`` different weights (the estimator's surrogate returns the factor,
        as a :class:`~inference.objectives.objective.PathwiseScaledSurrogate`).
    :param bool enumerate_guide: sum the sites marked for parallel enumeration exactly (module docstring); the
        parts then have the enumerated values' dimensions left of ``(K, B)``, which
        :attr:`LogWeightParts.log_weights` sums.
    """

    require_rsample: bool = True
    detach_samples: bool = False
    stop_guide_parameters: bool = False
    model_at_detached_z: bool = False
    scale_model_pathwise: bool = False
    enumerate_guide: bool = False


@dataclass(frozen=True)
class ParticleDraw:
    """One draw of ``num_particles`` guide samples per data point: where the data points are and how to draw.

    :param int max_plate_nesting: the programs' plate nesting (guessed by running them once if ``None``); the
        particle plate goes just outside it.
    :param str data_plate: the plate over independent data points; ``None`` treats the batch as one point.
    :param float kl_weight: ``beta`` on ``log p(z) - log q(z | x)`` in every log weight.
    :param bool vectorize_particles: ``False`` draws the particles one pass at a time, without a particle plate, so
        the programs see no extra batch dimension (less memory, same result).
    :param str estimator_name: named in refusals.
    """

    num_particles: int = 1
    max_plate_nesting: Optional[int] = None
    data_plate: Optional[str] = "data"
    kl_weight: float = 1.0
    vectorize_particles: bool = True
    estimator_name: str = "estimator"


def per_example_log_weight_parts(
    model, guide, args, kwargs, draw: ParticleDraw = ParticleDraw(), needs: GradientNeeds = GradientNeeds()
) -> LogWeightParts:
    """Draw ``draw.num_particles`` guide samples per data point in one batched pass and split the log weights into
    the parts of :class:`LogWeightParts` that ``needs`` asks for."""
    if draw.max_plate_nesting is None:
        draw = replace(draw, max_plate_nesting=guess_max_plate_nesting(model, guide, *args, **kwargs))
    if draw.vectorize_particles:
        return log_weight_parts_of_one_pass(model, guide, args, kwargs, draw, needs)
    one = replace(draw, num_particles=1)
    draws = [log_weight_parts_of_one_pass(model, guide, args, kwargs, one, needs) for _ in range(draw.num_particles)]
    if draw.num_particles == 1:
        return draws[0]
    concatenated = {
        name: torch.cat([getattr(part, name) for part in draws], -2)
        for name, value in draws[0]._asdict().items()
        if torch.is_tensor(value)
    }
    if needs.scale_model_pathwise:
        concatenated["model_pathwise_values"] = PathwiseValues([part.model_pathwise_values for part in draws])
    return draws[0]._replace(**concatenated)


def log_weight_parts_of_one_pass(model, guide, args, kwargs, draw: ParticleDraw, needs: GradientNeeds):
    """:func:`per_example_log_weight_parts` of one pass: ``draw.num_particles`` in a particle plate, or one
    particle without it (``draw.vectorize_particles`` false)."""
    num_particles, data_plate, kl_weight = draw.num_particles, draw.data_plate, draw.kl_weight
    particle_dim = -(draw.max_plate_nesting + 1)
    pathwise = PathwiseValues() if needs.scale_model_pathwise else None

    def factor_shape(name, site):
        return pathwise_factor_shape(name, site, particle_dim, num_particles, data_plate)

    with DetachSamples() if needs.detach_samples else nullcontext():
        traces = vectorized_traces(
            model,
            guide,
            *args,
            num_particles=num_particles,
            max_plate_nesting=draw.max_plate_nesting,
            model_at_detached_z=needs.model_at_detached_z,
            replayed_values=(lambda trace: pathwise_scaled_values(trace, pathwise, factor_shape)) if pathwise else None,
            vectorize=draw.vectorize_particles,
            enumerate_guide=needs.enumerate_guide,
            **kwargs,
        )
    check_importance_traces(traces, data_plate, needs.enumerate_guide)
    if needs.require_rsample:
        check_reparameterized(traces.guide_trace, draw.estimator_name, needs.enumerate_guide)
    else:
        check_has_density(traces.guide_trace, draw.estimator_name)
    log_guide = per_example_log_prob(traces.guide_trace, particle_dim, num_particles, data_plate, counted_in_log_q)

    def log_prob(trace, sites=None, scaled=True):
        if sites is not None and not any(site["type"] == "sample" and sites(site) for site in trace.nodes.values()):
            return torch.zeros_like(log_guide)  # per_example_log_prob cannot tell the batch size from no sites
        return per_example_log_prob(trace, particle_dim, num_particles, data_plate, sites, scaled)

    def observed(site):
        return site["is_observed"]

    def latent(site):
        return not site["is_observed"]

    def nonreparameterized(site):
        return counted_in_log_q(site) and not site["fn"].has_rsample

    log_guide_stopped = None
    if needs.stop_guide_parameters:
        log_guide_stopped = log_prob(stopped_guide_trace(traces.guide_trace), counted_in_log_q)
    log_joint_at_detached_z = None
    if needs.model_at_detached_z:
        at_detached_z = traces.model_trace_at_detached_z
        log_joint_at_detached_z = log_prob(at_detached_z, observed) + kl_weight * log_prob(at_detached_z, latent)
    return LogWeightParts(
        log_likelihood=log_prob(traces.model_trace, observed),
        log_prior=log_prob(traces.model_trace, latent),
        log_guide=log_guide,
        log_guide_nonreparam=log_prob(traces.guide_trace, nonreparameterized, scaled=False),
        log_guide_stopped=log_guide_stopped,
        log_joint_at_detached_z=log_joint_at_detached_z,
        scale=data_plate_scale(traces.model_trace, data_plate),
        kl_weight=kl_weight,
        sites=latent_sites(traces),
        log_guide_score=log_prob(traces.guide_trace, counted_in_log_q, scaled=False) if needs.detach_samples else None,
        model_pathwise_values=pathwise,
    )


def pathwise_factor_shape(name, site, particle_dim, num_particles, data_plate) -> list:
    """The shape that makes a ``(K, B)`` factor (``(K, 1)`` without data plate) broadcast against a site's value:
    ``K`` at the particle dimension, ``B`` at the data plate's, the enumerated values' sizes left of the particles,
    1 elsewhere (event dimensions included). A value drawn without a particle plate (one particle) may lack the
    particle dimension."""
    value = site["value"]
    batch_dims = value.dim() - site["fn"].event_dim
    shape = [1] * value.dim()
    dims = [(particle_dim, num_particles)]
    if data_plate is not None:
        frame = data_plate_frame(site, data_plate)
        if frame is None:
            raise outside_data_plate_error(name, site, data_plate)
        dims.append((frame.dim, frame.size))
    for dim in range(particle_dim - 1, -batch_dims - 1, -1):  # enumerated values, left of the particles
        shape[batch_dims + dim] = value.shape[batch_dims + dim]
    for dim, size in dims:
        if size == 1 and (batch_dims + dim < 0 or value.shape[batch_dims + dim] == 1):
            continue
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
