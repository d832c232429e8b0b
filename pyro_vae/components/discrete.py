"""Binary latents: Bernoulli priors and guide families for the VAE, their Concrete relaxations, and a small model
where every objective can be enumerated exactly.

Binary latents ``z in {0, 1}^d`` have no reparameterization, so they are the natural home of the score-function
estimators (``score``, ``vimco``, ``rws``). The Concrete (Gumbel-softmax) family gives a reparameterized
comparison:

* ``guide="concrete"`` (straight-through, the default): the sample is hard, ``z in {0, 1}^d``, and its density is
  the Bernoulli pmf, so the model and the bound are exactly those of ``guide="bernoulli"``; only the gradient
  differs (pathwise through the relaxed sample; biased, low variance; Jang et al. 2017, section 2.2).
* ``guide="concrete"`` with ``straight_through=False`` together with ``prior="concrete"``: the fully relaxed model
  of Maddison et al. (2017), whose latents live in ``(0, 1)^d``; its log p(x) is that of a different, continuous
  model and is not comparable with the binary one.

References:
    C. J. Maddison, A. Mnih, Y. W. Teh. The Concrete Distribution: A Continuous Relaxation of Discrete Random
    Variables. ICLR 2017.
    E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR 2017.
"""

import itertools
import math

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.components.base import GuideFamily, Prior
from pyro_vae.components.guides import GUIDES
from pyro_vae.components.priors import PRIORS


def _check_probability(probs):
    if not 0 < probs < 1:
        raise ValueError(f"probs must be strictly between 0 and 1 (log-probabilities must be finite); got {probs}")


def _check_temperature(temperature):
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}")


@PRIORS.register("bernoulli")
class BernoulliPrior(Prior):
    """``p(z) = prod_j Bernoulli(z_j | probs)`` over ``latent_dim`` binary units, with a fixed ``probs`` (default
    1/2) or, with ``learned=True``, one learned logit per unit (initialized at ``logit(probs)``)."""

    latent_kind = "binary"

    def __init__(self, latent_dim: int, probs: float = 0.5, learned: bool = False):
        super().__init__()
        _check_probability(probs)
        self.latent_dim = latent_dim
        logits = torch.full((latent_dim,), math.log(probs) - math.log1p(-probs))
        if learned:
            self.logits = torch.nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits)

    def forward(self) -> dist.Distribution:
        return dist.Bernoulli(logits=self.logits).to_event(1)


@PRIORS.register("concrete")
class ConcretePrior(BernoulliPrior):
    """The relaxed prior ``p(z) = prod_j RelaxedBernoulli(z_j | temperature, probs)`` on ``(0, 1)^latent_dim``,
    for the fully relaxed model (``guide="concrete"`` with ``straight_through=False``)."""

    latent_kind = "relaxed-binary"

    def __init__(self, latent_dim: int, probs: float = 0.5, learned: bool = False, temperature: float = 0.5):
        super().__init__(latent_dim, probs, learned)
        _check_temperature(temperature)
        self.temperature = temperature

    def forward(self) -> dist.Distribution:
        temperature = torch.tensor(self.temperature, dtype=self.logits.dtype, device=self.logits.device)
        return dist.RelaxedBernoulli(temperature, logits=self.logits).to_event(1)


@GUIDES.register("bernoulli")
class BernoulliGuide(GuideFamily):
    """``q(z | x) = prod_j Bernoulli(z_j | sigmoid(l_j(x)))``: the encoder emits ``latent_dim`` logits."""

    latent_kind = "binary"

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @staticmethod
    def num_params(latent_dim: int) -> int:
        return latent_dim

    def forward(self, encoder_output: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=encoder_output).to_event(1)


class StraightThroughBernoulli(dist.RelaxedBernoulliStraightThrough):
    """Hard samples in ``{0, 1}`` with straight-through gradients from the Concrete relaxation, scored by the
    Bernoulli pmf (so importance weights and bounds are those of the binary model)."""

    support = dist.constraints.boolean

    def log_prob(self, value):
        return dist.Bernoulli(logits=self.logits).log_prob(value)


@GUIDES.register("concrete")
class ConcreteGuide(GuideFamily):
    """Concrete (relaxed Bernoulli) guide with ``latent_dim`` encoder logits and a ``temperature``.

    ``straight_through=True`` (default) gives :class:`StraightThroughBernoulli`, for use with
    ``prior="bernoulli"``; ``straight_through=False`` gives :class:`~pyro.distributions.RelaxedBernoulli`
    samples in ``(0, 1)``, for use with ``prior="concrete"``.
    """

    def __init__(self, latent_dim: int, temperature: float = 0.5, straight_through: bool = True):
        super().__init__()
        _check_temperature(temperature)
        self.latent_dim = latent_dim
        self.temperature = temperature
        self.straight_through = straight_through
        # hard samples with the Bernoulli mass (straight-through), or relaxed values in (0, 1)
        self.latent_kind = "binary" if straight_through else "relaxed-binary"

    @staticmethod
    def num_params(latent_dim: int) -> int:
        return latent_dim

    def forward(self, encoder_output: torch.Tensor) -> dist.Distribution:
        family = StraightThroughBernoulli if self.straight_through else dist.RelaxedBernoulli
        temperature = torch.tensor(self.temperature, dtype=encoder_output.dtype, device=encoder_output.device)
        return family(temperature, logits=encoder_output).to_event(1)


