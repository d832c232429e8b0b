"""Model/guide pairs in Pyro's ordinary idioms, written for these tests: the styles a user brings to ``inference/``.

Each :class:`Pair` builds a fresh model and guide (the parameter store cleared) with data, the data plate's name,
the plate nesting, and where known the exact ``log p(x)`` per data point. The linear-Gaussian pairs have
``z ~ N(0, I)``, ``x | z ~ N(z, s^2 I)``, so ``x ~ N(0, (1 + s^2) I)`` and the posterior is
``N(x / (1 + s^2), s^2 / (1 + s^2) I)``; their guides start at the posterior with a deliberate mismatch.
"""

import math
from typing import Callable, NamedTuple, Optional

import pyro
import pyro.distributions as dist
import torch
from pyro.contrib.easyguide import EasyGuide
from pyro.infer import config_enumerate
from pyro.infer.autoguide import (
    AutoDiagonalNormal,
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.nn import PyroModule, PyroParam

NOISE = 0.5  # s, the observation noise of the linear-Gaussian pairs
N, D = 6, 2


class Pair(NamedTuple):
    name: str
    model: Callable
    guide: Callable
    args: tuple
    data_plate: Optional[str]
    max_plate_nesting: int
    exact: Optional[torch.Tensor] = None  # log p(x_n) per data point (one value for data_plate=None)
    vectorizable: bool = True  # the guide takes a leading particle dimension
    enumerated: bool = False  # the guide has sites marked for parallel enumeration
    trace_elbo_gradients: bool = True  # Trace_ELBO's K = 1 gradient is the reference (False: a guide Pyro samples)


def data(n=N, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=generator) * math.sqrt(1 + NOISE**2)


def exact_local(x):
    return dist.Normal(0.0, math.sqrt(1 + NOISE**2)).log_prob(x).sum(-1)


def posterior(x):
    return x / (1 + NOISE**2), torch.full_like(x, NOISE / math.sqrt(1 + NOISE**2))


def local_model(x, obs_scale=1.0, latent_scale=1.0, mask=True):
    with pyro.plate("data", x.shape[0]):
        with pyro.poutine.scale(scale=latent_scale):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        with pyro.poutine.scale(scale=obs_scale), pyro.poutine.mask(mask=mask):
            pyro.sample("x", dist.Normal(z, NOISE).to_event(1), obs=x)


def param_guide(x, latent_scale=1.0, shift=0.3, **_):
    """An amortized guide of ``pyro.param`` sites: ``q(z | x) = N(a x + b, s)``."""
    loc, scale = posterior(x)
    a = pyro.param("a", torch.tensor(1 / (1 + NOISE**2)))
    b = pyro.param("b", torch.full((D,), shift))
    s = pyro.param("s", scale[0] * 1.2, constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]), pyro.poutine.scale(scale=latent_scale):
        pyro.sample("z", dist.Normal(a * x + b, s).to_event(1))


class ModuleGuide(PyroModule):
    """The same guide as a ``PyroModule`` with an ``nn.Linear`` encoder."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(D, D)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.eye(D) / (1 + NOISE**2))
            self.encoder.bias.fill_(-0.2)
        self.scale = PyroParam(torch.full((D,), 0.5), constraint=dist.constraints.positive)

    def forward(self, x, **_):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.encoder(x), self.scale).to_event(1))


def global_model(x):
    """A global mean ``mu ~ N(0, I)`` shared by all points ``x_n ~ N(mu, s^2 I)``: no local latents."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, NOISE).to_event(1), obs=x)


def exact_global(x):
    """``log p(x)`` of the whole batch: each coordinate's column ``~ N(0, s^2 I + 1 1^T)``."""
    covariance = NOISE**2 * torch.eye(x.shape[0]) + torch.ones(x.shape[0], x.shape[0])
    return dist.MultivariateNormal(torch.zeros(x.shape[0]), covariance).log_prob(x.T).sum().reshape(1)


class GlobalEasyGuide(EasyGuide):
    """An :class:`~pyro.contrib.easyguide.EasyGuide` drawing the global latent as one group."""

    def guide(self, x):
        group = self.group(match="mu")
        loc = pyro.param("easy_loc", x.mean(0) * 0.9)
        scale = pyro.param("easy_scale", torch.full((D,), 0.3), constraint=dist.constraints.positive)
        group.sample("mu_group", dist.Normal(loc, scale).to_event(1))


def nested_model(x):
    """Data points in one plate and their coordinates in a nested plate."""
    with pyro.plate("data", x.shape[0], dim=-2):
        with pyro.plate("coordinates", D, dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, NOISE), obs=x)


