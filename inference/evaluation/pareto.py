"""Pareto k-hat of importance weights, for many data points at once, on the weights' device.

For the ``S`` log weights of one data point, PSIS (Vehtari et al. 2024) fits a generalized Pareto distribution to the
``M = ceil(min(S / 5, 3 sqrt(S)))`` largest weights, shifted by the next largest (the cutoff ``u``):
``y_i = exp(log w_(S-M+i) - max) - exp(u - max)``. The shape ``k`` comes from the empirical-Bayes estimate of Zhang &
Stephens (2009): over a grid of ``m = 30 + floor(sqrt(M))`` values

    b_j = 1 / y_M + (1 - sqrt(m / (j - 1/2))) / (3 y_(floor(M/4 + 1/2))),
    k(b) = mean_i log(1 - b y_i),      L(b) = M (log(-b / k(b)) - k(b) - 1),

``b`` is averaged with weights ``softmax_j L(b_j)`` (those under ``10 eps`` dropped), and
``k = (M k(b_post) + 5) / (M + 10)`` (a weak prior towards 1/2).

:func:`arviz.psislw` computes this one data point at a time in Python: 33 ms for 100 data points at ``S = 5000`` on
2 CPU cores, twice the 15 ms an H200 takes for their whole importance-sampling pass. :func:`pareto_khat` does the same
arithmetic for every data point in a few tensor operations, the data points whose tails have the same length together
(ties at the cutoff, frequent among float32 weights, or weights below the smallest double shorten a tail, as in
arviz). The results equal arviz's to rounding (``tests/inference/evaluation/test_pareto.py``).

References:
    A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. Pareto smoothed importance sampling. JMLR 25(72), 2024.
    J. Zhang, M. A. Stephens. A new and efficient estimation method for the generalized Pareto distribution.
    Technometrics 51(3), 2009.
"""

import math

import numpy as np
import torch

#: Fewer samples than this give ``inf`` (arviz's answer when the tail has at most 4 points).
MIN_SAMPLES_FOR_KHAT = 5
#: ``log`` of the smallest positive double: arviz's lowest cutoff.
LOG_TINY = math.log(np.finfo(float).tiny)
#: Data points per batched fit, which holds ``rows x (30 + sqrt(M)) x M`` doubles (36 MB at ``S = 5000``).
ROWS_PER_FIT = 512


def tail_length(num_samples: int) -> int:
    """``M``: the number of largest weights the Pareto fit uses (arviz's rule with relative efficiency 1)."""
    return int(math.ceil(min(num_samples / 5.0, 3 * num_samples**0.5)))


def generalized_pareto_shape(y: torch.Tensor) -> torch.Tensor:
    """Zhang & Stephens' estimate of ``k`` with the weak prior of PSIS, for each row of ``y`` (sorted ascending,
    positive): shape ``(..., M)`` to ``(...)``."""
    n = y.shape[-1]
    m = 30 + int(n**0.5)
    grid = 1 - torch.sqrt(m / (torch.arange(1, m + 1, dtype=y.dtype, device=y.device) - 0.5))
    b = grid / (3 * y[..., int(n / 4 + 0.5) - 1, None]) + 1 / y[..., -1:]  # (..., m)
    k = torch.log1p(-b[..., :, None] * y[..., None, :]).mean(-1)  # (..., m)
    profile = n * (torch.log(-(b / k)) - k - 1)
    weights = torch.softmax(profile, -1)
    weights = torch.where(weights >= 10 * torch.finfo(torch.float64).eps, weights, 0.0)
    b_post = (b * weights).sum(-1) / weights.sum(-1)
    k_post = torch.log1p(-b_post[..., None] * y).mean(-1)
    return (n * k_post + 10 * 0.5) / (n + 10)


def _khat_of_rows(x: torch.Tensor) -> torch.Tensor:
    """k-hat of each row of ``x`` (float64, ``(rows, S)``): the rows whose tails have the same length are fitted
    together (all of them but for ties at the cutoff or weights under :data:`LOG_TINY`)."""
    x = x - x.max(-1, keepdim=True).values
    m = tail_length(x.shape[-1])
    largest = x.topk(min(m + 1, x.shape[-1]), dim=-1).values.flip(-1)  # ascending: the cutoff, then the tail
    cutoff = largest[:, :1].clamp_min(LOG_TINY)
    lengths = (x > cutoff).sum(-1)  # m, or fewer where values tie with the cutoff or lie under LOG_TINY
    khat = x.new_full(x.shape[:1], math.inf)  # arviz's answer for a tail of at most 4 points
    for n in lengths.unique().tolist():
        if n > 4:
            rows = lengths == n
            khat[rows] = generalized_pareto_shape(torch.exp(largest[rows, -n:]) - torch.exp(cutoff[rows]))
    return khat


def pareto_khat(log_weights: torch.Tensor) -> torch.Tensor:
    """Pareto k-hat of the importance weights of each data point.

    :param log_weights: shape ``(num_samples, batch_size)``, as from
        :func:`~inference.importance.per_example_log_weights`.
    :returns: shape ``(batch_size,)``, on the weights' device and in their dtype; ``inf`` (as arviz reports it)
        when there are too few samples to fit a tail (fewer than :data:`MIN_SAMPLES_FOR_KHAT`); ``-inf`` when all
        weights are equal up to rounding (the guide is the exact posterior and the estimate has no Monte Carlo
        error).
    """
    if log_weights.dim() != 2:
        raise ValueError(f"log_weights must have shape (num_samples, batch_size), got {tuple(log_weights.shape)}")
    num_samples = log_weights.shape[0]
    if num_samples < MIN_SAMPLES_FOR_KHAT:
        return torch.full(log_weights.shape[1:], math.inf, dtype=log_weights.dtype, device=log_weights.device)
    x = log_weights.detach().double().T
    khat = torch.cat([_khat_of_rows(rows) for rows in x.split(ROWS_PER_FIT)]).to(log_weights.dtype)
    # equal weights (an exact-posterior guide) have a bounded tail, where the Pareto fit is degenerate
    spread = log_weights.max(0).values - log_weights.min(0).values
    tolerance = math.sqrt(torch.finfo(log_weights.dtype).eps) * (1 + log_weights.abs().max(0).values)
    return torch.where(spread <= tolerance, torch.full_like(khat, -math.inf), khat)
