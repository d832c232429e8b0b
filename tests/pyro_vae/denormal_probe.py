"""A plugin for the tests: the ``denormal-probe`` network, an MLP that records, once per process and phase
(``grad``: a training step; ``no_grad``: validation and evaluation), whether denormal floats are flushed there, as
``<record>/<pid>-<phase>.json``."""

import json
import os

import torch

from inference.denormals import denormals_flushed
from pyro_vae.components import NETWORKS
from pyro_vae.components.networks import MLP

_RECORDED = set()


@NETWORKS.register("denormal-probe")
class DenormalProbe(MLP):
    def __init__(self, in_dim: int, out_dim: int, hidden_sizes=(16,), activation="tanh", record: str = ""):
        super().__init__(in_dim, out_dim, hidden_sizes, activation)
        self.record = record

    def forward(self, x):
        key = (self.record, os.getpid(), "grad" if torch.is_grad_enabled() else "no_grad")
        if self.record and key not in _RECORDED:
            _RECORDED.add(key)
            with open(os.path.join(self.record, f"{key[1]}-{key[2]}.json"), "w") as f:
                json.dump({"flushed": denormals_flushed()}, f)
        return super().forward(x)
