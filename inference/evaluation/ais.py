"""Annealed importance sampling (AIS) of log p(x), one estimate per data point, with HMC transitions.

For every data point ``x_n`` AIS moves ``C`` chains through the geometric path between a normalized proposal
``q_0`` (the guide ``q(z | x_n)``, or the prior ``p(z)``) and the unnormalized posterior ``p(x_n, z)``::

    f_t(z) = q_0(z)^(1 - beta_t) p(x_n, z)^beta_t,        0 = beta_0 < beta_1 < ... < beta_T = 1.

A chain starts at ``z_0 ~ q_0``, and for ``t = 1 .. T`` accumulates the log weight
``log w += (beta_t - beta_{t-1}) (log p(x_n, z_{t-1}) - log q_0(z_{t-1}))`` before moving ``z_t ~ K_t(z_{t-1},
.)`` with a Markov kernel that leaves ``f_t`` invariant. Then ``E[w] = p(x_n)`` (Neal 2001), so the per-data-point
estimate ``log (1/C) sum_c w_c`` is a stochastic lower bound on ``log p(x_n)`` that becomes exact as ``T`` grows.

Run in reverse (``beta`` from 1 to 0, starting from an exact posterior sample), the same recursion gives
``E[w] = 1 / p(x_n)`` and hence a stochastic *upper* bound ``-log (1/C) sum_c w_c`` (Grosse et al. 2015); see
:mod:`inference.bdmc`.

The kernels are Hamiltonian Monte Carlo (Neal 2011) with an identity mass matrix in the unconstrained space
(``biject_to(site.support)``, with its log-Jacobian added to every ``f_t``), run by Pyro's
:func:`~pyro.ops.integrator.velocity_verlet` on all chains and data points at once. Each data point has its own
step size, moved after every transition towards a target acceptance probability (averaged over its chains), as in
the AIS evaluations of Wu et al. (2017). The step size at step ``t`` depends only on the past, so each kernel
still leaves ``f_t`` invariant.

References:
    R. M. Neal. Annealed importance sampling. Statistics and Computing 11, 2001.
    R. M. Neal. MCMC using Hamiltonian dynamics. Handbook of Markov Chain Monte Carlo, 2011.
    R. B. Grosse, Z. Ghahramani, R. P. Adams. Sandwiching the marginal likelihood using bidirectional Monte Carlo.
    arXiv:1511.02543, 2015.
    Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse. On the quantitative analysis of decoder-based generative
    models. ICLR 2017.
"""

import math
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional

import pyro
import pyro.poutine as poutine
import torch
from pyro.ops.integrator import potential_grad, velocity_verlet
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import biject_to
from tqdm.auto import tqdm

from inference.importance import (
    auxiliary_sites,
    data_plate_frame,
    guess_max_plate_nesting,
    guide_and_model_traces,
    in_particle_plate,
    outside_data_plate_error,
    per_example_log_prob,
)

PROPOSALS = ("guide", "prior")


def sigmoid_schedule(num_steps: int, radius: float = 4.0) -> torch.Tensor:
    """``num_steps + 1`` inverse temperatures from 0 to 1, dense near both ends (Grosse et al. 2015, sec. 6)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    s = torch.sigmoid(torch.linspace(-radius, radius, num_steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def linear_schedule(num_steps: int) -> torch.Tensor:
    """``num_steps + 1`` equally spaced inverse temperatures from 0 to 1."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    return torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)


SCHEDULES = {"sigmoid": sigmoid_schedule, "linear": linear_schedule}


