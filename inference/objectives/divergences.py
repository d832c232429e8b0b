r"""Autoencoders regularized by a divergence between the aggregate posterior and the prior, in place of the KL.

Each data point's ELBO penalizes :math:`\mathrm{KL}(q(z \mid x_n) \,\|\, p(z))`. These objectives keep the
reconstruction term and penalize instead a divergence between the **aggregate posterior**
:math:`q(z) = \frac1N \sum_n q(z \mid x_n)` (estimated on the minibatch) and the prior:

.. math:: L = \frac1B \sum_n E_{q(z \mid x_n)}[\log p(x_n \mid z)] - \lambda\, D\bigl(q(z), p(z)\bigr),

* ``mmd``: the squared kernel maximum mean discrepancy (Gretton et al. 2012) between guide draws and prior draws,
  with an inverse multiquadratic (Tolstikhin et al. 2018, WAE-MMD) or Gaussian kernel
  (Zhao et al. 2019, InfoVAE);
* ``js``: the Jensen-Shannon divergence :math:`\tfrac12 \mathrm{KL}(q \,\|\, m) + \tfrac12 \mathrm{KL}(p \,\|\, m)`,
  :math:`m = (q + p)/2`, by Monte Carlo with :math:`q(z)` the minibatch mixture :math:`\frac1{KB}\sum_{k,m}
  q(z \mid x_m)` (its density is known, unlike the MMD's kernel two-sample view).

**Neither is a bound on log p(x)**: the training objective they report is not comparable to an ELBO. Their
models' log p(x) is still estimated by importance sampling with the guide (``pyro-vae evaluate``), which is valid
for any guide with a density. Both need one latent site (the aggregate posterior of one code) and reparameterized
guide draws; the divergence is computed over the whole minibatch, so the loss is not a sum of per-example terms.
"""

import math

import torch

from inference.objectives.estimators import ESTIMATORS
from inference.objectives.objective import ImportanceWeightedObjective


