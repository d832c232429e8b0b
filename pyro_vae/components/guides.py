"""Guide families q(z | x), chosen by name from :data:`GUIDES`.

A guide family is a :class:`~pyro_vae.components.base.GuideFamily` built as ``Guide(latent_dim=..., **options)``.
Its ``num_params(latent_dim)`` says how many encoder outputs it needs per example (for a low-rank guide it depends
on the rank); ``forward(encoder_output)`` maps ``[..., num_params]`` to a distribution with ``event_shape ==
(latent_dim,)``."""

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from inference.registry import Registry
from pyro_vae.components.base import GuideFamily

GUIDES = Registry("guide", base=GuideFamily)


def positive_scale(raw: torch.Tensor, min_scale: float = 1e-4) -> torch.Tensor:
    """``softplus(raw) + min_scale``: never zero and never overflows, unlike ``exp(raw)``.

    ``softplus`` grows linearly for large inputs and is computed stably by torch, so an encoder that emits a huge
    value gives a large finite scale rather than ``inf``, and a very negative one gives ``min_scale``, not 0.
    """
    return F.softplus(raw) + min_scale


def inverse_softplus(value: float) -> float:
    """``log(exp(value) - 1)``: the raw number whose softplus is ``value`` (to start a learned scale at a value)."""
    return math.log(math.expm1(value))


@GUIDES.register("diagonal-normal")
class DiagonalNormalGuide(GuideFamily):
    """``q(z | x) = N(mu(x), diag(sigma(x)^2))`` with ``sigma = softplus(.) + min_scale`` (see
    :func:`positive_scale`). The encoder emits ``2 * latent_dim`` numbers: locations, then raw scales."""

    def __init__(self, latent_dim: int, min_scale: float = 1e-4):
        super().__init__()
        if min_scale <= 0:
            raise ValueError(f"min_scale must be positive so the guide's scale is never zero, got {min_scale}")
        self.latent_dim = latent_dim
        self.min_scale = min_scale

    @staticmethod
    def num_params(latent_dim: int) -> int:
        return 2 * latent_dim

    def forward(self, encoder_output: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = encoder_output.split(self.latent_dim, dim=-1)
        return dist.Normal(loc, positive_scale(raw_scale, self.min_scale)).to_event(1)


@GUIDES.register("delta")
class DeltaGuide(GuideFamily):
    """``q(z | x) = delta(z - mu(x))``: a deterministic encoder. With it the ELBO becomes ``log p(x | mu(x)) +
    log p(mu(x))``, a plain autoencoder with a prior penalty on its codes (the hard-EM / MAP view, the zero-entropy
    end of the rate-distortion curve). A point mass has no density to importance-sample with, so its log p(x) is
    estimated with the prior as proposal (``--method is-prior``, or ``ais`` with ``proposal = "prior"``)."""

    point_mass = True

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @staticmethod
    def num_params(latent_dim: int) -> int:
        return latent_dim

    def forward(self, encoder_output: torch.Tensor) -> dist.Distribution:
        return dist.Delta(encoder_output, event_dim=1)


@GUIDES.register("low-rank-normal")
class LowRankNormalGuide(GuideFamily):
    """``q(z | x) = N(mu(x), W(x) W(x)^T + diag(d(x)))`` with a ``rank``-column factor ``W`` and
    ``d = softplus(.) + min_scale`` (a floor that keeps the factorization well conditioned in float32):
    correlations between latent dimensions at ``O(rank * latent_dim)`` cost.
    The encoder emits ``latent_dim * (2 + rank)`` numbers: locations, raw diagonal, then the factor."""

    def __init__(self, latent_dim: int, rank: int = 2, min_scale: float = 1e-3):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank}")
        self.latent_dim = latent_dim
        self.rank = rank
        self.min_scale = min_scale

    def num_params(self, latent_dim: int) -> int:
        return latent_dim * (2 + self.rank)

    def forward(self, encoder_output: torch.Tensor) -> dist.Distribution:
        d = self.latent_dim
        loc, raw_diag, factor = encoder_output.split([d, d, d * self.rank], dim=-1)
        factor = factor.reshape(*factor.shape[:-1], d, self.rank)
        return dist.LowRankMultivariateNormal(loc, factor, positive_scale(raw_diag, self.min_scale))


