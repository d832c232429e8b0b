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

from inference.objectives.estimators import ESTIMATORS
from inference.objectives.iwae import split_model_and_guide_surrogate
from inference.objectives.objective import ImportanceWeightedObjective, log_mean_exp, normalized_weights


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

    name = "miwae"

    def __init__(self, num_particles=1, num_outer=1, **options):
        if int(num_outer) != num_outer or num_outer < 1:
            raise ValueError(f"num_outer (M) must be a positive integer, got {num_outer}")
        super().__init__(num_particles=int(num_outer) * int(num_particles), **options)
        self.num_inner = int(num_particles)
        self.num_outer = int(num_outer)

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
        grad_phi   = grad_phi MIWAE_M,K   (reparameterized; the ELBO_S when K = 1)

    The reported loss is ``-IWAE_S``. Rainforth et al.'s PIWAE(M, K) is ``piwae(num_particles=M*K, num_inner=K)``;
    the default ``num_inner=1`` trains the guide on the ELBO. Model and guide gradients are kept apart by evaluating
    the model a second time at detached ``z``.

    :param int num_particles: ``S``, draws per data point (the model's IWAE).
    :param int num_inner: ``K``, draws per group in the guide's MIWAE; must divide ``num_particles``.
    :param max_plate_nesting, vectorize_particles, kl_weight, data_plate: as in
        :class:`~inference.objectives.objective.ImportanceWeightedObjective`.
    """

    name = "piwae"
    model_at_detached_z = True

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
        guide_objective = log_mean_exp(grouped, 1).mean(0)
        guide_weights = (normalized_weights(grouped, 1) / grouped.shape[0]).reshape(log_w.shape)
        return split_model_and_guide_surrogate(parts, normalized_weights(log_w), guide_objective, guide_weights)
