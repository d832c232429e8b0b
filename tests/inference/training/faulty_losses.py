"""Pyro's ``Trace_ELBO`` with a fault on chosen calls, for the trainer's tests of non-finite steps."""

import math

import torch
from pyro.infer import Trace_ELBO


class FlakyLoss(Trace_ELBO):
    """``Trace_ELBO`` whose loss (and so its gradient) is NaN on the chosen calls, counted from 1."""

    def __init__(self, *nan_on_calls):
        super().__init__()
        self.calls = 0
        self.nan_on_calls = set(nan_on_calls)

    def fault(self, loss):
        return loss * math.nan

    def differentiable_loss(self, model, guide, *args, **kwargs):
        self.calls += 1
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        return self.fault(loss) if self.calls in self.nan_on_calls else loss


class _NaNGradient(torch.autograd.Function):
    """The identity, whose gradient is NaN."""

    @staticmethod
    def forward(ctx, value):
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


class FlakyGradient(FlakyLoss):
    """A finite loss whose gradient is NaN on the chosen calls."""

    def fault(self, loss):
        return _NaNGradient.apply(loss)