@GUIDES.register("full-rank-normal")
class FullRankNormalGuide(GuideFamily):
    """``q(z | x) = N(mu(x), L(x) L(x)^T)`` with a lower-triangular Cholesky factor ``L`` whose diagonal is
    ``softplus(.) + min_scale``. The encoder emits ``latent_dim + latent_dim (latent_dim + 1) / 2`` numbers."""

    def __init__(self, latent_dim: int, min_scale: float = 1e-4):
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        rows, cols = torch.tril_indices(latent_dim, latent_dim)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def num_params(self, latent_dim: int) -> int:
        return latent_dim + latent_dim * (latent_dim + 1) // 2

    def forward(self, encoder_output: torch.Tensor) -> dist.Distribution:
        d = self.latent_dim
        loc, entries = encoder_output.split([d, d * (d + 1) // 2], dim=-1)
        tril = entries.new_zeros(*entries.shape[:-1], d, d)
        tril[..., self.rows, self.cols] = entries
        diagonal = positive_scale(tril.diagonal(dim1=-2, dim2=-1), self.min_scale)
        tril = tril.tril(-1) + torch.diag_embed(diagonal)
        return dist.MultivariateNormal(loc, scale_tril=tril)


@GUIDES.register("student-t")
class StudentTGuide(GuideFamily):
    """``q(z | x) = prod_u StudentT(z_u; df, mu_u(x), sigma_u(x))``: heavier tails than the normal, so importance
    weights against a normal prior stay bounded when the posterior is wider than ``q`` expects. ``df`` is fixed
    (default 5) or, with ``learned_df``, one learned number ``> 2`` (finite variance)."""

    def __init__(self, latent_dim: int, df: float = 5.0, learned_df: bool = False, min_scale: float = 1e-4):
        super().__init__()
        if not df > 2:
            raise ValueError(f"df must be above 2 (a finite variance), got {df}")
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        raw = torch.tensor(inverse_softplus(float(df) - 2.0))  # df = 2 + softplus(raw)
        self.raw_df = nn.Parameter(raw) if learned_df else None
        if not learned_df:
            self.register_buffer("fixed_raw_df", raw)

    @staticmethod
    def num_params(latent_dim: int) -> int:
        return 2 * latent_dim

    def forward(self, encoder_output: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = encoder_output.split(self.latent_dim, dim=-1)
        raw_df = self.raw_df if self.raw_df is not None else self.fixed_raw_df
        df = (2.0 + F.softplus(raw_df)).to(loc).expand(loc.shape)
        return dist.StudentT(df, loc, positive_scale(raw_scale, self.min_scale)).to_event(1)


@GUIDES.register("iaf")
class InverseAutoregressiveFlowGuide(GuideFamily):
    """A diagonal normal ``N(mu(x), diag(sigma(x)^2))`` followed by ``num_flows`` inverse autoregressive flows
    (Kingma et al. 2016) from ``pyro.distributions.transforms.affine_autoregressive`` with ``hidden_dims``.
    The flows are shared across data points (not conditioned on ``x``); the encoder emits ``2 * latent_dim``.

    References:
        D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling. Improved Variational
        Inference with Inverse Autoregressive Flow. NeurIPS 2016.
    """

    def __init__(self, latent_dim: int, num_flows: int = 2, hidden_dims=(64,), min_scale: float = 1e-4):
        super().__init__()
        from pyro.distributions.transforms import affine_autoregressive

        if num_flows < 1:
            raise ValueError(f"num_flows must be a positive integer, got {num_flows}")
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.flows = nn.ModuleList(
            affine_autoregressive(latent_dim, hidden_dims=list(hidden_dims)) for _ in range(num_flows)
        )

    @staticmethod
    def num_params(latent_dim: int) -> int:
        return 2 * latent_dim

    def forward(self, encoder_output: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = encoder_output.split(self.latent_dim, dim=-1)
        base = dist.Normal(loc, positive_scale(raw_scale, self.min_scale)).to_event(1)
        return dist.TransformedDistribution(base, list(self.flows))
