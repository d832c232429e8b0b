"""VIMCO: the multi-sample (IWAE) bound with per-sample leave-one-out baselines for discrete latents."""

import math

import torch

from pyro.infer.elbo import ELBO
from pyro.util import warn_if_nan

from .estimators import ESTIMATORS
from .importance import per_example_log_weight_parts, vectorized_traces
from .score import check_kl_weight, check_num_particles, value_with_gradient_of


def vimco_learning_signals(log_w: torch.Tensor) -> torch.Tensor:
    r"""Per-sample learning signals ``L - log (1/K) (sum_{j != k} w_j + w_hat_{-k})`` of shape ``(K, B)``, where
    ``L = log (1/K) sum_j w_j`` and ``log w_hat_{-k} = mean_{j != k} log w_j`` (the geometric mean of the other
    weights stands in for ``w_k``)."""
    num_particles = log_w.shape[0]
    log_w_others = (log_w.sum(0, keepdim=True) - log_w) / (num_particles - 1)  # log w_hat_{-k}, (K, B)
    # row k of the (K, K, B) tensor holds log w with entry k replaced by log w_hat_{-k}
    eye = torch.eye(num_particles, dtype=torch.bool, device=log_w.device).unsqueeze(-1)
    replaced = torch.where(eye, log_w_others.unsqueeze(1), log_w.unsqueeze(0))
    log_mean_w = torch.logsumexp(log_w, 0) - math.log(num_particles)
    return log_mean_w - (torch.logsumexp(replaced, 1) - math.log(num_particles))


@ESTIMATORS.register("vimco")
class VIMCO(ELBO):
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

    def __init__(
        self, num_particles=5, vectorize_particles=True, kl_weight=1.0, max_plate_nesting=None, data_plate="data"
    ):
        check_num_particles(num_particles, 2, "VIMCO's baselines leave one sample out")
        check_kl_weight(kl_weight)
        super().__init__(num_particles=num_particles, vectorize_particles=False)
        self.vectorize_particles = vectorize_particles
        self.max_plate_nesting = max_plate_nesting
        self.kl_weight = kl_weight
        self.data_plate = data_plate

    def _get_trace(self, model, guide, args, kwargs):
        traces = vectorized_traces(model, guide, *args, max_plate_nesting=self.max_plate_nesting, **kwargs)
        return traces.model_trace, traces.guide_trace

    def _log_weight_parts(self, model, guide, args, kwargs):
        return per_example_log_weight_parts(
            model,
            guide,
            args,
            kwargs,
            num_particles=self.num_particles,
            vectorize_particles=self.vectorize_particles,
            max_plate_nesting=self.max_plate_nesting,
            data_plate=self.data_plate,
            kl_weight=self.kl_weight,
        )

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The scaled negative bound estimate, with the VIMCO gradient."""
        parts = self._log_weight_parts(model, guide, args, kwargs)
        log_w = parts.log_weights
        log_mean_w = torch.logsumexp(log_w, 0) - math.log(self.num_particles)
        normalized_weights = torch.softmax(log_w.detach(), 0)
        signals = vimco_learning_signals(log_w.detach())
        surrogate = (normalized_weights * log_w + signals * parts.log_guide_nonreparam).sum(0)
        loss = value_with_gradient_of(-parts.scale * log_mean_w.sum(), -parts.scale * surrogate.sum())
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model, guide, *args, **kwargs):
        """The scaled negative bound estimate (float, no gradient)."""
        with torch.no_grad():
            parts = self._log_weight_parts(model, guide, args, kwargs)
            log_mean_w = torch.logsumexp(parts.log_weights, 0) - math.log(self.num_particles)
            loss = -parts.scale * log_mean_w.sum().item()
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.item()
