"""Adding your own prior and likelihood: one class and one registration line each.

Use them by name from Python, from a config file or from the command line::

    pyro-vae train --plugin examples/custom_components.py --prior wide-normal --likelihood cauchy \
                   --dataset linear-gaussian --out runs/custom
    pyro-vae evaluate runs/custom --plugin examples/custom_components.py   # a run folder never loads it itself

or run this file, which trains a small VAE with both through the Python API and prints its test log p(x).
"""

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.components import LIKELIHOODS, PRIORS, Likelihood, Prior


@PRIORS.register("wide-normal")
class WideNormalPrior(Prior):
    """``p(z) = N(0, scale^2 I)``: a standard normal prior with another width."""

    def __init__(self, latent_dim: int, scale: float = 2.0):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.scale = scale

    def forward(self):
        return dist.Normal(self.loc, self.scale).to_event(1)


@LIKELIHOODS.register("cauchy")
class CauchyLikelihood(Likelihood):
    """``p(x | z) = prod_d Cauchy(x_d; f_d(z), s)`` with one learned scale ``s``: robust to outlying values."""

    def __init__(self, data_dim: int, init_scale: float = 0.5):
        super().__init__(data_dim)
        self.raw_scale = nn.Parameter(torch.tensor(init_scale).expm1().log())

    def forward(self, decoder_output):
        return dist.Cauchy(decoder_output, nn.functional.softplus(self.raw_scale)).to_event(1)


def main(epochs=5, progress=True):
    import tempfile

    from pyro_vae.config import RunConfig, apply_overrides, load_plugins
    from pyro_vae.runs import evaluate_run, train_run

    load_plugins([__file__])  # configurations record plugins; only naming one here runs it
    overrides = [
        ("plugins", [__file__]),
        ("data.name", "linear-gaussian"),
        ("data.num_train", 2000),
        ("data.num_test", 200),
        ("model.latent_dim", 2),
        ("model.prior", {"name": "wide-normal", "options": {"scale": 1.5}}),
        ("model.likelihood", "cauchy"),
        ("train.epochs", epochs),
        ("device", "cpu"),
    ]
    config = apply_overrides(RunConfig(), overrides)
    with tempfile.TemporaryDirectory() as folder:
        train_run(config, folder, progress=progress)
        report = evaluate_run(folder, method_options={"num_samples": 500}, posterior_examples=(), progress=progress)
    print(f"wide-normal prior, Cauchy likelihood: test log p(x) {report['log_px']:.3f} nats per example")
    return report


if __name__ == "__main__":
    main()
