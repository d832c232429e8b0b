"""A linear-Gaussian latent variable model, where log p(x) and p(z | x) are exact.

    z ~ N(0, I_d),    x | z ~ N(W z + b, sigma^2 I_D)

so that ``x ~ N(b, W W^T + sigma^2 I)`` and ``z | x ~ N(mu(x), Sigma)`` with
``Sigma = (I + W^T W / sigma^2)^{-1}`` and ``mu(x) = Sigma W^T (x - b) / sigma^2`` (Bishop 2006, section 12.2).

It is written as plain Pyro ``model`` / ``guide`` functions (with a data plate) so that every estimator in
:mod:`inference` can be checked against the exact answers.
"""

import pyro
import pyro.distributions as dist
import torch


class LinearGaussian:
    """The model above with fixed ``W`` (``D x d``), ``b`` (``D``) and noise scale ``sigma``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, sigma: float):
        self.weight = weight
        self.bias = bias
        self.sigma = float(sigma)

    @classmethod
    def random(cls, data_dim=5, latent_dim=2, sigma=0.5, seed=0, dtype=None):
        gen = torch.Generator().manual_seed(seed)
        dtype = dtype or torch.get_default_dtype()
        weight = torch.randn(data_dim, latent_dim, generator=gen, dtype=dtype)
        bias = torch.randn(data_dim, generator=gen, dtype=dtype)
        return cls(weight, bias, sigma)

    def to(self, device) -> "LinearGaussian":
        """The same model with its parameters on ``device``."""
        return LinearGaussian(self.weight.to(device), self.bias.to(device), self.sigma)

    @property
    def data_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.weight.shape[1]

    def sample(self, num_data, seed=0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num_data, self.latent_dim, generator=gen, dtype=self.weight.dtype).to(self.weight.device)
        noise = torch.randn(num_data, self.data_dim, generator=gen, dtype=self.weight.dtype).to(self.weight.device)
        return z @ self.weight.T + self.bias + self.sigma * noise

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            loc = z @ self.weight.T + self.bias
            pyro.sample("x", dist.Normal(loc, self.sigma).to_event(1), obs=x)

    def posterior(self, x) -> dist.MultivariateNormal:
        """The exact p(z | x), batched over the rows of ``x``."""
        identity = torch.eye(self.latent_dim, dtype=x.dtype, device=x.device)
        precision = identity + self.weight.T @ self.weight / self.sigma**2
        cov = torch.linalg.inv(precision)
        loc = (x - self.bias) @ self.weight @ cov.T / self.sigma**2
        return dist.MultivariateNormal(loc, covariance_matrix=cov)

    def marginal(self) -> dist.MultivariateNormal:
        """The exact p(x)."""
        identity = torch.eye(self.data_dim, dtype=self.weight.dtype, device=self.weight.device)
        cov = self.weight @ self.weight.T + self.sigma**2 * identity
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov)

    def log_marginal(self, x) -> torch.Tensor:
        """Exact log p(x_n) for every row of ``x``."""
        return self.marginal().log_prob(x)

    def exact_guide(self, x):
        """A guide equal to the posterior: every importance weight equals p(x_n)."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    def shifted_guide(self, shift=0.5, scale_factor=1.5):
        """A mismatched diagonal guide: the posterior mean moved by ``shift`` and its scales stretched."""

        def guide(x):
            post = self.posterior(x)
            scale = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * scale_factor
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(post.loc + shift, scale).to_event(1))

        return guide
