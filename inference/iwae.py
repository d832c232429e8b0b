r"""Importance-weighted bounds per data point: IWAE, its sticking-the-landing and doubly reparameterized gradients.

For every data point ``x_n`` of a minibatch ``B`` of a data set of size ``N``, ``K`` reparameterized draws
``z_nk = g_phi(eps_nk, x_n)`` from the guide give the log weights (with a KL weight ``beta``, 1 by default)::

    log w_nk = log p_theta(x_n | z_nk) + beta * (log p_theta(z_nk) - log q_phi(z_nk | x_n))

and the IWAE bound (Burda et al. 2016)::

    L_K(x_n) = log (1/K) sum_k w_nk  <=  log p(x_n)        (beta = 1)

The loss is ``-(N / |B|) sum_{n in B} L_K(x_n)``: the subsample scale multiplies each data point's log-sum-exp
from outside. (Pyro's :class:`~pyro.infer.RenyiELBO` applies it to the log weights inside the log-sum-exp, which
changes the bound whenever ``|B| < N``.)

This module also holds what every importance-weighted estimator here shares: :func:`importance_terms` computes the
``K x B`` log densities in one vectorized pass, and :class:`ImportanceWeightedObjective` turns an estimator's
per-example objective and surrogate into Pyro's :class:`~pyro.infer.ELBO` contract.
"""

import copy
import math
import weakref
from typing import NamedTuple, Optional

import torch
from torch.distributions import Distribution
from torch.distributions.transforms import Transform

import pyro
import pyro.poutine as poutine
from pyro.infer import ELBO
from pyro.poutine.util import prune_subsample_sites
from pyro.util import warn_if_nan

from .estimators import ESTIMATORS
from .importance import PARTICLE_PLATE, data_plate_scale, guess_max_plate_nesting, per_example_log_prob


class ImportanceTerms(NamedTuple):
    """Log densities of ``K`` particles for ``B`` data points, each of shape ``(K, B)``, unscaled.

    ``log_guide_stopped`` is ``log q`` at the reparameterized ``z`` with the guide's distribution parameters
    detached (gradient only through ``z``); ``log_joint_at_detached_z`` is ``log p(x | z) + beta log p(z)`` at
    ``z`` detached (gradient only through the model's parameters). Each is ``None`` unless requested.
    """

    log_likelihood: torch.Tensor
    log_prior: torch.Tensor
    log_guide: torch.Tensor
    log_guide_stopped: Optional[torch.Tensor]
    log_joint_at_detached_z: Optional[torch.Tensor]
    scale: float
    kl_weight: float

    @property
    def log_weights(self) -> torch.Tensor:
        """``log p(x | z) + beta (log p(z) - log q(z | x))``."""
        return self.log_likelihood + self.kl_weight * (self.log_prior - self.log_guide)

    @property
    def log_weights_stopped(self) -> torch.Tensor:
        """The log weights with the guide's parameters stopped in ``log q`` (the STL/DReG path derivative)."""
        return self.log_likelihood + self.kl_weight * (self.log_prior - self.log_guide_stopped)


def detach_distribution_parameters(fn: Distribution) -> Distribution:
    """A copy of ``fn`` whose parameters are detached, so ``log_prob(z)`` has a gradient only through ``z``.

    Recurses through wrappers (``Independent``, masked, expanded, transformed distributions and their transforms);
    caches that would carry the old parameters (a transform's cached inverse) are dropped.
    """
    if isinstance(fn, torch.nn.Module):
        raise ValueError(
            f"cannot detach the parameters of {type(fn).__name__}: it is an nn.Module (e.g. a normalizing flow), "
            "whose parameters are read when it is called. Sticking-the-landing and DReG estimators need a guide "
            "whose distributions hold their parameters as tensors; use 'iwae' or 'elbo' with this guide."
        )
    if torch.is_tensor(fn):
        return fn.detach()
    if isinstance(fn, weakref.ref):
        return None  # a transform's cached inverse, rebuilt on demand from the detached copy
    if isinstance(fn, (list, tuple)):
        return type(fn)(detach_distribution_parameters(part) for part in fn)
    if isinstance(fn, (Distribution, Transform)):
        detached = copy.copy(fn)
        for key, value in vars(fn).items():
            if key == "_cached_x_y":
                value = (None, None)  # the cached pre-image would carry the old parameters' graph
            else:
                value = detach_distribution_parameters(value)
            object.__setattr__(detached, key, value)
        return detached
    return fn


