"""Priors p(z), chosen by name from :data:`PRIORS`.

A prior is a ``PyroModule`` built as ``Prior(latent_dim=...)`` whose ``forward()`` returns a distribution with
``batch_shape == ()`` and ``event_shape == (latent_dim,)``; the VAE's data plate broadcasts it over examples (and
the estimators' particle plate over particles). Learnable priors hold their parameters as module parameters.
"""

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from inference.registry import Registry

PRIORS = Registry("prior")


@PRIORS.register("normal")
class StandardNormalPrior(PyroModule):
    """``p(z) = N(0, I_latent_dim)``."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, 1.0).to_event(1)
