"""Likelihoods p(x | z), chosen by name from :data:`LIKELIHOODS`.

A likelihood is a :class:`~pyro_vae.components.base.Likelihood` built as ``Likelihood(data_dim=..., **options)``.
Its ``num_params`` attribute says how many decoder outputs it needs per data dimension; ``forward(decoder_output)``
maps ``[..., num_params * data_dim]`` to a distribution with ``event_shape == (data_dim,)``. Its
``data_representation`` says how it reads the data (``"binarized"``: observations must be 0/1, and the data pipeline
binarizes grey levels, dynamically for training and once with a fixed seed for evaluation).
"""

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

from inference.registry import Registry
from pyro_vae.components.base import Likelihood
from pyro_vae.components.guides import inverse_softplus, positive_scale

LIKELIHOODS = Registry("likelihood", base=Likelihood)


class BernoulliVector(dist.Independent):
    """``Bernoulli(logits).to_event(1)`` whose ``log_prob`` is computed in a few vectorized passes over the logits::

        log p(x) = sum_d x_d l_d - softplus(l_d)

    (a product summed, and :func:`sum_softplus`) instead of a binary cross-entropy per entry, its negation and a
    sum: evaluation scores ``K x N x D`` logits at a time, and these passes, not the decoder's matrix products,
    took most of its time (``benchmarks/log_px_speed.py``). Everything else is
    :class:`~pyro.distributions.Independent`'s."""

    def __init__(self, logits: torch.Tensor, validate_args=None):
        super().__init__(dist.Bernoulli(logits=logits, validate_args=validate_args), 1, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        logits = self.base_dist.logits.expand(torch.Size(batch_shape) + self.event_shape)
        return BernoulliVector(logits, validate_args=self._validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.base_dist.logits
        return (logits * value).sum(-1) - sum_softplus(logits)


def sum_softplus(logits: torch.Tensor) -> torch.Tensor:
    """``sum_d softplus(l_d) = sum_d log(1 + exp(l_d))`` over the last dimension, in vectorized passes.

    ``torch``'s own ``softplus`` is not vectorized on CPU (``BENCHMARKS.md``, under ``log_px_speed.py``). Here the
    logits are capped at ``T = min(40, log(finfo.max) - 2)``, so that ``exp`` cannot overflow, and the excess is
    added back: ``log(1 + exp(min(l, T))) + max(l - T, 0)``, exact up to ``log(1 + exp(-T))`` per entry (4e-18 in
    float32 and float64). Where ``exp(l)`` is under half an ulp of 1 the entry counts as 0 instead of ``exp(l)``,
    an error of at most ``finfo.eps / 2`` per entry. The passes reuse one buffer, and the gradient is
    ``sigmoid(l)`` (:class:`_SumSoftplus`: one pass back instead of one per step). Off the CPU, where torch's
    softplus is one fused kernel, it is :func:`fused_sum_softplus`."""
    if logits.device.type != "cpu":
        return fused_sum_softplus(logits)
    if torch.is_grad_enabled() and logits.requires_grad:
        return _SumSoftplus.apply(logits)
    return _sum_softplus_values(logits)


def softplus_cap(dtype: torch.dtype) -> float:
    """``T = min(40, log(finfo.max) - 2)``: ``exp(T)`` does not overflow, and ``softplus(l) = l`` above it up to
    ``log(1 + exp(-T))``."""
    return min(40.0, math.log(torch.finfo(dtype).max) - 2)


def fused_sum_softplus(logits: torch.Tensor) -> torch.Tensor:
    """:func:`sum_softplus` by ``torch``'s softplus kernel with threshold ``T`` (:func:`softplus_cap`), the same
    error bound: on a GPU one fused pass, and no test of the logits read back to the host as the CPU path's cap
    needs."""
    return torch.nn.functional.softplus(logits, threshold=softplus_cap(logits.dtype)).sum(-1)


def _sum_softplus_values(logits: torch.Tensor) -> torch.Tensor:
    cap = softplus_cap(logits.dtype)
    if logits.numel() and logits.max() > cap:
        capped = logits.clamp(max=cap)
        excess = (logits - capped).sum(-1)  # before the in-place passes overwrite capped
        return capped.exp_().add_(1).log_().sum(-1) + excess
    return logits.exp().add_(1).log_().sum(-1)  # logits nearly always stay below the cap: no capping passes


class _SumSoftplus(torch.autograd.Function):
    """:func:`sum_softplus` with its gradient ``d/dl_d sum softplus = sigmoid(l_d)`` written out, so that autograd
    keeps the logits alone, not the buffers of every pass."""

    @staticmethod
    def forward(ctx, logits):
        ctx.save_for_backward(logits)
        return _sum_softplus_values(logits)

    @staticmethod
    def backward(ctx, grad):
        (logits,) = ctx.saved_tensors
        return torch.sigmoid(logits) * grad.unsqueeze(-1)


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """``p(x | z) = prod_d Bernoulli(x_d; sigmoid(f_d(z)))`` on binary data; the decoder emits logits."""

    data_representation = "binarized"

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        return BernoulliVector(decoder_output)


class ScaleLikelihood(Likelihood):
    """A location-scale likelihood ``p(x | z) = prod_d D(x_d; f_d(z), s_d)`` whose decoder gives the location.

    ``scale`` is a positive number (a fixed ``s`` for every dimension), ``"learned"`` (one ``s_d`` per data
    dimension) or ``"learned-global"`` (one ``s`` for all), learned as ``softplus(rho) + 1e-3`` from
    ``init_scale``. Subclasses name the family ``D`` in :attr:`family`.
    """

    family = None

    def __init__(self, data_dim: int, scale="learned", init_scale: float = 0.1):
        super().__init__(data_dim)
        self.fixed_scale = None
        if scale in ("learned", "learned-global"):
            init = inverse_softplus(init_scale - 1e-3)  # so that the scale starts at init_scale
            self.raw_scale = nn.Parameter(torch.full((data_dim,) if scale == "learned" else (1,), init))
            return
        try:
            value = float(scale)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"the {type(self).__name__}'s scale must be a positive number, 'learned' or 'learned-global'; "
                f"got {scale!r}"
            )
        self.fixed_scale = value

    def scale(self) -> torch.Tensor:
        if self.fixed_scale is not None:
            return torch.tensor(self.fixed_scale)
        return positive_scale(self.raw_scale, 1e-3)

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        scale = self.scale().to(decoder_output).expand(decoder_output.shape[-1:])
        return self.family(decoder_output, scale).to_event(1)


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(ScaleLikelihood):
    """``p(x | z) = N(x; f(z), diag(s^2))`` on real-valued data: an L2 reconstruction term plus a rate; scale
    options as in :class:`ScaleLikelihood`."""

    family = dist.Normal


@LIKELIHOODS.register("laplace")
class LaplaceLikelihood(ScaleLikelihood):
    """``p(x | z) = prod_d Laplace(x_d; f_d(z), s_d)`` on real-valued data: an L1 reconstruction term, sharper
    than the Gaussian's L2; scale options as in :class:`ScaleLikelihood`."""

    family = dist.Laplace


@LIKELIHOODS.register("continuous-bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    """``p(x | z) = prod_d CB(x_d; sigmoid(f_d(z)))`` on grey levels in ``[0, 1]`` (Loaiza-Ganem & Cunningham
    2019): the Bernoulli mass made a density on ``[0, 1]`` by its normalizing constant ``C(lambda)``, computed by
    torch stably near ``lambda = 1/2``. The data are not binarized.

    References:
        G. Loaiza-Ganem, J. P. Cunningham. The continuous Bernoulli: fixing a pervasive error in variational
        autoencoders. NeurIPS 2019.
    """

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=decoder_output).to_event(1)


@LIKELIHOODS.register("beta")
class BetaLikelihood(Likelihood):
    """``p(x | z) = prod_d Beta(x_d; a_d(z), b_d(z))`` on values strictly inside ``(0, 1)``, with
    ``a, b = softplus(.) + 1e-3`` from ``2 * data_dim`` decoder outputs. Pixel data with exact 0s and 1s lie
    outside its support: squeeze them into ``(0, 1)`` first, or use ``continuous-bernoulli``."""

    num_params = 2

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        a, b = (positive_scale(part, 1e-3) for part in decoder_output.chunk(2, dim=-1))
        return OpenBeta(a, b).to_event(1)


class _OpenUnitInterval(constraints.Constraint):
    """``0 < x < 1``."""

    def check(self, value):
        return (value > 0) & (value < 1)

    def __repr__(self):
        return "OpenUnitInterval()"


class OpenBeta(dist.Beta):
    """The Beta distribution with its support stated as the open interval ``(0, 1)``: its density at 0 or 1 is
    0 or infinite, so data there are refused rather than scored."""

    support = _OpenUnitInterval()
