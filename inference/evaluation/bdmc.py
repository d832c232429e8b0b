"""Bidirectional Monte Carlo (BDMC): a sandwich around log p(x) on data simulated from the model.

For a pair ``(x_n, z_n) ~ p(x, z)`` simulated from the model, ``z_n`` is an exact draw from ``p(z | x_n)``. Then

* forward AIS (:func:`~inference.ais.annealed_importance_sampling` from ``q_0`` to the posterior) gives
  ``E[w] = p(x_n)``, so ``L_n = log (1/C) sum_c w_c`` is a stochastic lower bound: ``E[L_n] <= log p(x_n)``;
* reverse AIS started at ``z_n`` and annealed from the posterior back to ``q_0`` gives ``E[w'] = 1 / p(x_n)``, so
  ``U_n = -log (1/C) sum_c w'_c`` is a stochastic upper bound: ``E[U_n] >= log p(x_n)``.

The gap ``U_n - L_n`` bounds the error of either estimate on such data and shrinks to 0 as the number of
intermediate distributions grows (Grosse et al. 2015; used to validate decoder-based models' log-likelihood
estimates by Wu et al. 2017).

References:
    R. B. Grosse, Z. Ghahramani, R. P. Adams. Sandwiching the marginal likelihood using bidirectional Monte Carlo.
    arXiv:1511.02543, 2015.
    Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse. On the quantitative analysis of decoder-based generative
    models. ICLR 2017.
"""

import math
from dataclasses import dataclass
from typing import Dict, NamedTuple

import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites

from inference.evaluation.ais import AISResult, annealed_importance_sampling


class SimulatedData(NamedTuple):
    """Values of one draw from the model's joint: ``observed`` and ``latents`` keyed by site name."""

    observed: Dict[str, torch.Tensor]
    latents: Dict[str, torch.Tensor]


@torch.no_grad()
def simulate_from_model(model, *args, **kwargs) -> SimulatedData:
    """Draw ``(x, z) ~ p(x, z)`` by running ``model`` with its observations ignored (:func:`poutine.uncondition`).

    The arguments only fix shapes (e.g. the batch the data plate runs over). Pass the simulated observations back
    to the model and guide as their data, e.g. ``x = simulate_from_model(model, x_like).observed["x"]``.
    """
    with poutine.block():
        trace = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
        observed_names = {
            name
            for name, site in poutine.trace(model).get_trace(*args, **kwargs).nodes.items()
            if site["type"] == "sample" and site["is_observed"]
        }
    observed, latents = {}, {}
    for name, site in prune_subsample_sites(trace).nodes.items():
        if site["type"] == "sample" and not site["infer"].get("is_auxiliary"):
            (observed if name in observed_names else latents)[name] = site["value"]
    return SimulatedData(observed, latents)


@dataclass
class BDMCResult:
    """Per-example stochastic lower and upper bounds on ``log p(x_n)`` from forward and reverse AIS."""

    lower: torch.Tensor
    upper: torch.Tensor
    forward: AISResult
    reverse: AISResult

    @property
    def gap(self) -> torch.Tensor:
        """``upper - lower`` per example."""
        return self.upper - self.lower

    def summary(self) -> dict:
        """Plain floats: mean bounds over examples (nats per example), their gap and its standard error."""
        n = self.lower.numel()
        gap_stderr = (self.gap.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else float("nan")
        return {
            "log_px_lower": self.lower.mean().item(),
            "log_px_upper": self.upper.mean().item(),
            "gap": self.gap.mean().item(),
            "gap_stderr": gap_stderr,
            "num_steps": len(self.forward.betas) - 1,
            "num_chains": self.forward.num_chains,
            "num_examples": n,
        }


def bdmc(model, guide, *args, latents, num_steps=100, num_chains=16, **options) -> BDMCResult:
    """Sandwich ``log p(x_n)`` between forward and reverse AIS, for data simulated from ``model``.

    :param model: a Pyro model (see :func:`~inference.ais.annealed_importance_sampling`).
    :param guide: its guide, the AIS proposal ``q_0`` unless ``proposal="prior"`` is passed; may be ``None``
        with ``proposal="prior"``.
    :param args: the model's arguments holding the *simulated* observations (see :func:`simulate_from_model`).
    :param dict latents: the latents that generated them, ``{site: value}``: the reverse chains' exact start.
    :param int num_steps: intermediate distributions of both runs.
    :param int num_chains: chains per data point of both runs.
    :param options: further options of :func:`~inference.ais.annealed_importance_sampling` (``proposal``,
        ``num_leapfrog_steps``, ``step_size``, ``schedule``, ``data_plate``, ...) and the model's keyword arguments.
    :returns: :class:`BDMCResult`.
    """
    if "initial_latents" in options:
        raise ValueError("pass the exact latents as latents=..., not initial_latents")
    forward = annealed_importance_sampling(model, guide, *args, num_steps=num_steps, num_chains=num_chains, **options)
    reverse = annealed_importance_sampling(
        model, guide, *args, num_steps=num_steps, num_chains=num_chains, initial_latents=latents, **options
    )
    return BDMCResult(lower=forward.log_px, upper=reverse.log_px_upper, forward=forward, reverse=reverse)