def _check_reparameterized(guide_trace, estimator_name):
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        if not site["fn"].has_rsample or site["infer"].get("enumerate"):
            raise ValueError(
                f"'{estimator_name}' needs reparameterized guide samples, but guide site '{name}' "
                f"({type(site['fn']).__name__}) has no rsample. Use 'elbo' (which adds a score-function term for "
                "non-reparameterizable sites), or give the guide a reparameterizable distribution."
            )


def _stopped_guide_trace(guide_trace):
    stopped = poutine.Trace()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            site = dict(site, fn=detach_distribution_parameters(site["fn"]))
            if site["fn"].log_prob(site["value"].detach()).requires_grad:
                raise ValueError(
                    f"guide site '{name}': its distribution {type(site['fn']).__name__} still depends on "
                    "parameters after detaching (they are captured outside its tensor attributes), so "
                    "sticking-the-landing / DReG cannot stop their gradient. Use 'iwae' or 'elbo' instead."
                )
        stopped.add_node(name, **site)
    return stopped


def _detached_values(guide_trace):
    detached = poutine.Trace()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and torch.is_tensor(site["value"]):
            site = dict(site, value=site["value"].detach())
        detached.add_node(name, **site)
    return detached


def importance_terms(
    model,
    guide,
    args,
    kwargs,
    *,
    num_particles,
    max_plate_nesting,
    data_plate="data",
    kl_weight=1.0,
    vectorize_particles=True,
    stop_guide_parameters=False,
    model_at_detached_z=False,
    estimator_name="estimator",
) -> ImportanceTerms:
    """Run guide and model once with ``num_particles`` particles (one batched pass) and split the log densities.

    With ``vectorize_particles=False`` the particles are drawn one pass at a time (less memory, same result).
    """
    if not vectorize_particles and num_particles > 1:
        pieces = [
            importance_terms(
                model,
                guide,
                args,
                kwargs,
                num_particles=1,
                max_plate_nesting=max_plate_nesting,
                data_plate=data_plate,
                kl_weight=kl_weight,
                stop_guide_parameters=stop_guide_parameters,
                model_at_detached_z=model_at_detached_z,
                estimator_name=estimator_name,
            )
            for _ in range(num_particles)
        ]
        tensors = [
            None if pieces[0][i] is None else torch.cat([piece[i] for piece in pieces])
            for i in range(len(ImportanceTerms._fields) - 2)
        ]
        return ImportanceTerms(*tensors, pieces[0].scale, kl_weight)

    particle_dim = -(max_plate_nesting + 1)

    def vectorize(fn):
        def vectorized(*args, **kwargs):
            with pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim):
                return fn(*args, **kwargs)

        return vectorized

    raw_guide_trace = poutine.trace(vectorize(guide)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(vectorize(model), trace=raw_guide_trace)).get_trace(*args, **kwargs)
    guide_trace = prune_subsample_sites(raw_guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    _check_reparameterized(guide_trace, estimator_name)

    def log_prob(trace, sites=None):
        return per_example_log_prob(trace, particle_dim, num_particles, data_plate, sites=sites)

    def observed(site):
        return site["is_observed"]

    def latent(site):
        return not site["is_observed"]

    log_guide_stopped = log_prob(_stopped_guide_trace(guide_trace)) if stop_guide_parameters else None
    log_joint_at_detached_z = None
    if model_at_detached_z:
        detached_trace = poutine.trace(
            poutine.replay(vectorize(model), trace=_detached_values(raw_guide_trace))
        ).get_trace(*args, **kwargs)
        detached_trace = prune_subsample_sites(detached_trace)
        log_joint_at_detached_z = log_prob(detached_trace, observed) + kl_weight * log_prob(detached_trace, latent)
    return ImportanceTerms(
        log_likelihood=log_prob(model_trace, observed),
        log_prior=log_prob(model_trace, latent),
        log_guide=log_prob(guide_trace),
        log_guide_stopped=log_guide_stopped,
        log_joint_at_detached_z=log_joint_at_detached_z,
        scale=data_plate_scale(model_trace, data_plate),
        kl_weight=kl_weight,
    )


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` along ``dim``, computed stably."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def normalized_weights(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Self-normalized importance weights ``w_k / sum_j w_j`` along ``dim``, detached."""
    return torch.softmax(log_w.detach(), dim)


def split_model_and_guide_surrogate(
    terms: ImportanceTerms, model_weights: torch.Tensor, guide_surrogate: torch.Tensor, guide_weights: torch.Tensor
) -> torch.Tensor:
    """A per-example surrogate whose model gradient and guide gradient follow two different objectives.

    ``model_weights`` ``a_k`` give the model gradient ``sum_k a_k grad_theta log p(x, z_k)``; ``guide_surrogate`` is
    differentiated for the guide, its own model gradient ``sum_k b_k grad_theta log p(x, z_k)`` (``b`` =
    ``guide_weights``) being cancelled by evaluating the model at detached ``z``. Parameters shared by model and
    guide receive both parts. Returns a ``(B,)`` tensor.
    """
    log_p = terms.log_joint_at_detached_z
    return (model_weights.detach() * log_p).sum(0) + guide_surrogate - (guide_weights.detach() * log_p).sum(0)


class ImportanceWeightedObjective(ELBO):
    """Base class: a per-example objective ``L(x_n)`` from ``K`` log weights, minibatch-scaled outside.

    Subclasses implement :meth:`per_example_objective`, returning the ``(B,)`` objective values and a ``(B,)``
    surrogate whose gradient is the estimator's gradient. The loss (what :class:`~pyro.infer.SVI` minimizes) is
    ``-(N / |B|) sum_n L(x_n)``, and :meth:`differentiable_loss` has that value and the surrogate's gradient.

    :param int num_particles: ``K``, particles per data point.
    :param int max_plate_nesting: the model's plate nesting (guessed by running model and guide once if ``None``);
        the particle plate goes just outside it.
    :param bool vectorize_particles: draw all particles in one batched pass (default) or one pass each.
    :param float kl_weight: ``beta`` multiplying ``log p(z) - log q(z | x)`` in every log weight (KL annealing;
        may be changed between steps).
    :param str data_plate: name of the plate over independent data points; ``None`` treats the batch as one point.
    """

    name = "importance-weighted"
    stop_guide_parameters = False
    model_at_detached_z = False

    def __init__(
        self, num_particles=1, max_plate_nesting=None, vectorize_particles=True, kl_weight=1.0, data_plate="data"
    ):
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be a number >= 0, got {kl_weight}")
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=float("inf") if max_plate_nesting is None else max_plate_nesting,
        )
        self.vectorize_particles = vectorize_particles
        self.kl_weight = kl_weight
        self.data_plate = data_plate

    def per_example_objective(self, terms: ImportanceTerms):
        raise NotImplementedError

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} draws its particles with importance_terms(), not traces")

    def _terms(self, model, guide, args, kwargs) -> ImportanceTerms:
        if self.max_plate_nesting == float("inf"):
            with torch.no_grad():
                self.max_plate_nesting = guess_max_plate_nesting(model, guide, *args, **kwargs)
        return importance_terms(
            model,
            guide,
            args,
            kwargs,
            num_particles=self.num_particles,
            max_plate_nesting=self.max_plate_nesting,
            data_plate=self.data_plate,
            kl_weight=self.kl_weight,
            vectorize_particles=self.vectorize_particles,
            stop_guide_parameters=self.stop_guide_parameters,
            model_at_detached_z=self.model_at_detached_z,
            estimator_name=self.name,
        )

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The loss ``-(N / |B|) sum_n L(x_n)``, with the estimator's gradient."""
        terms = self._terms(model, guide, args, kwargs)
        objective, surrogate = self.per_example_objective(terms)
        loss = -terms.scale * objective.sum()
        surrogate_loss = -terms.scale * surrogate.sum()
        warn_if_nan(loss, "loss")
        return loss.detach() + (surrogate_loss - surrogate_loss.detach())

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs):
        """The loss as a float, without gradients."""
        terms = self._terms(model, guide, args, kwargs)
        objective, _ = self.per_example_objective(terms)
        loss = -terms.scale * objective.sum().item()
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The loss as a float; accumulates the estimator's gradient into the parameters' ``.grad``."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.item()


@ESTIMATORS.register("iwae")
class IWAE(ImportanceWeightedObjective):
    r"""The importance-weighted bound ``L_K(x_n) = log (1/K) sum_k w_nk`` (Burda et al. 2016), per data point.

    Gradient (all guide sites reparameterized): the exact gradient of ``L_K`` at the drawn ``eps``::

        grad L_K = sum_k wbar_k grad log w_k,    wbar_k = w_k / sum_j w_j,

    through ``theta`` directly and through ``phi`` both along ``z_k = g_phi(eps_k)`` and in ``log q_phi``.
    Its guide gradient's signal-to-noise ratio falls as ``O(1 / sqrt(K))`` (Rainforth et al. 2018).
    ``K = 1`` is the ELBO. The subsample scale ``N / |B|`` multiplies ``L_K`` outside the log-sum-exp.

    References:
        [1] Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
        [2] T. Rainforth, A. Kosiorek, T. A. Le, C. Maddison, M. Igl, F. Wood, Y. W. Teh. Tighter Variational
            Bounds are Not Necessarily Better. ICML 2018.
    """

    name = "iwae"

    def per_example_objective(self, terms):
        objective = log_mean_exp(terms.log_weights)
        return objective, objective


@ESTIMATORS.register("iwae-stl")
class StickingTheLandingIWAE(ImportanceWeightedObjective):
    r"""IWAE with the sticking-the-landing gradient (Roeder et al. 2017): guide parameters stopped in ``log q``.

    Value: ``L_K`` as in :class:`IWAE`. Gradient::

        sum_k wbar_k [ grad_theta log p(x, z_k)  +  d/dz (log p(x, z) - log q_sg(phi)(z))|_{z_k} dz_k/dphi ]

    dropping the score term ``-sum_k wbar_k grad_phi log q_phi(z_k)``. For ``K = 1`` that term has mean zero, but
    for ``K > 1`` it does not, so this gradient is **biased** for ``L_K`` (Tucker et al. 2018); use
    :class:`DReGIWAE` for an unbiased one. When ``q`` is the exact posterior every ``log w_k = log p(x)`` is constant
    in ``z`` and the guide gradient is exactly zero for every draw.

    References:
        [1] G. Roeder, Y. Wu, D. Duvenaud. Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
            Variational Inference. NeurIPS 2017.
        [2] G. Tucker, D. Lawson, S. Gu, C. J. Maddison. Doubly Reparameterized Gradient Estimators for Monte Carlo
            Objectives. ICLR 2019.
    """

    name = "iwae-stl"
    stop_guide_parameters = True

    def per_example_objective(self, terms):
        return log_mean_exp(terms.log_weights), log_mean_exp(terms.log_weights_stopped)


@ESTIMATORS.register("iwae-dreg")
class DReGIWAE(ImportanceWeightedObjective):
    r"""IWAE with doubly reparameterized guide gradients (Tucker et al. 2019); the model's gradient is IWAE's.

    Value: ``L_K`` as in :class:`IWAE`. Applying the reparameterization trick a second time to the score term of
    the IWAE guide gradient gives, for KL weight ``beta``, the unbiased estimator::

        grad_phi L_K = sum_k [ (1 - beta) wbar_k + beta wbar_k^2 ] d/dz (log w_sg(phi)(z))|_{z_k} dz_k/dphi

    (``wbar_k^2`` at ``beta = 1``), and ``grad_theta L_K = sum_k wbar_k grad_theta log p(x, z_k)`` as in IWAE. Its
    guide SNR grows as ``O(sqrt(K))`` instead of falling. With the exact posterior as guide the guide gradient is
    exactly zero. The two gradients are kept apart by evaluating the model a second time at detached ``z``.

    References:
        [1] G. Tucker, D. Lawson, S. Gu, C. J. Maddison. Doubly Reparameterized Gradient Estimators for Monte Carlo
            Objectives. ICLR 2019.
        [2] Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    """

    name = "iwae-dreg"
    stop_guide_parameters = True
    model_at_detached_z = True

    def per_example_objective(self, terms):
        log_w = terms.log_weights
        wbar = normalized_weights(log_w)
        guide_weights = (1 - terms.kl_weight) * wbar + terms.kl_weight * wbar**2
        guide_surrogate = (guide_weights * terms.log_weights_stopped).sum(0)
        surrogate = split_model_and_guide_surrogate(terms, wbar, guide_surrogate, guide_weights)
        return log_mean_exp(log_w), surrogate
