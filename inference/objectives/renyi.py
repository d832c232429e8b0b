r"""The variational Renyi bound (Li & Turner 2016), per data point, minibatch-scaled outside the log-sum-exp.

For ``alpha != 1`` and ``K`` reparameterized draws ``z_k ~ q(z | x_n)`` with log weights ``log w_k`` (see
:mod:`inference.objectives.iwae`)::

    L_alpha,K(x_n) = 1 / (1 - alpha) * log (1/K) sum_k w_k^(1 - alpha)

``E[L_alpha,K]`` is a lower bound on ``log p(x_n)`` for ``alpha >= 0`` (with ``L_1 = (1/K) sum_k log w_k``, the
ELBO, as the limit), decreasing in ``alpha``; ``alpha = 0`` is the IWAE bound and ``alpha < 0`` may exceed
``log p(x_n)``.
"""

from inference.objectives.estimators import ESTIMATORS
from inference.objectives.objective import ImportanceWeightedObjective, log_mean_exp


@ESTIMATORS.register("renyi")
class RenyiBound(ImportanceWeightedObjective):
    r"""The VR bound ``L_alpha,K`` of Li & Turner (2016) with the reparameterized gradient::

        grad L_alpha,K = sum_k wbar_k^(alpha) grad log w_k,   wbar_k^(alpha) = w_k^(1-alpha) / sum_j w_j^(1-alpha)

    through ``theta`` and through ``phi`` (along ``z_k`` and in ``log q``). Unlike Pyro's
    :class:`~pyro.infer.RenyiELBO`, the log weights are per data point and the subsample scale ``N / |B|``
    multiplies ``L_alpha,K`` from outside, so minibatches estimate the full-data bound. Needs reparameterizable
    guide sites.

    :param float alpha: the order; ``0`` gives IWAE, ``1`` the ELBO (as a limit); default 0.5.
    :param num_particles, max_plate_nesting, vectorize_particles, kl_weight, data_plate: as in
        :class:`~inference.objectives.objective.ImportanceWeightedObjective`.

    References:
        [1] Y. Li, R. E. Turner. Renyi Divergence Variational Inference. NeurIPS 2016.
    """

    name = "renyi"

    def __init__(self, alpha=0.5, num_particles=2, **options):
        super().__init__(num_particles=num_particles, **options)
        self.alpha = float(alpha)

    def per_example_objective(self, parts):
        log_w = parts.log_weights
        if self.alpha == 1:
            return log_w.mean(0)
        return log_mean_exp((1 - self.alpha) * log_w) / (1 - self.alpha)
