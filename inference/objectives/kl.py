r"""Closed-form KL divergences that ``torch.distributions`` lacks, added with ``@register_kl`` (looked up by type).

A multivariate normal guide ``q = N(mu, S)`` (full or low rank) against a diagonal normal prior
``p = prod_u N(m_u, s_u^2)`` (an ``Independent`` ``Normal`` over one event dimension)::

    KL(q || p) = 1/2 [ tr(D^-1 S) + (m - mu)^T D^-1 (m - mu) - d + log det D - log det S ],   D = diag(s^2)

so ``elbo-analytic-kl`` applies to the low-rank and full-rank guides with the normal priors.
"""

import math

import torch
from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal, register_kl


def _diagonal_normal(p):
    return isinstance(p, Independent) and isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1


def kl_multivariate_normal_diagonal_normal(q, p) -> torch.Tensor:
    """``KL(q || p)`` for a (low-rank) multivariate normal ``q`` and a diagonal normal ``p``."""
    if not _diagonal_normal(p):
        raise NotImplementedError
    variance = p.base_dist.scale.pow(2)
    d = q.event_shape[-1]
    trace = (q.variance / variance).sum(-1)
    mahalanobis = ((p.base_dist.loc - q.loc).pow(2) / variance).sum(-1)
    log_det_p = variance.log().sum(-1)
    # log det S from q's entropy, which torch computes from its own factorization (stable for low rank)
    log_det_q = 2 * q.entropy() - d * (1 + math.log(2 * math.pi))
    return 0.5 * (trace + mahalanobis - d + log_det_p - log_det_q)


register_kl(MultivariateNormal, Independent)(kl_multivariate_normal_diagonal_normal)
register_kl(LowRankMultivariateNormal, Independent)(kl_multivariate_normal_diagonal_normal)
