r"""The contract every per-data-point estimator here fills, on Pyro's :class:`~pyro.infer.ELBO`.

For each data point ``x_n`` of a minibatch ``B`` of a data set of size ``N``, an estimator computes an objective
``L(x_n)`` from the log weights of ``K`` particles (:func:`~inference.importance.per_example_log_weight_parts`)
and a surrogate whose gradient is the estimator's gradient of ``L``. The loss is::

    loss = -(N / |B|) sum_{n in B} L(x_n)

with the subsample scale applied outside every per-example computation (a log-sum-exp over particles, say), so
that a minibatch estimates the full-data objective.
"""

import math
import numbers
from typing import NamedTuple

import torch
from pyro.infer import ELBO
from pyro.util import warn_if_nan

from inference.importance import (
    GradientNeeds,
    LogWeightParts,
    ParticleDraw,
    guess_max_plate_nesting,
    per_example_log_weight_parts,
)
from inference.objectives.estimators import Estimator


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` along ``dim``, computed stably."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def normalized_weights(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Self-normalized importance weights ``w_k / sum_j w_j`` along ``dim``, detached."""
    return torch.softmax(log_w.detach(), dim)


def value_with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """A tensor whose value is ``value`` and whose gradient is that of ``surrogate``."""
    return value.detach() + (surrogate - surrogate.detach())


def backward_and_read(loss: torch.Tensor, retain_graph=None) -> float:
    """Accumulate ``loss``'s gradient into the parameters' ``.grad`` (where it has one) and return its value as a
    float, warning if it is NaN: what ``loss_and_grads`` gives :class:`pyro.infer.SVI`."""
    if loss.requires_grad:
        loss.backward(retain_graph=retain_graph)
    value = loss.item()
    warn_if_nan(value, "loss")
    return value


def check_num_particles(num_particles, minimum=1, reason="particles per data point"):
    if not (isinstance(num_particles, numbers.Real) and float(num_particles).is_integer() and num_particles >= minimum):
        raise ValueError(f"num_particles must be an integer >= {minimum} ({reason}); got {num_particles!r}")


def check_kl_weight(kl_weight):
    if not (isinstance(kl_weight, numbers.Real) and math.isfinite(kl_weight) and kl_weight >= 0):
        raise ValueError(f"kl_weight must be a finite number >= 0; got {kl_weight!r}")


class PathwiseScaledSurrogate(NamedTuple):
    """A surrogate whose gradient along ``z -> log p(x, z)`` is to be rescaled: the ``(B,)`` ``value``, and
    ``model_pathwise_factor``, one factor ``r_nk`` per particle and data point (the log weights' shape), by which
    the gradient through the latent values into the model parts is multiplied
    (:class:`~inference.stop_gradient.PathwiseValues`), while the model's parameters keep the value's own."""

    value: torch.Tensor
    model_pathwise_factor: torch.Tensor


class ImportanceWeightedObjective(Estimator, ELBO):
    """Base class: a per-example objective ``L(x_n)`` from ``K`` log weights, minibatch-scaled outside.

    Subclasses implement :meth:`per_example_objective`, the ``(B,)`` values ``L(x_n)``, and, when their gradient is
    not the exact gradient of ``L``, :meth:`per_example_surrogate`, a ``(B,)`` tensor whose gradient is the
    estimator's. Estimators whose gradient has a part that is not per data point (a learned baseline's own loss, a
    sleep phase) override :meth:`differentiable_loss` and hand that part to :meth:`minibatch_loss`.

    The class attribute ``needs`` (:class:`~inference.importance.GradientNeeds`) says which parts of the log weights
    an estimator's gradient needs (pathwise gradients by default); with ``scale_model_pathwise`` its
    :meth:`per_example_surrogate` returns a :class:`PathwiseScaledSurrogate`, and with ``enumerate_guide`` guide
    sites marked for parallel enumeration are summed exactly (:mod:`inference.importance`; elsewhere they are drawn).

    :param int num_particles: ``K``, particles per data point.
    :param int max_plate_nesting: the model's plate nesting (guessed by running model and guide once if ``None``);
        the particle plate goes just outside it.
    :param bool vectorize_particles: draw all particles in one batched pass (default) or one pass each, without a
        particle plate (for guides that cannot take a leading particle dimension).
    :param float kl_weight: ``beta`` multiplying ``log p(z) - log q(z | x)`` in every log weight (KL annealing;
        may be changed between steps).
    :param str data_plate: name of the plate over independent data points; ``None`` treats the batch as one point.
    """

    name = "importance-weighted"
    #: Whether the objective is a log-mean-exp of weights, the ELBO when each mean has one draw (IWAE and kin).
    importance_weighted_bound = False
    needs = GradientNeeds()

    def __init__(
        self, num_particles=1, max_plate_nesting=None, vectorize_particles=True, kl_weight=1.0, data_plate="data"
    ):
        check_num_particles(num_particles)
        check_kl_weight(kl_weight)
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=float("inf") if max_plate_nesting is None else max_plate_nesting,
        )
        self.vectorize_particles = vectorize_particles
        self.kl_weight = kl_weight
        self.data_plate = data_plate

    def is_the_elbo(self) -> bool:
        """Whether this importance-weighted bound averages one weight per log-mean-exp, which is the ELBO."""
        return self.importance_weighted_bound and self.draws_per_average() == 1

    def draws_per_average(self) -> int:
        """``K``, the weights inside each log-mean-exp."""
        return self.num_particles

    def state_dict(self) -> dict:
        """The estimator's own state across steps (running baselines), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but was given {sorted(state)}")

    def per_example_objective(self, parts: LogWeightParts) -> torch.Tensor:
        """The ``(B,)`` values ``L(x_n)``."""
        raise NotImplementedError

    def per_example_surrogate(self, parts: LogWeightParts) -> torch.Tensor:
        """A ``(B,)`` tensor whose gradient is the estimator's gradient of ``L(x_n)`` (default: ``L`` itself)."""
        return self.per_example_objective(parts)

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} draws its particles with per_example_log_weight_parts(), not traces"
        )

    def _max_plate_nesting(self, model, guide, args, kwargs) -> int:
        if self.max_plate_nesting == float("inf"):
            with torch.no_grad():
                self.max_plate_nesting = guess_max_plate_nesting(model, guide, *args, **kwargs)
        return self.max_plate_nesting

    def log_weight_parts(self, model, guide, args, kwargs) -> LogWeightParts:
        """The ``(K, B)`` parts of the log weights this estimator needs, from one draw of ``K`` particles."""
        draw = ParticleDraw(
            num_particles=self.num_particles,
            max_plate_nesting=self._max_plate_nesting(model, guide, args, kwargs),
            data_plate=self.data_plate,
            kl_weight=self.kl_weight,
            vectorize_particles=self.vectorize_particles,
            estimator_name=self.name,
        )
        return per_example_log_weight_parts(model, guide, args, kwargs, draw, self.needs)

    def minibatch_loss(self, parts, objective, surrogate, extra_loss=0.0) -> torch.Tensor:
        """Value ``-(N / |B|) sum_n objective_n``; gradient that of ``-(N / |B|) sum_n surrogate_n + extra_loss``."""
        return value_with_gradient_of(-parts.scale * objective.sum(), -parts.scale * surrogate.sum() + extra_loss)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The loss ``-(N / |B|) sum_n L(x_n)``, with the estimator's gradient. It reads nothing back from the
        device (no NaN test: the trainer tests the loss itself without waiting for it, and :meth:`loss` and
        :meth:`loss_and_grads`, which return numbers, warn)."""
        parts = self.log_weight_parts(model, guide, args, kwargs)
        objective = self.per_example_objective(parts)
        if type(self).per_example_surrogate is ImportanceWeightedObjective.per_example_surrogate:
            return self.minibatch_loss(parts, objective, objective)  # the surrogate is L itself: computed once
        surrogate = self.per_example_surrogate(parts)
        if self.needs.scale_model_pathwise:
            if not isinstance(surrogate, PathwiseScaledSurrogate):
                raise TypeError(
                    f"{type(self).__name__} declares needs.scale_model_pathwise, so its per_example_surrogate must "
                    "return a PathwiseScaledSurrogate(value, model_pathwise_factor)"
                )
            parts.model_pathwise_values.scale_gradients(surrogate.model_pathwise_factor)
            surrogate = surrogate.value
        return self.minibatch_loss(parts, objective, surrogate)

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs):
        """The loss as a float, without gradients."""
        parts = self.log_weight_parts(model, guide, args, kwargs)
        loss = -parts.scale * self.per_example_objective(parts).sum().item()
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The loss as a float; accumulates the estimator's gradient into the parameters' ``.grad``."""
        return backward_and_read(self.differentiable_loss(model, guide, *args, **kwargs), self.retain_graph)
