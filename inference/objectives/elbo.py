r"""The evidence lower bound: standard, with closed-form KL, and with the sticking-the-landing gradient.

For a data point ``x_n`` and KL weight ``beta`` (1 by default; smaller values anneal the KL term)::

    ELBO_beta(x_n) = E_q [ log p(x_n | z) + beta (log p(z) - log q(z | x_n)) ]  <=  log p(x_n)   (beta = 1)

estimated with ``K`` particles, and scaled by ``N / |B|`` over a minibatch ``B``. ``elbo`` and
``elbo-analytic-kl`` are Pyro's :class:`~pyro.infer.Trace_ELBO` and :class:`~pyro.infer.TraceMeanField_ELBO`,
whose per-site subsample scales already give the right minibatch scaling because the ELBO is a sum over data
points; they only gain the KL weight, applied as a scale on every latent site's log density. ``elbo-stl`` is
``Trace_ELBO`` too, with the guide's parameters stopped in the surrogate's ``log q``: Pyro's traces cost less per
step than the per-data-point contract of :mod:`~inference.objectives.objective`, which a sum over data points does
not need.

Their ``differentiable_loss`` forms each particle's ELBO and surrogate from Pyro's traces as Pyro's estimators do
(:func:`elbo_particle_loss`, :func:`mean_field_particle_loss`), but as tensors throughout: Pyro's own reads every
site's log density back as a Python number and tests the loss for NaN, each a wait for the device's queued work on
a GPU, several per step. The trainer tests the loss for finiteness itself, without waiting
(:mod:`inference.training.trainer`).
"""

import warnings

import pyro.distributions as dist
import pyro.infer
import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.trace_elbo import _compute_log_r
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from pyro.util import warn_if_nan
from torch.distributions import kl_divergence

from inference.importance import check_reparameterized, forked_rng, guide_and_model_traces
from inference.objectives.estimators import ESTIMATORS, Estimator
from inference.objectives.objective import (
    backward_and_read,
    check_kl_weight,
    check_num_particles,
    value_with_gradient_of,
)
from inference.stop_gradient import StopParametersAfterDrawing, stopped_guide_trace


class ScaleLatents(Messenger):
    """Multiply the log density of every unobserved sample site by ``factor`` (the KL weight ``beta``).

    Unlike :func:`pyro.poutine.scale` it leaves observed sites alone and accepts ``factor = 0``.
    """

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.factor * msg["scale"]


class _KLWeighted(Estimator):
    """Runs a Pyro ELBO on model and guide with their latent sites' log densities scaled by ``kl_weight``, after
    :meth:`check` has passed on the first trace drawn."""

    _checked = False

    def __init__(
        self, num_particles=1, max_plate_nesting=None, vectorize_particles=True, kl_weight=1.0, data_plate="data"
    ):
        check_num_particles(num_particles)
        check_kl_weight(kl_weight)
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=float("inf") if max_plate_nesting is None else max_plate_nesting,
            vectorize_particles=vectorize_particles and num_particles > 1,
        )
        self.kl_weight = kl_weight
        self.data_plate = data_plate  # unused: Pyro's per-site subsample scale is exact for a sum over data points

    def _weighted(self, model, guide):
        if self.kl_weight == 1:
            return model, guide
        return ScaleLatents(self.kl_weight)(model), ScaleLatents(self.kl_weight)(guide)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """``-ELBO_beta`` averaged over the particles, as a tensor whose gradient is the estimator's; nothing is read
        back from the device."""
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(*self._weighted(model, guide), args, kwargs):
            loss = loss + self.particle_loss(model_trace, guide_trace)
        return loss / self.num_particles if self.num_particles > 1 else loss

    def particle_loss(self, model_trace, guide_trace) -> torch.Tensor:
        """One particle's ``-ELBO_beta`` with its surrogate's gradient."""
        raise NotImplementedError

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs) -> float:
        """The loss as a float, without gradients."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs).item()
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss as a float; accumulates the estimator's gradient into the parameters' ``.grad``."""
        return backward_and_read(self.differentiable_loss(model, guide, *args, **kwargs), self.retain_graph)

    def check(self, model, guide, args, kwargs):
        """Raise a clear error where this estimator cannot serve the model/guide pair (none by default)."""

    def guide_to_trace(self, guide):
        """The guide as the traces run it (itself by default)."""
        return guide

    def _get_trace(self, model, guide, args, kwargs):
        if not self._checked:
            self.check(model, guide, args, kwargs)
            self._checked = True
            warn_if_marked_for_enumeration(guide, args, kwargs, self.name)
        return super()._get_trace(model, self.guide_to_trace(guide), args, kwargs)