def nested_guide(x):
    s = pyro.param("s", torch.tensor(0.5), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0], dim=-2):
        with pyro.plate("coordinates", D, dim=-1):
            pyro.sample("z", dist.Normal(x / (1 + NOISE**2) + 0.1, s))


def subsampled_model(x, size=3):
    with pyro.plate("data", x.shape[0], subsample_size=size) as index:
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        pyro.sample("x", dist.Normal(z, NOISE).to_event(1), obs=x[index])


def subsampled_guide(x, size=3):
    s = pyro.param("s", torch.tensor(0.5), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0], subsample_size=size) as index:
        pyro.sample("z", dist.Normal(x[index] / (1 + NOISE**2) + 0.1, s).to_event(1))


T = 4
LENGTHS = torch.tensor([4, 2, 3, 1, 4, 2])


def sequence_model(x, lengths):
    """A linear-Gaussian state-space model ``z_t ~ N(0.8 z_{t-1}, 1)``, ``x_t ~ N(z_t, s)``, for sequences of
    unequal lengths (steps past a sequence's end masked out), its steps under :func:`pyro.markov`."""
    with pyro.plate("data", x.shape[0]):
        z = torch.zeros(x.shape[0])
        for t in pyro.markov(range(x.shape[1])):
            with pyro.poutine.mask(mask=t < lengths):
                z = pyro.sample(f"z_{t}", dist.Normal(0.8 * z, 1.0))
                pyro.sample(f"x_{t}", dist.Normal(z, NOISE), obs=x[:, t])


def sequence_guide(x, lengths):
    """A filtering guide ``q(z_t | z_{t-1}, x_t)``: broadcasts over a leading particle dimension."""
    w = pyro.param("w", torch.tensor(0.3))
    s = pyro.param("s", torch.tensor(0.6), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = torch.zeros(x.shape[0])
        for t in pyro.markov(range(x.shape[1])):
            with pyro.poutine.mask(mask=t < lengths):
                z = pyro.sample(f"z_{t}", dist.Normal(w * z + 0.7 * x[:, t], s))


def positional_guide(x, lengths):
    """The same filter written positionally: the previous state is stacked with ``x[:, t]`` column by column,
    which fails once a particle dimension is added in front of ``z``."""
    w = pyro.param("w", torch.tensor(0.3))
    s = pyro.param("s", torch.tensor(0.6), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = torch.zeros(x.shape[0])
        for t in pyro.markov(range(x.shape[1])):
            features = torch.stack([z, x[:, t]], 1)  # (B, 2): a (K, B) z does not stack with x[:, t]
            with pyro.poutine.mask(mask=t < lengths):
                z = pyro.sample(f"z_{t}", dist.Normal(features @ torch.stack([w, torch.tensor(0.7)]), s))


MIXTURE_MEANS = torch.tensor([-2.0, 0.5, 2.5], dtype=torch.float64)
MIXTURE_WEIGHTS = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)


def mixture_model(x):
    """A class ``y ~ Cat(pi)``, ``z | y ~ N(mu_y, 1)``, ``x | z ~ N(z, s)``, so
    ``p(x) = sum_y pi_y N(x; mu_y, 1 + s^2)``."""
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(MIXTURE_WEIGHTS.to(x)))
        z = pyro.sample("z", dist.Normal(MIXTURE_MEANS.to(x)[y], 1.0))
        pyro.sample("x", dist.Normal(z, NOISE), obs=x)


def exact_mixture(x):
    components = dist.Normal(MIXTURE_MEANS.to(x), math.sqrt(1 + NOISE**2)).log_prob(x.unsqueeze(-1))
    return (components + MIXTURE_WEIGHTS.to(x).log()).logsumexp(-1)


def mixture_guide(x):
    """``q(y | x)`` by a softmax of learned logits of ``x``, then ``q(z | x, y) = N(a x + b mu_y, s)``; written to
    broadcast over an enumerated ``y``."""
    means = MIXTURE_MEANS.to(x)
    logits = pyro.param("logits", torch.zeros(3))
    s = pyro.param("s", torch.tensor(0.5), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(logits=logits - (x.unsqueeze(-1) - means) ** 2))
        pyro.sample("z", dist.Normal(0.8 * x + 0.2 * means[y], s))


def mixture_data(n=N):
    return torch.tensor([-2.5, -0.3, 0.4, 1.0, 2.2, 3.1])[:n]


local_model.log_marginal = exact_local  # the analytic log p(x) that method "exact" reads
global_model.log_marginal = exact_global
mixture_model.log_marginal = exact_mixture


