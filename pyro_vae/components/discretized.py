r"""Likelihoods on 8-bit pixels ``x in {0, 1, ..., 255}``: masses, not densities, so log p(x) is comparable across
them and convertible to bits per dimension, ``-log p(x) / (D log 2)``.

* ``discretized-logistic``: the mass of a logistic ``(mu, s)`` on the bin ``[k - 1/2, k + 1/2]``, with the edge
  bins reaching to ``-inf`` and ``+inf`` (Salimans et al. 2017)::

      P(k) = sigmoid((k + 1/2 - mu) / s) - sigmoid((k - 1/2 - mu) / s)

* ``discretized-logistic-mixture``: a mixture of ``num_components`` of those per pixel (PixelCNN++).
* ``categorical-256``: a free 256-way categorical per pixel.

Each declares ``data_representation = "8-bit"``: the data pipeline feeds it grey levels ``0..255``.

References:
    T. Salimans, A. Karpathy, X. Chen, D. P. Kingma. PixelCNN++: Improving the PixelCNN with Discretized Logistic
    Mixture Likelihood and Other Modifications. ICLR 2017.
"""

import math

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_vae.components.likelihoods import LIKELIHOODS, Likelihood

NUM_LEVELS = 256


def _log_sigmoid_difference(upper, lower):
    """``log(sigmoid(upper) - sigmoid(lower))`` for ``upper > lower``, stable in both tails."""
    # sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a))
    return F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))


def discretized_logistic_log_mass(x, loc, log_scale):
    """``log P(x)`` of the discretized logistic at integer ``x`` in ``[0, 255]``, elementwise."""
    inv_scale = torch.exp(-log_scale)
    upper = torch.where(x >= NUM_LEVELS - 1, torch.full_like(x, math.inf), (x + 0.5 - loc) * inv_scale)
    lower = torch.where(x <= 0, torch.full_like(x, -math.inf), (x - 0.5 - loc) * inv_scale)
    inner = _log_sigmoid_difference(upper.clamp(max=1e30), lower.clamp(min=-1e30))
    edge_high = F.logsigmoid(-lower)  # P(x = 255) = 1 - sigmoid(lower)
    edge_low = F.logsigmoid(upper)  # P(x = 0) = sigmoid(upper)
    return torch.where(x >= NUM_LEVELS - 1, edge_high, torch.where(x <= 0, edge_low, inner))


class DiscretizedLogistic(TorchDistribution):
    """A (mixture of) discretized logistic(s) on ``{0, ..., 255}`` per element; ``logits`` over the last
    dimension of ``loc`` and ``log_scale`` mix the components (one component when ``logits`` is None)."""

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.integer_interval(0, NUM_LEVELS - 1)
    has_rsample = False

    def __init__(self, loc, log_scale, logits=None, validate_args=None):
        self.loc, self.log_scale, self.logits = loc, log_scale, logits
        batch_shape = loc.shape if logits is None else loc.shape[:-1]
        super().__init__(batch_shape, validate_args=validate_args)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        if self.logits is None:
            return discretized_logistic_log_mass(value, self.loc, self.log_scale)
        per_component = discretized_logistic_log_mass(value.unsqueeze(-1), self.loc, self.log_scale)
        return torch.logsumexp(F.log_softmax(self.logits, -1) + per_component, -1)

    @torch.no_grad()
    def sample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        loc, log_scale = self.loc, self.log_scale
        if self.logits is not None:
            index = dist.Categorical(logits=self.logits).sample(sample_shape).unsqueeze(-1)
            shape = index.shape[:-1] + loc.shape[-1:]
            loc = loc.expand(shape).gather(-1, index).squeeze(-1)
            log_scale = log_scale.expand(shape).gather(-1, index).squeeze(-1)
        else:
            shape = self._extended_shape(sample_shape)
            loc, log_scale = loc.expand(shape), log_scale.expand(shape)
        u = torch.rand_like(loc).clamp(1e-6, 1 - 1e-6)
        return (loc + log_scale.exp() * (torch.log(u) - torch.log1p(-u))).round().clamp(0, NUM_LEVELS - 1)

    @property
    def mean(self):
        if self.logits is None:
            return self.loc.clamp(0, NUM_LEVELS - 1)
        return (F.softmax(self.logits, -1) * self.loc).sum(-1).clamp(0, NUM_LEVELS - 1)

    def expand(self, batch_shape, _instance=None):
        extra = () if self.logits is None else self.loc.shape[-1:]
        new = DiscretizedLogistic(
            self.loc.expand(tuple(batch_shape) + extra),
            self.log_scale.expand(tuple(batch_shape) + extra),
            None if self.logits is None else self.logits.expand(tuple(batch_shape) + extra),
        )
        return new


class EightBitLikelihood(Likelihood):
    """Base of the 8-bit likelihoods: data are grey levels ``0..255``."""

    data_representation = "8-bit"


@LIKELIHOODS.register("discretized-logistic")
class DiscretizedLogisticLikelihood(EightBitLikelihood):
    """``p(x | z) = prod_d DiscretizedLogistic(x_d; mu_d(z), s_d(z))`` on 8-bit pixels (Salimans et al. 2017);
    the decoder emits a location (in grey levels, around 127.5) and a log scale per pixel."""

    num_params = 2

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        loc, log_scale = decoder_output.chunk(2, dim=-1)
        return DiscretizedLogistic(127.5 + 127.5 * loc, log_scale.clamp(min=-7.0) + math.log(32.0)).to_event(1)


@LIKELIHOODS.register("discretized-logistic-mixture")
class DiscretizedLogisticMixtureLikelihood(EightBitLikelihood):
    """A mixture of ``num_components`` discretized logistics per pixel (PixelCNN++'s likelihood, here with
    independent pixels given ``z``); the decoder emits ``3 * num_components`` numbers per pixel."""

    def __init__(self, data_dim: int, num_components: int = 5):
        super().__init__(data_dim)
        if num_components < 1:
            raise ValueError(f"num_components must be a positive integer, got {num_components}")
        self.num_components = num_components
        self.num_params = 3 * num_components

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        # parameter-major: one block of data_dim values per (parameter, component)
        blocks = decoder_output.unflatten(-1, (3, self.num_components, self.data_dim)).transpose(-1, -2)
        logits, loc, log_scale = blocks.unbind(-3)
        return DiscretizedLogistic(
            127.5 + 127.5 * loc, log_scale.clamp(min=-7.0) + math.log(32.0), logits=logits
        ).to_event(1)


@LIKELIHOODS.register("categorical-256")
class Categorical256Likelihood(EightBitLikelihood):
    """``p(x | z) = prod_d Categorical(x_d; softmax(f_d(z)))`` over the 256 grey levels: no ordering assumed; the
    decoder emits 256 logits per pixel."""

    num_params = NUM_LEVELS

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        # parameter-major, like every decoder output: level l's logits for all pixels are one block
        logits = decoder_output.reshape(*decoder_output.shape[:-1], NUM_LEVELS, self.data_dim).transpose(-1, -2)
        return GreyLevelCategorical(logits=logits).to_event(1)


class GreyLevelCategorical(dist.Categorical):
    """A categorical over the grey levels 0..255 whose ``mean`` is the expected grey level (for pictures)."""

    @property
    def mean(self):
        levels = torch.arange(self.probs.shape[-1], dtype=self.probs.dtype, device=self.probs.device)
        return (self.probs * levels).sum(-1)