def imq_kernel(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``C / (C + |a - b|^2)`` with ``C = scale`` for rows of ``a`` against rows of ``b``."""
    return scale / (scale + torch.cdist(a, b).pow(2))


def rbf_kernel(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``exp(-|a - b|^2 / scale)`` for rows of ``a`` against rows of ``b``."""
    return torch.exp(-torch.cdist(a, b).pow(2) / scale)


KERNELS = {"imq": imq_kernel, "rbf": rbf_kernel}


def mmd_squared(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", scale=None) -> torch.Tensor:
    r"""The squared maximum mean discrepancy between the empirical distributions of rows ``x`` and rows ``y``
    (Gretton et al. 2012, the biased V-statistic): :math:`\lVert \hat\mu_x - \hat\mu_y \rVert^2_{\mathcal H} =
    \overline{k(x, x')} + \overline{k(y, y')} - 2 \overline{k(x, y)}`, the mean kernel within each sample minus
    twice the mean across. It is never negative and is zero exactly when the two samples are the same set of points
    (both kernels are characteristic); its bias, ``O(1 / n)``, does not depend on the parameters' direction of
    travel. ``scale`` defaults to ``2 d`` for ``imq`` (Tolstikhin et al.: ``2 d sigma^2`` with a unit-variance
    prior) and ``d`` for ``rbf``, with ``d`` the dimension."""
    k = KERNELS[kernel]
    d = x.shape[-1]
    scale = (2.0 * d if kernel == "imq" else float(d)) if scale is None else scale
    return k(x, x, scale).mean() + k(y, y, scale).mean() - 2 * k(x, y, scale).mean()


def mixture_log_density(distribution, z: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """``log (1/M) sum_m q_m(z)`` for each row of ``z``, over the ``M`` components that make up the last
    ``batch_dims`` batch dimensions of ``distribution`` (e.g. ``q(z | x_m)`` over particles and data points)."""
    flat = z.reshape(z.shape[0], *([1] * batch_dims), z.shape[-1])
    log_q = distribution.log_prob(flat).reshape(z.shape[0], -1)
    return torch.logsumexp(log_q, -1) - math.log(log_q.shape[-1])


class AggregatePosteriorObjective(ImportanceWeightedObjective):
    """Reconstruction minus ``weight`` times a divergence between the minibatch's aggregate posterior and the
    prior (see the module docstring); subclasses implement :meth:`divergence`. A KL weight schedule (warm-up)
    scales the divergence as it would scale the KL."""

    #: The training objective is not a lower bound on log p(x) (reports say so).
    bound_on_log_px = False

    def __init__(self, weight: float = 100.0, **options):
        super().__init__(**options)
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        self.weight = float(weight)

    def divergence(self, site: dict) -> torch.Tensor:
        raise NotImplementedError

    def _site(self, parts) -> dict:
        if not parts.sites or len(parts.sites) != 1:
            raise ValueError(
                f"'{self.name}' compares the aggregate posterior of one latent code with its prior, but the model "
                f"has {len(parts.sites or {})} latent sites; use it with a one-layer model"
            )
        return next(iter(parts.sites.values()))

    def per_example_objective(self, parts):
        """Per data point, ``E_q[log p(x_n | z)] - weight * D``: the divergence is shared by the minibatch."""
        divergence = self.divergence(self._site(parts))
        return parts.log_likelihood.mean(0) - self.kl_weight * self.weight * divergence

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if not self.vectorize_particles:
            raise ValueError(f"'{self.name}' needs the particles of one vectorized pass (vectorize_particles=True)")
        parts = self.log_weight_parts(model, guide, args, kwargs)
        objective = self.per_example_objective(parts)
        return self.minibatch_loss(parts, objective, objective)


def _draws(site: dict):
    """Guide draws ``(K B, d)`` and as many prior draws (reparameterized where the prior allows)."""
    z = site["value"]
    flat = z.reshape(-1, z.shape[-1])
    prior = site["prior"]
    draws = prior.rsample() if prior.has_rsample else prior.sample()
    return flat, draws.reshape(-1, z.shape[-1])


@ESTIMATORS.register("mmd")
class MMDObjective(AggregatePosteriorObjective):
    """Reconstruction minus weight * MMD^2(aggregate posterior, prior) (InfoVAE / WAE-MMD); not a bound on log p(x).

    :param float weight: ``lambda`` on the squared MMD.
    :param str kernel: ``imq`` (inverse multiquadratic, the default) or ``rbf``.
    :param float scale: the kernel's scale (default ``2 d`` for ``imq``, ``d`` for ``rbf``).
    """

    name = "mmd"

    def __init__(self, weight: float = 100.0, kernel: str = "imq", scale=None, **options):
        super().__init__(weight=weight, **options)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
        self.kernel = kernel
        self.scale = scale

    def divergence(self, site):
        guide_draws, prior_draws = _draws(site)
        return mmd_squared(guide_draws, prior_draws, self.kernel, self.scale)


@ESTIMATORS.register("js")
class JensenShannonObjective(AggregatePosteriorObjective):
    """Reconstruction minus weight * JS(aggregate posterior, prior), by Monte Carlo; not a bound on log p(x).

    :param float weight: ``lambda`` on the divergence (in nats, at most ``log 2``).
    """

    name = "js"

    def divergence(self, site):
        guide_draws, prior_draws = _draws(site)
        guide, prior = site["guide"], site["prior"]
        batch_dims = len(guide.batch_shape)

        def log_q(z):
            return mixture_log_density(guide, z, batch_dims)

        def log_p(z):
            return mixture_log_density(prior, z, len(prior.batch_shape))  # the same prior for every data point

        def log_m(lq, lp):
            return torch.logaddexp(lq, lp) - math.log(2)

        lq_q, lp_q = log_q(guide_draws), log_p(guide_draws)
        lq_p, lp_p = log_q(prior_draws), log_p(prior_draws)
        return 0.5 * (lq_q - log_m(lq_q, lp_q)).mean() + 0.5 * (lp_p - log_m(lq_p, lp_p)).mean()
