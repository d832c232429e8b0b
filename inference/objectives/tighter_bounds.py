r"""Rainforth et al. (2018)'s alternatives to IWAE, whose guide gradients keep their signal as ``K`` grows.

With log weights ``log w_k`` of reparameterized guide draws for one data point (see :mod:`inference.objectives.iwae`),
``ELBO_K = (1/K) sum_k log w_k`` and ``IWAE_K = log (1/K) sum_k w_k``:

* ``miwae``: ``MIWAE_M,K = (1/M) sum_m IWAE_K(w_m1 .. w_mK)`` over ``M x K`` draws;
* ``ciwae``: ``CIWAE_beta = beta ELBO_K + (1 - beta) IWAE_K`` on the same ``K`` draws;
* ``piwae``: the model follows ``IWAE`` and the guide ``MIWAE`` (by default the ELBO) on the same draws.

Each is a lower bound on ``log p(x)`` (KL weight 1), minibatch-scaled outside the log-sum-exp.

References:
    [1] T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood, Y. W. Teh. Tighter Variational
        Bounds are Not Necessarily Better. ICML 2018.
"""

import torch

from inference.importance import GradientNeeds
from inference.objectives.estimators import ESTIMATORS
from inference.objectives.objective import (
    ImportanceWeightedObjective,
    PathwiseScaledSurrogate,
    log_mean_exp,
    normalized_weights,
)


