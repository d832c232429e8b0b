"""Which tensors a Pyro program learns: the leaves behind its ``param`` sites, wherever they are kept.

A ``pyro.param`` site's value is a constrained view of an unconstrained leaf tensor in the global param store
(``value.unconstrained()``); a PyroModule with ``module_local_params`` on reads its own ``nn.Parameter`` instead,
and that parameter is the leaf. Optimizers and gradient diagnostics want the leaves.
"""

import pyro.poutine as poutine
import torch

from inference.importance import forked_rng


def unconstrained_leaf(value: torch.Tensor) -> torch.Tensor:
    """The leaf tensor an optimizer updates for a ``param`` site's ``value``."""
    unconstrained = getattr(value, "unconstrained", None)
    return unconstrained() if unconstrained is not None else value


def params_read_by(fn, *args, **kwargs) -> dict:
    """``{site name: leaf tensor}`` for every ``param`` site that running ``fn(*args, **kwargs)`` reads.

    ``fn`` runs once under a parameter-only trace, with no gradients and its random draws undone afterwards.
    """
    with forked_rng(), torch.no_grad():
        with poutine.block(), poutine.trace(param_only=True) as tracer:
            fn(*args, **kwargs)
    return {name: unconstrained_leaf(site["value"]) for name, site in tracer.trace.nodes.items()}