class EnumerationIgnoredWarning(UserWarning):
    """A guide site marked for parallel enumeration that an estimator draws instead."""


def warn_if_marked_for_enumeration(guide, args, kwargs, estimator_name):
    """Warn, naming the site and what sums it, when the guide marks a site for enumeration that this estimator
    draws (Pyro's ``Trace_ELBO`` does the same, with a shorter warning)."""
    with torch.no_grad(), poutine.block(), forked_rng():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    marked = [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and site["infer"].get("enumerate") == "parallel"
    ]
    if marked:
        warnings.warn(
            f"'{estimator_name}' draws the guide's site(s) {marked}, which are marked for parallel enumeration, and "
            "gives them a score-function gradient; 'iwae' (any K) and 'iwae-dreg' sum them exactly, as does Pyro's "
            "TraceEnum_ELBO",
            EnumerationIgnoredWarning,
            stacklevel=4,
        )


@ESTIMATORS.register("elbo")
class TraceELBO(_KLWeighted, pyro.infer.Trace_ELBO):
    r"""The ELBO with ``K`` particles (Kingma & Welling 2014): Pyro's :class:`~pyro.infer.Trace_ELBO`.

    Gradient: reparameterized (``z = g_phi(eps)``) where the guide site has ``rsample``; otherwise a score-function
    term ``(log w - ...) grad_phi log q`` with Pyro's plate-wise Rao-Blackwellization (Ranganath et al. 2014).

    :param int num_particles: ``K``.
    :param int max_plate_nesting: guessed if ``None``.
    :param bool vectorize_particles: one batched pass over the ``K`` particles (default) or a loop.
    :param float kl_weight: ``beta``, scaling every latent site's log density in model and guide.
    :param str data_plate: accepted for a common interface; not needed (see the module docstring).

    References:
        [1] D. P. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
        [2] R. Ranganath, S. Gerrish, D. M. Blei. Black Box Variational Inference. AISTATS 2014.
    """

    name = "elbo"

    def particle_loss(self, model_trace, guide_trace):
        return elbo_particle_loss(model_trace, guide_trace)


def sample_sites(trace) -> list:
    """The sample sites of a trace, in order."""
    return [site for site in trace.nodes.values() if site["type"] == "sample"]


def total(terms) -> torch.Tensor:
    """The sum of a non-empty list of tensors, without the ``0 +`` that Python's ``sum`` starts from."""
    result = terms[0]
    for term in terms[1:]:
        result = result + term
    return result


