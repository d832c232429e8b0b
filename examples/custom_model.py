"""Any Pyro model/guide pair works with the :mod:`inference` tools: here a factor-analysis model with a learned
amortized guide, trained under three estimators and judged against its exact log p(x).

    python examples/custom_model.py

The model is linear-Gaussian, so log p(x) is known in closed form and the printed gaps are exact.
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI
from pyro.nn import PyroModule, pyro_method
from torch import nn

import inference


class FactorAnalysis(PyroModule):
    """``z ~ N(0, I_2)``, ``x | z ~ N(W z + b, diag(s^2))``, with a linear amortized guide ``q(z | x)``."""

    def __init__(self, data_dim, latent_dim, num_data):
        super().__init__()
        self.num_data = num_data
        self.latent_dim = latent_dim
        self.weight = nn.Parameter(0.1 * torch.randn(data_dim, latent_dim))
        self.bias = nn.Parameter(torch.zeros(data_dim))
        self.log_noise = nn.Parameter(torch.zeros(data_dim))
        self.encoder = PyroModule[nn.Linear](data_dim, 2 * latent_dim)

    def plate(self, x):
        return pyro.plate("data", size=self.num_data, subsample=torch.arange(len(x)))

    @pyro_method  # so SVI sees the module's parameters when model/guide run outside forward()
    def model(self, x):
        with self.plate(x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.weight.T + self.bias, self.log_noise.exp()).to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        with self.plate(x):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw_scale) + 1e-4).to_event(1))

    def exact_log_px(self, x):
        cov = self.weight @ self.weight.T + torch.diag(self.log_noise.exp() ** 2)
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov).log_prob(x)


def main(steps=1000, num_data=2000, seed=0, verbose=True):
    """Train under each estimator; return ``{name: (exact mean log p(x), LogMarginalLikelihood)}``."""
    pyro.set_rng_seed(seed)
    true_weight = torch.randn(6, 2)
    x = torch.randn(num_data, 2) @ true_weight.T + 0.3 * torch.randn(num_data, 6)
    results = {}
    if verbose:
        print(f"{'estimator':<12} {'exact log p(x)':>15} {'IS, K=1000':>12} {'ELBO':>10}")
    for name, options in [("elbo", {}), ("iwae", {"num_particles": 10}), ("iwae-dreg", {"num_particles": 10})]:
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        fa = FactorAnalysis(6, 2, num_data)
        svi = SVI(fa.model, fa.guide, pyro.optim.Adam({"lr": 1e-2}), inference.estimator(name, **options))
        for _ in range(steps):
            idx = torch.randint(num_data, (100,))
            svi.step(x[idx])
        with torch.no_grad():
            exact = fa.exact_log_px(x).mean().item()
        result = inference.log_marginal_likelihood(fa.model, fa.guide, x, num_samples=1000)
        results[name] = (exact, result)
        if verbose:
            print(f"{name:<12} {exact:>15.3f} {result.mean:>12.3f} {result.elbo_mean:>10.3f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="SVI steps per estimator")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    main(steps=args.steps, seed=args.seed)