@dataclass
class AISResult:
    """Per-chain AIS log weights of shape ``(num_chains, batch_size)`` and the chains' final states.

    Forward runs estimate ``log p(x_n)`` by :attr:`log_px`; reverse runs estimate ``-log p(x_n)`` (see
    :attr:`log_px_upper`).
    """

    log_weights: torch.Tensor
    proposal_log_weights: torch.Tensor
    final_latents: Dict[str, torch.Tensor]
    step_size: torch.Tensor
    acceptance_rate: torch.Tensor
    betas: torch.Tensor

    @property
    def num_chains(self) -> int:
        return self.log_weights.shape[0]

    @property
    def log_px(self) -> torch.Tensor:
        """``log (1/C) sum_c w_c`` per data point: a stochastic lower bound on ``log p(x_n)`` (forward run)."""
        return torch.logsumexp(self.log_weights, 0) - math.log(self.num_chains)

    @property
    def log_px_upper(self) -> torch.Tensor:
        """``-log (1/C) sum_c w_c`` per data point: a stochastic upper bound on ``log p(x_n)`` (reverse run)."""
        return -self.log_px


class _LatentSite(NamedTuple):
    """Where one latent site keeps its chains and data points, and its columns in the flattened state."""

    name: str
    transform: torch.distributions.Transform
    unconstrained_shape: torch.Size
    batch_ndim: int
    particle_axis: int
    data_axis: Optional[int]
    start: int
    width: int


def _data_axis(site, data_plate, batch_ndim):
    if data_plate is None:
        return None
    frame = data_plate_frame(site, data_plate)
    if frame is None:
        raise outside_data_plate_error(site["name"], site, data_plate)
    return batch_ndim + frame.dim


def latent_sites(trace, particle_dim, data_plate):
    """Describe the latent sites of a vectorized model trace (chains at ``particle_dim``) for flattening."""
    sites, start = [], 0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        transform = biject_to(site["fn"].support)
        shape = transform.inv(site["value"]).shape
        batch_ndim = site["value"].dim() - site["fn"].event_dim
        particle_axis = batch_ndim + particle_dim
        data_axis = _data_axis(site, data_plate, batch_ndim)
        keep = (particle_axis, data_axis)
        width = math.prod(s for i, s in enumerate(shape) if i not in keep)
        sites.append(_LatentSite(name, transform, shape, batch_ndim, particle_axis, data_axis, start, width))
        start += width
    if not sites:
        raise ValueError("the model has no latent sample sites, so there is nothing to anneal")
    return sites


