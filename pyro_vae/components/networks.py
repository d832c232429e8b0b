"""Amortization networks: maps from data to guide parameters (encoders) and from latents to likelihood
parameters (decoders), chosen by name from :data:`NETWORKS`.

A network builder takes ``in_dim`` and ``out_dim`` plus its own options and returns an ``nn.Module`` that maps
``[..., in_dim]`` to ``[..., out_dim]`` for any leading (particle and batch) dimensions.
"""

from typing import Sequence

from torch import nn

from inference.registry import Registry

NETWORKS = Registry("network")

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


@NETWORKS.register("mlp")
class MLP(nn.Sequential):
    """A fully connected network ``in_dim -> hidden_sizes... -> out_dim`` with ``activation`` between layers and
    a linear output (Burda et al. 2015 use ``hidden_sizes=(200, 200)`` with ``tanh``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_sizes: Sequence[int] = (200, 200), activation="tanh"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; choose one of {', '.join(sorted(ACTIVATIONS))}")
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden sizes must be positive integers, got {list(hidden_sizes)}")
        sizes = [in_dim, *hidden_sizes]
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], out_dim))
        super().__init__(*layers)