def _groups(log_w, num_inner):
    """``(M K, B)`` log weights as ``(M, K, B)``: ``M`` independent groups of ``K`` draws."""
    return log_w.reshape((log_w.shape[0] // num_inner, num_inner) + log_w.shape[1:])


@ESTIMATORS.register("miwae")
class MIWAE(ImportanceWeightedObjective):
    r"""The multiply importance weighted bound ``MIWAE_M,K = (1/M) sum_m log (1/K) sum_k w_mk`` (Rainforth et al.).

    Gradient: reparameterized, ``(1/M) sum_m sum_k wbar_mk grad log w_mk`` with weights normalized within each
    group. ``M = 1`` is IWAE and ``K = 1`` the ELBO with ``M`` particles; larger ``M`` raises the guide
    gradient's SNR as ``O(sqrt(M / K))``.

    :param int num_particles: ``K``, draws inside each log-mean-exp.
    :param int num_outer: ``M``, independent groups averaged (``M x K`` draws per data point in one pass).
    :param max_plate_nesting, vectorize_particles, kl_weight, data_plate: as in
        :class:`~inference.objectives.objective.ImportanceWeightedObjective`.
    """

    importance_weighted_bound = True
    name = "miwae"

    def __init__(self, num_particles=1, num_outer=1, **options):
        if int(num_outer) != num_outer or num_outer < 1:
            raise ValueError(f"num_outer (M) must be a positive integer, got {num_outer}")
        super().__init__(num_particles=int(num_outer) * int(num_particles), **options)
        self.num_inner = int(num_particles)
        self.num_outer = int(num_outer)

    def draws_per_average(self) -> int:
        return self.num_inner

    def per_example_objective(self, parts):
        return log_mean_exp(_groups(parts.log_weights, self.num_inner), 1).mean(0)


@ESTIMATORS.register("ciwae")
class CIWAE(ImportanceWeightedObjective):
    r"""The combination bound ``CIWAE_beta = beta ELBO_K + (1 - beta) IWAE_K`` on one set of ``K`` draws.

    Gradient: reparameterized, ``sum_k (beta / K + (1 - beta) wbar_k) grad log w_k``. ``beta = 0`` is IWAE and
    ``beta = 1`` the ELBO.

    :param float beta: the ELBO's share, in ``[0, 1]`` (not the KL weight, which is ``kl_weight``).
    :param num_particles, max_plate_nesting, vectorize_particles, kl_weight, data_plate: as in
        :class:`~inference.objectives.objective.ImportanceWeightedObjective`.
    """

    importance_weighted_bound = True
    name = "ciwae"

    def __init__(self, num_particles=1, beta=0.5, **options):
        if not 0 <= beta <= 1:
            raise ValueError(f"beta (the ELBO's share in CIWAE) must be in [0, 1], got {beta}")
        super().__init__(num_particles=num_particles, **options)
        self.beta = float(beta)

    def per_example_objective(self, parts):
        log_w = parts.log_weights
        return self.beta * log_w.mean(0) + (1 - self.beta) * log_mean_exp(log_w)


@ESTIMATORS.register("piwae")
class PIWAE(ImportanceWeightedObjective):
    r"""The partially importance weighted estimator: the model's gradient from ``IWAE``, the guide's from ``MIWAE``.

    On the same ``S = M K`` draws per data point::

        grad_theta = grad_theta IWAE_S = sum_s wbar_s grad_theta log p(x, z_s)
        grad_phi   = grad_phi MIWAE_M,K = sum_s g_s grad_phi log w_s      (reparameterized; the ELBO_S when K = 1)

    with ``wbar_s`` normalized over all ``S`` draws and ``g_s`` within each group of ``K``, divided by ``M``. The
    reported loss is ``-IWAE_S``. Rainforth et al.'s PIWAE(M, K) is ``piwae(num_particles=M*K, num_inner=K)``; the
    default ``num_inner=1`` trains the guide on the ELBO.

    One model pass gives both gradients, as in :class:`~inference.objectives.iwae.DReGIWAE`: the surrogate
    ``sum_s a_s log p(x, z_s) - beta sum_s g_s log q(z_s)`` gives ``theta`` the weights ``a_s``, and the gradient
    through ``z_s`` into ``log p`` is rescaled by ``g_s / a_s`` (a :class:`~inference.objectives.objective.
    PathwiseScaledSurrogate`), so ``phi`` gets ``sum_s g_s grad_phi log w_s``. Here ``a_s = max(wbar_s, eps^2)``
    (``eps`` the dtype's machine epsilon): a draw whose IWAE weight underflows still passes its guide share
    ``g_s``, which need not be small, and the rescaling stays finite. The floor moves the model's gradient by at
    most ``S eps^2`` of its largest term, far below rounding. (Evaluating the model a second time at detached ``z``,
    ``model_at_detached_z``, gives the same gradients for twice the model's cost.)

    :param int num_particles: ``S``, draws per data point (the model's IWAE).
    :param int num_inner: ``K``, draws per group in the guide's MIWAE; must divide ``num_particles``.
    :param max_plate_nesting, vectorize_particles, kl_weight, data_plate: as in
        :class:`~inference.objectives.objective.ImportanceWeightedObjective`.
    """

    importance_weighted_bound = True
    name = "piwae"
    needs = GradientNeeds(scale_model_pathwise=True)

    def __init__(self, num_particles=1, num_inner=1, **options):
        if int(num_inner) != num_inner or num_inner < 1 or num_particles % num_inner:
            raise ValueError(
                f"num_inner (K) must be a positive integer dividing num_particles={num_particles}, got {num_inner}"
            )
        super().__init__(num_particles=num_particles, **options)
        self.num_inner = int(num_inner)

    def per_example_objective(self, parts):
        return log_mean_exp(parts.log_weights)

    def per_example_surrogate(self, parts):
        log_w = parts.log_weights
        grouped = _groups(log_w, self.num_inner)
        guide_weights = (normalized_weights(grouped, 1) / grouped.shape[0]).reshape(log_w.shape)
        model_weights = normalized_weights(log_w).clamp(min=torch.finfo(log_w.dtype).eps ** 2)
        beta = parts.kl_weight
        log_joint = parts.log_likelihood + beta * parts.log_prior
        surrogate = (model_weights * log_joint).sum(0) - beta * (guide_weights * parts.log_guide).sum(0)
        return PathwiseScaledSurrogate(surrogate, guide_weights / model_weights)
