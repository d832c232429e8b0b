r"""Signal-to-noise ratio of a gradient estimator, per parameter, grouped into model and guide parameters.

For ``S`` independent draws ``g^(1..S)`` of an estimator's gradient on a fixed batch, every parameter element gets::

    mean = (1/S) sum_s g^(s),    variance = 1/(S-1) sum_s (g^(s) - mean)^2,    SNR = |mean| / sqrt(variance)

(Rainforth et al. 2018, eq. 3, with the expectation and standard deviation estimated from the draws). A group's
SNR is the average of its elements' SNRs. Rainforth et al. show that the guide's SNR under IWAE falls as
``O(1/sqrt(K))`` while the model's rises as ``O(sqrt(K))``; Tucker et al.'s DReG gradient restores ``O(sqrt(K))``
for the guide.

References:
    [1] T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood, Y. W. Teh. Tighter Variational
        Bounds are Not Necessarily Better. ICML 2018.
    [2] G. Tucker, D. Lawson, S. Gu, C. J. Maddison. Doubly Reparameterized Gradient Estimators for Monte Carlo
        Objectives. ICLR 2019.
"""

from dataclasses import dataclass
from typing import Dict

import pyro
import pyro.poutine as poutine
import torch

from inference.importance import guide_and_model_traces
from inference.parameters import unconstrained_leaf

GROUPS = ("model", "guide", "shared")


@dataclass
class GradientSNR:
    """Per-parameter gradient statistics over ``num_draws`` draws (tensors shaped like the unconstrained parameter)."""

    mean: Dict[str, torch.Tensor]
    variance: Dict[str, torch.Tensor]
    group: Dict[str, str]
    num_draws: int

    @property
    def snr(self) -> Dict[str, torch.Tensor]:
        """``|mean| / sd`` per element: ``inf`` where the variance is zero and the mean is not, ``nan`` for 0 / 0."""
        return {name: self.mean[name].abs() / self.variance[name].sqrt() for name in self.mean}

    def names(self, group: str):
        if group not in GROUPS:
            raise ValueError(f"unknown parameter group '{group}'; choose one of {', '.join(GROUPS)}")
        return [name for name, role in self.group.items() if role == group]

    def group_snr(self, group: str) -> float:
        """Average element SNR over the group's parameters (``nan`` if the group is empty)."""
        return _flat(self.snr, self.names(group)).nanmean().item()

    def group_variance(self, group: str) -> float:
        """Average element variance over the group's parameters."""
        return _flat(self.variance, self.names(group)).mean().item()

    def mean_stderr(self, name: str) -> torch.Tensor:
        """Standard error of :attr:`mean` for parameter ``name``: ``sd / sqrt(num_draws)``."""
        return (self.variance[name] / self.num_draws).sqrt()

    def summary(self) -> Dict[str, Dict[str, float]]:
        """``{group: {"snr": ..., "variance": ..., "num_elements": ...}}`` for each non-empty group."""
        return {
            group: {
                "snr": self.group_snr(group),
                "variance": self.group_variance(group),
                "num_elements": sum(self.mean[name].numel() for name in self.names(group)),
            }
            for group in GROUPS
            if self.names(group)
        }


def _flat(values, names):
    if not names:
        return torch.tensor(float("nan"))
    return torch.cat([values[name].reshape(-1) for name in names])


def parameter_groups(model, guide, *args, **kwargs):
    """``{name: (group, unconstrained tensor)}`` for every parameter that ``model`` or ``guide`` reads.

    A parameter read only by the guide is ``"guide"``, only by the model ``"model"``, by both ``"shared"``.
    """
    with poutine.block():
        guide_trace, model_trace = guide_and_model_traces(model, guide, *args, **kwargs)

    def params(trace):
        return {
            name: unconstrained_leaf(site["value"]) for name, site in trace.nodes.items() if site["type"] == "param"
        }

    in_guide, in_model = params(guide_trace), params(model_trace)
    roles = {}
    for name, value in {**in_model, **in_guide}.items():
        group = "shared" if name in in_guide and name in in_model else ("guide" if name in in_guide else "model")
        roles[name] = (group, value)
    return roles


def gradient_snr(estimator, model, guide, *args, num_draws=100, seed=None, **kwargs) -> GradientSNR:
    """Draw the gradient of ``estimator`` (a :class:`pyro.infer.ELBO`) ``num_draws`` times on the same arguments.

    Each draw zeroes the parameters' ``.grad`` and calls ``estimator.loss_and_grads(model, guide, *args,
    **kwargs)``; the parameters themselves do not change. Statistics are computed in float64.

    :param int num_draws: ``S >= 2``; the SNR's relative standard error is roughly ``1 / sqrt(2 S)``.
    :param int seed: if given, ``pyro.set_rng_seed(seed)`` first.
    :returns: :class:`GradientSNR`.
    """
    if num_draws < 2:
        raise ValueError(f"num_draws must be at least 2 to estimate a variance, got {num_draws}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    roles = parameter_groups(model, guide, *args, **kwargs)
    if not roles:
        raise ValueError("model and guide read no parameters (pyro.param or PyroModule), so there is no gradient")
    draws = {name: [] for name in roles}
    for _ in range(num_draws):
        for _, value in roles.values():
            value.grad = None
        estimator.loss_and_grads(model, guide, *args, **kwargs)
        for name, (_, value) in roles.items():
            grad = value.grad if value.grad is not None else torch.zeros_like(value)
            draws[name].append(grad.detach().to(torch.float64))
    for _, value in roles.values():
        value.grad = None
    draws = {name: torch.stack(grads) for name, grads in draws.items()}
    mean = {name: grads.mean(0) for name, grads in draws.items()}
    variance = {name: grads.var(0, unbiased=True) for name, grads in draws.items()}
    return GradientSNR(mean, variance, {name: group for name, (group, _) in roles.items()}, num_draws)
