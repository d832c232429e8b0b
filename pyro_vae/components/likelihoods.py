"""Likelihoods p(x | z), chosen by name from :data:`LIKELIHOODS`.

A likelihood is a ``PyroModule`` built as ``Likelihood(data_dim=..., **options)``. Its ``num_params`` attribute says
how many decoder outputs it needs per data dimension; ``forward(decoder_output)`` maps ``[..., num_params * data_dim]``
to a distribution with ``event_shape == (data_dim,)``. ``binary_data`` says whether observations must be 0/1 (the
data pipeline then binarizes grey levels: dynamically for training, once with a fixed seed for evaluation).
"""

import math

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from inference.registry import Registry

LIKELIHOODS = Registry("likelihood")


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(PyroModule):
    """``p(x | z) = prod_d Bernoulli(x_d; sigmoid(f_d(z)))`` on binary data; the decoder emits logits."""

    num_params = 1
    binary_data = True

    def __init__(self, data_dim: int):
        super().__init__()
        self.data_dim = data_dim

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=decoder_output).to_event(1)


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(PyroModule):
    """``p(x | z) = N(x; f(z), diag(s^2))`` with the decoder giving the mean ``f(z)``.

    ``scale`` is either a positive number (a fixed ``s`` for every dimension) or ``"learned"`` (one ``s_d`` per data
    dimension, a parameter ``softplus(rho_d) + 1e-3`` trained with the model and initialised at ``init_scale``).
    """

    num_params = 1
    binary_data = False

    def __init__(self, data_dim: int, scale="learned", init_scale: float = 0.1):
        super().__init__()
        self.data_dim = data_dim
        if scale == "learned":
            init = math.log(math.expm1(init_scale - 1e-3))  # inverse softplus, so the scale starts at init_scale
            self.raw_scale = nn.Parameter(torch.full((data_dim,), init))
            self.fixed_scale = None
        else:
            try:
                scale = float(scale)
            except (TypeError, ValueError):
                raise ValueError(
                    f"the Gaussian likelihood's scale must be a positive number or 'learned', got {scale!r}"
                ) from None
            if not scale > 0:
                raise ValueError(f"the Gaussian likelihood's scale must be positive or 'learned', got {scale}")
            self.fixed_scale = scale

    def scale(self) -> torch.Tensor:
        if self.fixed_scale is not None:
            return torch.tensor(self.fixed_scale)
        return nn.functional.softplus(self.raw_scale) + 1e-3

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        scale = self.scale().to(decoder_output)
        return dist.Normal(decoder_output, scale).to_event(1)