def elbo_particle_loss(model_trace, guide_trace) -> torch.Tensor:
    """``-(log p(x, z) - log q(z | x))`` of one particle, with the gradient of :class:`~pyro.infer.Trace_ELBO`'s
    surrogate::

        log p(x, z) - sum_sites entropy_term + sum_sites (log r, summed to the site's plates) * score_function_term

    where each guide site's score parts are those of its distribution (``entropy_term = log q`` and no score
    function for a reparameterized site; the other way round otherwise) and ``log r`` is the detached log weight
    (Pyro's ``_compute_log_r``: the plate-wise Rao-Blackwellization). Where no guide site has a score function,
    every entropy term is its site's ``log q`` in value, so the surrogate is the loss itself."""
    log_p = total([site["log_prob_sum"] for site in sample_sites(model_trace)])
    surrogate, log_r, surrogate_is_elbo = log_p, None, True
    for site in sample_sites(guide_trace):
        _, score_function_term, entropy_term = site["score_parts"]
        if is_identically_zero(entropy_term) or not is_identically_zero(score_function_term):
            surrogate_is_elbo = False  # this site's log q is in the ELBO but not (or not alone) in the surrogate
        if not is_identically_zero(entropy_term):
            surrogate = surrogate - entropy_term.sum()
        if not is_identically_zero(score_function_term):
            if log_r is None:
                log_r = _compute_log_r(model_trace, guide_trace)
            surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum()
    if surrogate_is_elbo:
        return -surrogate
    elbo = log_p - total([site["log_prob_sum"] for site in sample_sites(guide_trace)])
    return value_with_gradient_of(-elbo, -surrogate)


def mean_field_particle_loss(model_trace, guide_trace) -> torch.Tensor:
    """``-(log p(x | z) - KL(q(z | x) || p(z)))`` of one particle, as :class:`~pyro.infer.TraceMeanField_ELBO`
    forms it: each latent site's KL in closed form (:func:`torch.distributions.kl_divergence`), with the guide
    site's scale and mask; a guide-only (auxiliary) site adds its entropy term. Every term is reparameterized, so
    the loss is its own surrogate."""
    elbo = []
    for model_site in sample_sites(model_trace):
        if model_site["is_observed"]:
            elbo.append(model_site["log_prob_sum"])
            continue
        guide_site = guide_trace.nodes[model_site["name"]]
        kl = scale_and_mask(kl_divergence(guide_site["fn"], model_site["fn"]), guide_site["scale"], guide_site["mask"])
        elbo.append(-kl.sum() if torch.is_tensor(kl) else -kl * guide_site["fn"].batch_shape.numel())
    for guide_site in sample_sites(guide_trace):
        if guide_site["name"] not in model_trace.nodes:
            elbo.append(-guide_site["score_parts"].entropy_term.sum())
    return -total(elbo)


def check_analytic_kl(model, guide, args, kwargs):
    """Raise a clear error unless every guide site is reparameterized and every latent site's ``KL(q || p)`` has a
    closed form in ``torch.distributions`` (what :class:`AnalyticKLELBO` needs)."""
    with torch.no_grad(), poutine.block(), forked_rng():  # checking must not change the estimator's draws
        guide_trace, model_trace = map(prune_subsample_sites, guide_and_model_traces(model, guide, *args, **kwargs))
    check_reparameterized(guide_trace, "elbo-analytic-kl")
    latents = [name for name, site in model_trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]]
    drawn = [name for name, site in guide_trace.nodes.items() if site["type"] == "sample" and name in latents]
    if drawn != latents:
        raise ValueError(
            f"'elbo-analytic-kl' takes each latent site's KL in closed form given the values drawn before it, which is "
            f"exact only when the guide draws the latent sites in the model's order ({', '.join(latents)}); the "
            f"guide draws {', '.join(drawn)}: draw them in the model's order, or use 'elbo'"
        )
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name not in model_trace.nodes:
            continue
        q, p = site["fn"], model_trace.nodes[name]["fn"]
        try:
            kl_divergence(q, p)
        except NotImplementedError:
            raise ValueError(
                f"'elbo-analytic-kl' needs KL(q || p) in closed form, but torch.distributions has none for site "
                f"'{name}' between the guide's {_family(q)} and the prior's {_family(p)}: use 'elbo', which "
                "estimates the KL by Monte Carlo"
            ) from None


def _family(fn) -> str:
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    return type(fn).__name__


