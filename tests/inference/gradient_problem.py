"""A linear-Gaussian test problem whose bounds and their gradients are computed independently of Pyro.

``LinearGaussianProblem`` has learnable model parameters ``W, b`` and a full-covariance amortized guide
``q(z | x) = N(A x + c, L L^T)`` that equals the exact posterior at known parameter values. Reference gradients of
each bound are computed in plain torch (no Pyro) from a large number of draws, so the estimator tests in this
folder can compare their means within a stated number of standard errors.
"""

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.data.linear_gaussian import LinearGaussian

DATA_DIM, LATENT_DIM, SIGMA, BATCH = 3, 2, 0.7, 3
MODEL_PARAMS = ("W", "b")
GUIDE_PARAMS = ("A", "c", "L_off", "log_diag")


class LinearGaussianProblem:
    """``z ~ N(0, I)``, ``x | z ~ N(W z + b, sigma^2 I)``, guide ``N(A x + c, L L^T)``; parameters in Pyro's store."""

    def __init__(self, seed=0, num_data=BATCH):
        truth = LinearGaussian.random(DATA_DIM, LATENT_DIM, SIGMA, seed=seed)
        self.truth = truth
        self.x = truth.sample(num_data, seed=seed + 1)
        cov = truth.posterior(self.x).covariance_matrix[0]
        exact_a = cov @ truth.weight.T / SIGMA**2
        chol = torch.linalg.cholesky(cov)
        self.exact = {
            "W": truth.weight,
            "b": truth.bias,
            "A": exact_a,
            "c": -exact_a @ truth.bias,
            "L_off": chol.tril(-1),
            "log_diag": chol.diagonal().log(),
        }
        gen = torch.Generator().manual_seed(seed + 2)
        self.mismatched = {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in self.exact.items()}

    def set_params(self, values):
        pyro.clear_param_store()
        for name, value in values.items():
            pyro.param(name, value.clone())

    def leaves(self):
        return {name: pyro.param(name).unconstrained() for name in MODEL_PARAMS + GUIDE_PARAMS}

    @staticmethod
    def scale_tril(p):
        return p["L_off"].tril(-1) + torch.diag_embed(p["log_diag"].exp())

    def model(self, x, num_data=None):
        W, b = pyro.param("W"), pyro.param("b")
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, SIGMA).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        p = {name: pyro.param(name) for name in GUIDE_PARAMS}
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            pyro.sample("z", dist.MultivariateNormal(x @ p["A"].T + p["c"], scale_tril=self.scale_tril(p)))

    def log_weights(self, p, eps, kl_weight=1.0):
        """Plain-torch ``(R, K, B)`` log weights for standard normal draws ``eps`` of shape ``(R, K, B, d)``."""
        loc = self.x @ p["A"].T + p["c"]
        tril = self.scale_tril(p)
        z = loc + eps @ tril.T
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_lik = torch.distributions.Normal(z @ p["W"].T + p["b"], SIGMA).log_prob(self.x).sum(-1)
        log_q = torch.distributions.MultivariateNormal(loc, scale_tril=tril).log_prob(z)
        return log_lik + kl_weight * (log_prior - log_q)

    def reference_gradient(self, bound, num_particles, num_draws=200_000, num_chunks=20, kl_weight=1.0, seed=0):
        """Mean and standard error of ``grad sum_n bound(log_w[:, :, n])``, from ``num_draws`` draws in chunks."""
        gen = torch.Generator().manual_seed(seed)
        leaves = self.leaves()
        chunk_grads = []
        for _ in range(num_chunks):
            eps = torch.randn(num_draws // num_chunks, num_particles, BATCH, LATENT_DIM, generator=gen)
            objective = bound(self.log_weights(leaves, eps, kl_weight)).sum(-1).mean()
            grads = torch.autograd.grad(objective, list(leaves.values()))
            chunk_grads.append(dict(zip(leaves, grads)))
        return _mean_and_stderr(chunk_grads)

    def estimator_gradient(self, est, replicates=2000, num_groups=20):
        """Mean and standard error of an estimator's gradient of the objective ``sum_n L(x_n)`` (minus its loss).

        Each of ``num_groups`` passes replicates the batch ``replicates`` times in the data plate, so one pass
        averages ``replicates`` independent gradient draws.
        """
        leaves = self.leaves()
        x_rep = self.x.repeat(replicates, 1)
        group_grads = []
        for _ in range(num_groups):
            for leaf in leaves.values():
                leaf.grad = None
            est.loss_and_grads(self.model, self.guide, x_rep)
            group_grads.append({name: -leaf.grad / replicates for name, leaf in leaves.items()})
        return _mean_and_stderr(group_grads)


def _mean_and_stderr(draws):
    stacked = {name: torch.stack([d[name] for d in draws]) for name in draws[0]}
    return (
        {name: s.mean(0) for name, s in stacked.items()},
        {name: s.std(0) / math.sqrt(len(draws)) for name, s in stacked.items()},
    )


def deviations(estimate, reference, names):
    """Largest ``|estimate - reference| / combined standard error`` over the elements of ``names``."""
    (est_mean, est_se), (ref_mean, ref_se) = estimate, reference
    return max(
        ((est_mean[n] - ref_mean[n]).abs() / (est_se[n] ** 2 + ref_se[n] ** 2).sqrt()).max().item() for n in names
    )


def iwae_bound(log_w):
    return torch.logsumexp(log_w, 1) - math.log(log_w.shape[1])