def _local(name, guide, **model_options):
    def model(x):
        return local_model(x, **model_options)

    model.log_marginal = exact_local
    return lambda: Pair(name, model, guide, (data(),), "data", 1, exact_local(data()))


def _scaled(name, **scales):
    def model(x):
        return local_model(x, **scales)

    def guide(x):
        return param_guide(x, latent_scale=scales.get("latent_scale", 1.0))

    return lambda: Pair(name, model, guide, (data(),), "data", 1)


def _masked():
    mask = torch.tensor([True, False, True, True, False, True])

    def model(x):
        return local_model(x, mask=mask)

    return Pair("poutine.mask", model, param_guide, (data(),), "data", 1)


def _autoguide(cls, data_plate, **options):
    def build():
        model = local_model if data_plate else global_model
        guide = cls(model, init_scale=0.3, **options) if cls is not AutoIAFNormal else cls(model, hidden_dim=[4])
        x = data()
        guide(x)  # create the parameters
        exact = exact_local(x) if data_plate else exact_global(x)
        return Pair(f"{cls.__name__}{'' if data_plate else ' (global)'}", model, guide, (x,), data_plate, 1, exact)

    return build


def _easy_guide():
    guide = GlobalEasyGuide(global_model)
    guide(data())  # its prototype trace runs the model once: before the draws compared
    return Pair("EasyGuide (global)", global_model, guide, (data(),), None, 1, exact_global(data()))


def _module_guide():
    model, x = local_model, data()
    return Pair("PyroModule guide", model, ModuleGuide(), (x,), "data", 1, exact_local(x))


def _global_param():
    def guide(x):
        loc = pyro.param("loc", x.mean(0) * 0.9)
        scale = pyro.param("scale", torch.full((D,), 0.3), constraint=dist.constraints.positive)
        pyro.sample("mu", dist.Normal(loc, scale).to_event(1))

    return Pair("global latent, data_plate=None", global_model, guide, (data(),), None, 1, exact_global(data()))


def _sequence(guide, name, vectorizable):
    x = torch.randn(N, T, generator=torch.Generator().manual_seed(1)) * 1.2
    return Pair(name, sequence_model, guide, (x, LENGTHS), "data", 1, vectorizable=vectorizable)


def _mixture():
    x = mixture_data()
    return Pair(
        "enumerated class (config_enumerate)",
        mixture_model,
        config_enumerate(mixture_guide),
        (x,),
        "data",
        1,
        exact_mixture(x),
        enumerated=True,
        trace_elbo_gradients=False,
    )


CATALOGUE = {
    "pyro.param guide": _local("pyro.param guide", param_guide),
    "PyroModule guide": _module_guide,
    "AutoNormal": _autoguide(AutoNormal, "data"),
    "AutoDiagonalNormal": _autoguide(AutoDiagonalNormal, None),
    "AutoMultivariateNormal": _autoguide(AutoMultivariateNormal, None),
    "AutoLowRankMultivariateNormal": _autoguide(AutoLowRankMultivariateNormal, None, rank=1),
    "AutoIAFNormal": _autoguide(AutoIAFNormal, None),
    "EasyGuide": _easy_guide,
    "poutine.scale on latents": _scaled("poutine.scale on latents", latent_scale=0.2),
    "poutine.scale on observations": _scaled("poutine.scale on observations", obs_scale=3.0),
    "poutine.mask": _masked,
    "nested plates": lambda: Pair("nested plates", nested_model, nested_guide, (data(),), "data", 2),
    "subsampled data plate": lambda: Pair("subsampled", subsampled_model, subsampled_guide, (data(),), "data", 1),
    "global latent, data_plate=None": _global_param,
    "pyro.markov sequence with masks": lambda: _sequence(sequence_guide, "pyro.markov sequence with masks", True),
    "guide without a particle dimension": lambda: _sequence(positional_guide, "positional guide", False),
    "enumerated class": _mixture,
}


def fitted(pair: Pair, steps: int = 300) -> Pair:
    """The pair with its guide fitted by Pyro's own SVI (``TraceEnum_ELBO`` where the guide enumerates)."""
    loss = (pyro.infer.TraceEnum_ELBO if pair.enumerated else pyro.infer.Trace_ELBO)(
        max_plate_nesting=pair.max_plate_nesting
    )
    svi = pyro.infer.SVI(pair.model, pair.guide, pyro.optim.Adam({"lr": 0.05}), loss)
    for _ in range(steps):
        svi.step(*pair.args)
    return pair


def build(name) -> Pair:
    """A fresh pair: the parameter store cleared and the seed fixed, so its parameters start the same each time."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    return CATALOGUE[name]()
