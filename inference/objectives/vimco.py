"""VIMCO: the multi-sample (IWAE) bound with per-sample leave-one-out baselines for discrete latents."""

import torch

from inference.importance import GradientNeeds
from inference.objectives.estimators import ESTIMATORS
from inference.objectives.objective import (
    ImportanceWeightedObjective,
    check_num_particles,
    log_mean_exp,
    normalized_weights,
)
from inference.objectives.score import leave_one_out_mean


def vimco_learning_signals(log_w: torch.Tensor) -> torch.Tensor:
    r"""Per-sample learning signals ``L - log (1/K) (sum_{j != k} w_j + w_hat_{-k})`` of shape ``(K, B)``, where
    ``L = log (1/K) sum_j w_j`` and ``log w_hat_{-k} = mean_{j != k} log w_j`` (the geometric mean of the other
    weights stands in for ``w_k``)."""
    log_w_others = leave_one_out_mean(log_w)  # log w_hat_{-k}, (K, B)
    # row k of the (K, K, B) tensor holds log w with entry k replaced by log w_hat_{-k}
    eye = torch.eye(log_w.shape[0], dtype=torch.bool, device=log_w.device).unsqueeze(-1)
    replaced = torch.where(eye, log_w_others.unsqueeze(1), log_w.unsqueeze(0))
    return log_mean_exp(log_w) - log_mean_exp(replaced, 1)


@ESTIMATORS.register("vimco")
class VIMCO(ImportanceWeightedObjective):
    r"""The importance-weighted bound with the VIMCO gradient estimator (Mnih & Rezende 2016).

    For data point ``n`` and ``K >= 2`` particles ``z_nk ~ q_phi(z | x_n)``, with (beta-weighted) log weights
    ``log w_nk = log p_theta(x_n | z_nk) + beta (log p_theta(z_nk) - log q_phi(z_nk | x_n))``, the objective is

    .. math::

        \mathcal{L}_n = \mathbb{E}\Big[\log \frac1K \sum_k w_{nk}\Big] \le \log p(x_n) \quad (\beta = 1),

    and its gradient is estimated by

    .. math::

        \sum_k \tilde w_{nk} \nabla \log w_{nk}
        + \sum_k \hat L_{nk} \nabla_\phi \log q_\phi(z_{nk} | x_n), \qquad
        \hat L_{nk} = \hat{\mathcal{L}}_n - \log \frac1K \Big(\sum_{j \ne k} w_{nj} + \hat w_{n,-k}\Big),

    with normalized weights :math:`\tilde w_{nk} = w_{nk} / \sum_j w_{nj}` and
    :math:`\log \hat w_{n,-k} = \frac{1}{K-1} \sum_{j \ne k} \log w_{nj}`: the baseline of sample ``k`` is the bound
    recomputed without it, which depends only on the other samples, so the estimator is unbiased. Baselines are per
    data point (unlike Pyro's ``RenyiELBO``, which gives discrete guide sites no gradient at ``alpha = 0``).

    The score term covers the guide sites without ``rsample`` (the discrete ones); reparameterizable sites get the
    pathwise gradient through ``log w``, so for a fully reparameterized guide this is the IWAE estimator.

    The loss is :math:`-\frac{N}{B} \sum_{n \in \text{batch}} \hat{\mathcal{L}}_n`, the data plate's subsample scale
    applied outside the log-sum-exp.

    :param int num_particles: ``K >= 2``, particles per data point.
    :param bool vectorize_particles: draw all particles in one batched pass (default) or in a Python loop.
    :param float kl_weight: weight of ``log p(z) - log q(z | x)`` inside the weights; 1 gives the true bound.
    :param int max_plate_nesting: the model's plate nesting (guessed if not given); particles go one dim left.
    :param str data_plate: name of the plate over independent data points.

    References:
        [1] A. Mnih, D. J. Rezende. Variational Inference for Monte Carlo Objectives. ICML 2016.
        [2] Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    """

    name = "vimco"
    needs = GradientNeeds(require_rsample=False)  # sites without rsample get the score term below

    def __init__(self, num_particles=5, **options):
        check_num_particles(num_particles, 2, "VIMCO's baselines leave one sample out")
        super().__init__(num_particles=num_particles, **options)

    def per_example_objective(self, parts):
        return log_mean_exp(parts.log_weights)

    def per_example_surrogate(self, parts):
        log_w = parts.log_weights
        signals = vimco_learning_signals(log_w.detach())
        return (normalized_weights(log_w) * log_w + signals * parts.log_guide_nonreparam).sum(0)
