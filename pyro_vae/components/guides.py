"""Guide families q(z | x), chosen by name from :data:`GUIDES`.

A guide family is a ``PyroModule`` built as ``Guide(latent_dim=...)``. Its static ``num_params(latent_dim)`` says how
many encoder outputs it needs per example; ``forward(encoder_output)`` maps ``[..., num_params]`` to a distribution
with ``event_shape == (latent_dim,)``.
"""

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch.nn import functional as F

from inference.registry import Registry

GUIDES = Registry("guide")


def positive_scale(raw: torch.Tensor, min_scale: float = 1e-4) -> torch.Tensor:
    """``softplus(raw) + min_scale``: never zero and never overflows, unlike ``exp(raw)``.

    ``softplus`` grows linearly for large inputs and is computed stably by torch, so an encoder that emits a huge
    value gives a large finite scale rather than ``inf``, and a very negative one gives ``min_scale``, not 0.
    """
    return F.softplus(raw) + min_scale


@GUIDES.register("diagonal-normal")
class DiagonalNormalGuide(PyroModule):
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