def flatten_latents(sites, values: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Unconstrained latents as one ``(chains, data points, total width)`` tensor."""
    pieces = []
    for site in sites:
        u = site.transform.inv(values[site.name])
        if site.data_axis is None:
            pieces.append(u.movedim(site.particle_axis, 0).reshape(u.shape[site.particle_axis], 1, -1))
        else:
            u = u.movedim((site.particle_axis, site.data_axis), (0, 1))
            pieces.append(u.reshape(u.shape[0], u.shape[1], -1))
    return torch.cat(pieces, -1)


def _unflatten(site: _LatentSite, flat: torch.Tensor) -> torch.Tensor:
    shape, flat = site.unconstrained_shape, flat[..., site.start : site.start + site.width]
    if site.data_axis is None:
        rest = [s for i, s in enumerate(shape) if i != site.particle_axis]
        return flat.reshape(shape[site.particle_axis], *rest).movedim(0, site.particle_axis)
    rest = [s for i, s in enumerate(shape) if i not in (site.particle_axis, site.data_axis)]
    u = flat.reshape(shape[site.particle_axis], shape[site.data_axis], *rest)
    return u.movedim((0, 1), (site.particle_axis, site.data_axis))


def _per_example_sum(value: torch.Tensor, site: _LatentSite, shape) -> torch.Tensor:
    """Sum over a site's batch dims other than chains and data points; return shape ``(C, N)``."""
    value = value.reshape((1,) * (site.batch_ndim - value.dim()) + value.shape)
    keep = [site.particle_axis] if site.data_axis is None else [site.particle_axis, site.data_axis]
    other = [d for d in range(value.dim()) if d not in keep]
    value = value.sum(other, keepdim=True) if other else value
    value = value.movedim(keep, list(range(len(keep))))
    return value.reshape(value.shape[: len(keep)] + (1,) * (2 - len(keep))).expand(shape)


class AnnealingPath:
    """The log densities along the geometric path, as functions of the flattened unconstrained latents."""

    def __init__(self, model, guide, args, kwargs, sites, num_chains, particle_dim, data_plate, proposal):
        self.model, self.guide, self.args, self.kwargs = model, guide, args, kwargs
        self.sites, self.num_chains, self.particle_dim = sites, num_chains, particle_dim
        self.data_plate, self.proposal = data_plate, proposal

    def _per_example(self, trace, sites=None):
        return per_example_log_prob(
            prune_subsample_sites(trace), self.particle_dim, self.num_chains, self.data_plate, sites
        )

    def latents(self, flat: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Constrained latent values, keyed by site name."""
        return {site.name: site.transform(_unflatten(site, flat)) for site in self.sites}

    def log_densities(self, flat: torch.Tensor):
        """``(log q_0(z), log p(x, z), log |det dz/du|)``, each of shape ``(num_chains, batch_size)``."""
        latents, log_jacobian = {}, 0.0
        for site in self.sites:
            u = _unflatten(site, flat)
            latents[site.name] = z = site.transform(u)
            log_det = site.transform.log_abs_det_jacobian(u, z)
            log_jacobian = log_jacobian + _per_example_sum(log_det, site, flat.shape[:2])
        vectorized = in_particle_plate(self.model, self.num_chains, self.particle_dim)
        conditioned_model = poutine.condition(vectorized, data=latents)
        model_trace = poutine.trace(conditioned_model).get_trace(*self.args, **self.kwargs)
        log_joint = self._per_example(model_trace)
        if self.proposal == "prior":
            log_q0 = self._per_example(model_trace, sites=lambda s: s["name"] in latents)
        else:
            vectorized_guide = in_particle_plate(self.guide, self.num_chains, self.particle_dim)
            conditioned_guide = poutine.condition(vectorized_guide, data=latents)
            guide_trace = poutine.trace(conditioned_guide).get_trace(*self.args, **self.kwargs)
            log_q0 = self._per_example(guide_trace)
        return log_q0, log_joint, log_jacobian

    def potential_energy(self, flat: torch.Tensor, beta: float) -> torch.Tensor:
        """``-log f_beta`` in unconstrained space, per (chain, data point)."""
        log_q0, log_joint, log_jacobian = self.log_densities(flat)
        return -(log_q0 + beta * (log_joint - log_q0) + log_jacobian)


def prior_proposal(model):
    """The model with its observed sites hidden: as a guide, it draws the latents from the prior ``p(z)``."""
    return poutine.block(model, hide_fn=lambda msg: msg["type"] == "sample" and msg["is_observed"])


def _initial_trace(model, guide, args, kwargs, num_chains, particle_dim, proposal):
    """Draw ``z_0 ~ q_0`` for every chain and data point; return the model trace holding it."""
    model = in_particle_plate(model, num_chains, particle_dim)
    with torch.no_grad(), poutine.block():
        if proposal == "prior":
            return prune_subsample_sites(poutine.trace(model).get_trace(*args, **kwargs))
        guide = in_particle_plate(guide, num_chains, particle_dim)
        guide_trace, model_trace = guide_and_model_traces(model, guide, *args, **kwargs)
        check_guide_density_at_given_latents(guide_trace)
        return prune_subsample_sites(model_trace)


def check_guide_density_at_given_latents(guide_trace):
    """Refuse a guide that draws at auxiliary sites (an autoguide): AIS needs ``q_0(z)`` at every point of its
    path, and such a guide's density at a given ``z`` is not what running it conditioned on ``z`` gives."""
    auxiliary = auxiliary_sites(guide_trace)
    if auxiliary:
        raise ValueError(
            f"AIS needs the proposal's density at any z, but the guide draws at auxiliary site(s) {auxiliary} (an "
            "autoguide), whose density at a given z it cannot give: anneal from the prior instead (proposal='prior', "
            "on the command line --method-options '{\"proposal\": \"prior\"}'), or estimate with method 'is'."
        )


def check_continuous_latents(trace):
    """Refuse discrete latent sites: HMC moves need a continuous space."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and site["fn"].support.is_discrete:
            raise ValueError(
                f"AIS moves its chains by Hamiltonian Monte Carlo, which needs continuous latents, but latent site "
                f"'{name}' is discrete: estimate log p(x) with method 'is' (which sums sites marked for enumeration "
                "exactly) or 'exact'."
            )


def hmc_transition(flat, energy_fn, step_size, num_leapfrog_steps, energy=None, grads=None):
    """One HMC move of every (chain, data point) pair; returns ``(new_state, acceptance_probability)``.

    :param flat: the state, shape ``(C, N, D)``.
    :param energy_fn: maps a state to per-pair potential energies of shape ``(C, N)``.
    :param step_size: tensor broadcastable to ``(C, N, 1)``.
    :param energy: optional energies at ``flat`` (shape ``(C, N)``), with ``grads`` their gradient, to save a pass.
    """
    last_energy = {}

    def potential(z):
        energy = energy_fn(z["u"])
        last_energy["value"] = energy.detach()
        return energy.sum()

    momentum = torch.randn_like(flat)
    with torch.enable_grad():
        state = {"u": flat.detach()}
        if grads is None:
            grads = potential_grad(potential, state)[0]["u"]
            energy = last_energy["value"]
        # a diverging trajectory may leave the support; let it produce NaN energies (and be rejected), not raise
        with pyro.validation_enabled(False):
            proposed, momentum_end, _, _ = velocity_verlet(
                state, {"u": momentum}, potential, lambda r: r, step_size, num_leapfrog_steps, {"u": grads}
            )
    hamiltonian_start = energy + 0.5 * momentum.pow(2).sum(-1)
    hamiltonian_end = last_energy["value"] + 0.5 * momentum_end["u"].pow(2).sum(-1)
    log_accept = (hamiltonian_start - hamiltonian_end).clamp(max=0.0)
    # a diverging trajectory (NaN energy) is rejected
    log_accept = torch.where(torch.isnan(log_accept), torch.full_like(log_accept, -math.inf), log_accept)
    accept = torch.rand_like(log_accept).log() < log_accept
    return torch.where(accept.unsqueeze(-1), proposed["u"].detach(), flat), log_accept.exp()


def _betas(schedule, num_steps):
    if torch.is_tensor(schedule):
        betas = schedule.to(torch.float64)
        if betas.dim() != 1 or betas[0] != 0 or betas[-1] != 1 or (betas.diff() <= 0).any():
            raise ValueError("a schedule tensor must increase strictly from 0 to 1")
        return betas
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule '{schedule}'; pass one of {sorted(SCHEDULES)} or a tensor of betas")
    return SCHEDULES[schedule](num_steps)


@torch.no_grad()
def annealed_importance_sampling(
    model,
    guide,
    *args,
    num_steps=100,
    num_chains=16,
    num_leapfrog_steps=10,
    step_size=0.1,
    target_accept=0.65,
    adapt_step_size=True,
    schedule="sigmoid",
    proposal="guide",
    initial_latents=None,
    data_plate="data",
    max_plate_nesting=None,
    progress=False,
    **kwargs,
) -> AISResult:
    """Run AIS from ``q_0`` to ``p(z | x_n)`` for every data point of ``*args`` at once (see module docstring).

    :param model: a Pyro model with its local latents and observations inside the plate ``data_plate``.
    :param guide: a Pyro guide with the same latent sites (used when ``proposal="guide"``).
    :param int num_steps: ``T``, the number of transitions between ``beta = 0`` and ``beta = 1``.
    :param int num_chains: ``C``, independent chains per data point.
    :param int num_leapfrog_steps: leapfrog steps per HMC transition.
    :param float step_size: the initial HMC step size (per data point, adapted unless ``adapt_step_size=False``).
    :param float target_accept: the acceptance probability the step size is moved towards.
    :param schedule: ``"sigmoid"``, ``"linear"``, or a 1-D tensor of inverse temperatures from 0 to 1.
    :param str proposal: ``"guide"`` (``q_0 = q(z | x)``) or ``"prior"`` (``q_0 = p(z)``).
    :param dict initial_latents: exact posterior draws ``{site: value}`` without a chain dimension. When given,
        the path is walked in reverse (from ``beta = 1`` to 0) starting from them, and the returned log weights
        estimate ``-log p(x_n)`` (a reverse run for :func:`inference.bdmc`).
    :returns: :class:`AISResult`.
    """
    if proposal not in PROPOSALS:
        raise ValueError(f"unknown proposal '{proposal}'; choose one of {', '.join(PROPOSALS)}")
    if num_chains < 1 or num_leapfrog_steps < 1:
        raise ValueError(f"num_chains and num_leapfrog_steps must be positive, got {num_chains}, {num_leapfrog_steps}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
    if proposal == "guide" and guide is None:
        raise ValueError("proposal='guide' needs a guide; pass one, or proposal='prior'")
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, guide or prior_proposal(model), *args, **kwargs)
    particle_dim = -(max_plate_nesting + 1)
    betas = _betas(schedule, num_steps)
    trace = _initial_trace(model, guide, args, kwargs, num_chains, particle_dim, proposal)
    check_continuous_latents(trace)
    sites = latent_sites(trace, particle_dim, data_plate)
    values = {site.name: trace.nodes[site.name]["value"] for site in sites}
    if initial_latents is not None:
        missing = sorted(set(values) - set(initial_latents))
        if missing:
            raise ValueError(f"initial_latents lacks the latent sites {missing}; give an exact draw of every latent")
        values = {name: initial_latents[name].expand_as(value) for name, value in values.items()}
        betas = betas.flip(0)
    path = AnnealingPath(model, guide, args, kwargs, sites, num_chains, particle_dim, data_plate, proposal)
    flat = flatten_latents(sites, values)
    log_step = torch.full(flat.shape[1:2] + (1,), math.log(step_size), dtype=flat.dtype, device=flat.device)
    log_weights = torch.zeros(flat.shape[:2], dtype=flat.dtype, device=flat.device)
    acceptance = torch.zeros(flat.shape[1], dtype=flat.dtype, device=flat.device)
    num_transitions = max(len(betas) - 2, 1)
    proposal_log_weights = None
    steps = tqdm(range(1, len(betas)), desc="AIS", disable=not progress, leave=False)
    for t in steps:
        beta = betas[t].item()
        with torch.enable_grad():
            flat.requires_grad_(True)
            log_q0, log_joint, log_jacobian = path.log_densities(flat)
            energy = -(log_q0 + beta * (log_joint - log_q0) + log_jacobian)
            grads = torch.autograd.grad(energy.sum(), flat)[0] if t < len(betas) - 1 else None
            flat.requires_grad_(False)
        log_ratio = (log_joint - log_q0).detach()
        if proposal_log_weights is None:
            proposal_log_weights = log_ratio
        log_weights += (betas[t] - betas[t - 1]).item() * log_ratio
        if grads is None:
            break
        flat, accept_prob = hmc_transition(
            flat,
            lambda u, beta=beta: path.potential_energy(u, beta),
            log_step.exp(),
            num_leapfrog_steps,
            energy=energy.detach(),
            grads=grads,
        )
        rate = accept_prob.mean(0)
        acceptance += rate / num_transitions
        if adapt_step_size:
            log_step += 0.5 * (rate - target_accept).unsqueeze(-1)
    if not torch.isfinite(log_weights).all():
        raise FloatingPointError(
            "non-finite AIS log weights: the model or proposal produced NaN/inf log densities along the path "
            "(check the data against the likelihood's support, or lower step_size)"
        )
    return AISResult(
        log_weights=log_weights,
        proposal_log_weights=proposal_log_weights,
        final_latents={name: value.detach() for name, value in path.latents(flat).items()},
        step_size=log_step.exp().squeeze(-1),
        acceptance_rate=acceptance,
        betas=betas,
    )