class EnumerableBinaryModel:
    """A sigmoid belief net small enough to enumerate: the reference for discrete-latent estimators.

        z_n ~ prod_j Bernoulli(sigmoid(a_j)),   x_n | z_n ~ prod_i Bernoulli(sigmoid(W z_n + b)_i),
        q(z_n | x_n) = prod_j Bernoulli(sigmoid(C x_n + c)_j),

    with ``latent_dim`` binary latents and ``data_dim`` binary observations per data point. Parameters are plain
    leaf tensors (``theta = (a, W, b)`` for the model, ``phi = (C, c)`` for the guide), so estimators' gradients can
    be read from ``.grad``. The data plate has size ``num_data`` and subsamples the rows of ``x`` given, so the
    estimators' losses carry the scale ``num_data / batch_size``. The ``exact_*`` methods sum over all ``2^d``
    latent values (and all ``K``-tuples of them), returning one value per data point, differentiable in the
    parameters.
    """

    def __init__(self, latent_dim=3, data_dim=4, num_data=None, seed=0, dtype=torch.float64):
        gen = torch.Generator().manual_seed(seed)

        def param(*shape):
            return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()

        self.prior_logits = param(latent_dim)
        self.weight = param(data_dim, latent_dim)
        self.bias = param(data_dim)
        self.guide_weight = param(latent_dim, data_dim)
        self.guide_bias = param(latent_dim)
        self.num_data = num_data
        self.all_z = torch.tensor(list(itertools.product((0.0, 1.0), repeat=latent_dim)), dtype=dtype)
        self.all_x = torch.tensor(list(itertools.product((0.0, 1.0), repeat=data_dim)), dtype=dtype)

    @property
    def model_params(self):
        return [self.prior_logits, self.weight, self.bias]

    @property
    def guide_params(self):
        return [self.guide_weight, self.guide_bias]

    def _plate(self, x):
        num_data = self.num_data or x.shape[0]
        return pyro.plate("data", num_data, subsample=torch.arange(x.shape[0]))

    def prior(self):
        return dist.Bernoulli(logits=self.prior_logits).to_event(1)

    def likelihood(self, z):
        return dist.Bernoulli(logits=z @ self.weight.T + self.bias).to_event(1)

    def posterior_family(self, x):
        return dist.Bernoulli(logits=x @ self.guide_weight.T + self.guide_bias).to_event(1)

    def model(self, x):
        with self._plate(x):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x):
        with self._plate(x):
            pyro.sample("z", self.posterior_family(x))

    def sample(self, num_data, seed=0):
        """``num_data`` draws of ``x`` from the model."""
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            z = torch.bernoulli(torch.sigmoid(self.prior_logits).expand(num_data, -1), generator=gen)
            return torch.bernoulli(torch.sigmoid(z @ self.weight.T + self.bias), generator=gen)

    def log_joint(self, x):
        """``log p(x_n, z)`` for every latent value: shape ``(2^d, N)``."""
        z = self.all_z.unsqueeze(1)
        return self.prior().log_prob(z) + self.likelihood(z).log_prob(x)

    def log_guide(self, x):
        """``log q(z | x_n)`` for every latent value: shape ``(2^d, N)``."""
        return self.posterior_family(x).log_prob(self.all_z.unsqueeze(1))

    def exact_log_marginal(self, x):
        return torch.logsumexp(self.log_joint(x), 0)

    def exact_elbo(self, x):
        log_q = self.log_guide(x)
        return (log_q.exp() * (self.log_joint(x) - log_q)).sum(0)

    def _tuples(self, x, num_particles):
        """Log weights and log q of every ``K``-tuple of latent values: shapes ``(2^(dK), K, N)``."""
        index = torch.tensor(list(itertools.product(range(len(self.all_z)), repeat=num_particles)))
        log_q = self.log_guide(x)[index]
        return self.log_joint(x)[index] - log_q, log_q

    def exact_iwae(self, x, num_particles):
        """``E[log (1/K) sum_k w_k]`` over ``K`` independent draws from the guide."""
        log_w, log_q = self._tuples(x, num_particles)
        bound = torch.logsumexp(log_w, 1) - math.log(num_particles)
        return (log_q.sum(1).exp() * bound).sum(0)

    def exact_wake_phi_target(self, x, num_particles):
        """A function of ``phi`` whose gradient is the expected wake-phi direction
        ``E[sum_k w~_k grad log q(z_k | x)]`` (draws and normalized weights held fixed)."""
        log_w, log_q = self._tuples(x, num_particles)
        tuple_probs = log_q.sum(1).exp().detach()
        normalized = torch.softmax(log_w.detach(), 1)
        return (tuple_probs * (normalized * log_q).sum(1)).sum(0)

    def exact_sleep_phi_target(self):
        """``E_{p(z, x)}[log q(z | x)]`` for one sleep draw, with ``p`` held fixed (a function of ``phi``)."""
        log_joint = self.log_joint(self.all_x).detach()  # (2^d, 2^D)
        return (log_joint.exp() * self.log_guide(self.all_x)).sum()