@ESTIMATORS.register("elbo-analytic-kl")
class AnalyticKLELBO(_KLWeighted, pyro.infer.TraceMeanField_ELBO):
    r"""The ELBO as ``E_q[log p(x | z)] - beta KL(q(z | x) || p(z))``: Pyro's :class:`~pyro.infer.TraceMeanField_ELBO`.

    The KL term is closed-form wherever :func:`torch.distributions.kl_divergence` has a rule for the (guide, prior)
    pair of a site (e.g. diagonal Normal vs Normal) and a ``K``-particle Monte Carlo estimate otherwise; the
    likelihood term is reparameterized. With several latent sites, each site's KL is taken between its guide and
    prior distributions given the values drawn before it, ``sum_s KL(q(z_s | z_<s, x) || p(z_s | z_<s))``, an
    unbiased estimate of ``KL(q || p)`` by the chain rule, provided the guide draws the sites in the model's order
    (so every prior's conditioning values are drawn before the site; checked). Options as in :class:`TraceELBO`.

    Where a site's pair has no closed form it refuses (:func:`check_analytic_kl`) rather than falling back to
    Monte Carlo as Pyro's estimator does, so that ``elbo-analytic-kl`` always means what it says.

    References:
        [1] D. P. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014 (appendix B).
    """

    name = "elbo-analytic-kl"
    require_rsample = True

    def check(self, model, guide, args, kwargs):
        check_analytic_kl(model, guide, args, kwargs)

    def particle_loss(self, model_trace, guide_trace):
        return mean_field_particle_loss(model_trace, guide_trace)


def check_stoppable(guide, args, kwargs, estimator_name):
    """Raise a clear error unless every latent guide site is reparameterized and its distribution's parameters can
    be detached (what a sticking-the-landing gradient needs); the guide runs once, its draws undone. Gradients
    are on while it runs, even where the caller turned them off (the trainer's first call, which finds the
    parameters), since the check asks whether a log density still depends on them."""
    with torch.enable_grad(), poutine.block(), forked_rng():
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
        check_reparameterized(guide_trace, estimator_name)
        stopped_guide_trace(guide_trace)  # raises where a distribution keeps parameters outside its tensors


@ESTIMATORS.register("elbo-stl")
class StickingTheLandingELBO(_KLWeighted, pyro.infer.Trace_ELBO):
    r"""The ELBO with the sticking-the-landing gradient (Roeder et al. 2017).

    Value: ``(1/K) sum_k log w_k`` per data point. Gradient: the reparameterized gradient with the guide's
    parameters stopped inside ``log q``::

        (1/K) sum_k [ grad_theta log p(x, z_k) + d/dz log w_sg(phi)(z)|_{z_k} dz_k/dphi ],
        log w_sg(phi)(z) = log p(x | z) + beta (log p(z) - log q_sg(phi)(z))

    The dropped term ``-beta E_q[grad_phi log q_phi(z)]`` is a score function with mean zero, so the estimator is
    unbiased for the ELBO gradient for any ``beta``; when ``q`` is the exact posterior (``beta = 1``) the remaining
    integrand ``d/dz (log p(x, z) - log q(z)) = d/dz log p(x) = 0``, so the guide gradient has zero variance.

    It is Pyro's :class:`~pyro.infer.Trace_ELBO` on a guide whose every latent site, once its value is drawn, keeps
    a copy of its distribution with the parameters detached
    (:class:`~inference.stop_gradient.StopParametersAfterDrawing`): the trace then scores ``log q_sg(phi)(z)``, once,
    for both the value (unchanged) and the surrogate. Needs reparameterizable guide sites whose distributions hold
    their parameters as tensors (checked on the first call, :func:`check_stoppable`). Options as in
    :class:`TraceELBO`.

    References:
        [1] G. Roeder, Y. Wu, D. Duvenaud. Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
            Variational Inference. NeurIPS 2017.
    """

    name = "elbo-stl"
    require_rsample = True
    stop_guide_parameters = True  # as the per-data-point estimators say it (what the guide must allow)

    def check(self, model, guide, args, kwargs):
        check_stoppable(guide, args, kwargs, self.name)

    def particle_loss(self, model_trace, guide_trace):
        return elbo_particle_loss(model_trace, guide_trace)

    def guide_to_trace(self, guide):
        return StopParametersAfterDrawing()(guide)
