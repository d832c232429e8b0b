r"""Importance-weighted bounds per data point: IWAE, its sticking-the-landing and doubly reparameterized gradients.

For every data point ``x_n`` of a minibatch ``B`` of a data set of size ``N``, ``K`` reparameterized draws
``z_nk = g_phi(eps_nk, x_n)`` from the guide give the log weights (with a KL weight ``beta``, 1 by default)::

    log w_nk = log p_theta(x_n | z_nk) + beta * (log p_theta(z_nk) - log q_phi(z_nk | x_n))

and the IWAE bound (Burda et al. 2016)::

    L_K(x_n) = log (1/K) sum_k w_nk  <=  log p(x_n)        (beta = 1)

The loss is ``-(N / |B|) sum_{n in B} L_K(x_n)``: the subsample scale multiplies each data point's log-sum-exp
from outside. (Pyro's :class:`~pyro.infer.RenyiELBO` applies it to the log weights inside the log-sum-exp, which
changes the bound whenever ``|B| < N``.)

This module also holds :class:`ImportanceWeightedObjective`, which turns an estimator's per-example objective and
surrogate, computed from the ``K x B`` log densities of
:func:`~inference.importance.per_example_log_weight_parts`, into Pyro's :class:`~pyro.infer.ELBO` contract.
"""

import math

import torch

from pyro.infer import ELBO
from pyro.util import warn_if_nan

from .estimators import ESTIMATORS
from .importance import LogWeightParts, guess_max_plate_nesting, per_example_log_weight_parts


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` along ``dim``, computed stably."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def normalized_weights(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Self-normalized importance weights ``w_k / sum_j w_j`` along ``dim``, detached."""
    return torch.softmax(log_w.detach(), dim)


def split_model_and_guide_surrogate(
    terms: LogWeightParts, model_weights: torch.Tensor, guide_surrogate: torch.Tensor, guide_weights: torch.Tensor
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

    def per_example_objective(self, terms: LogWeightParts):
        raise NotImplementedError

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} draws its particles with per_example_log_weight_parts(), not traces"
        )

    def _terms(self, model, guide, args, kwargs) -> LogWeightParts:
        if self.max_plate_nesting == float("inf"):
            with torch.no_grad():
                self.max_plate_nesting = guess_max_plate_nesting(model, guide, *args, **kwargs)
        return per_example_log_weight_parts(
            model,
            guide,
            args,
            kwargs,
            num_particles=self.num_particles,
            max_plate_nesting=self.max_plate_nesting,
            data_plate=self.data_plate,
            kl_weight=self.kl_weight,
            vectorize_particles=self.vectorize_particles,
            require_rsample=True,
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
