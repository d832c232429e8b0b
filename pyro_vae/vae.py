"""The variational autoencoder as a Pyro model/guide pair (Kingma & Welling 2013; Rezende et al. 2014).

Generative model and amortized guide, for data points ``x_1..x_N`` in a plate named ``"data"``::

    model:  z_n ~ p(z),   x_n | z_n ~ p(x | decoder(z_n))
    guide:  z_n ~ q(z | encoder(x_n))

The prior, likelihood and guide family are components chosen by name
(:data:`~pyro_vae.components.priors.PRIORS`, :data:`~pyro_vae.components.likelihoods.LIKELIHOODS`,
:data:`~pyro_vae.components.guides.GUIDES`), the encoder and decoder networks likewise
(:data:`~pyro_vae.components.networks.NETWORKS`). The data plate has ``size=num_data`` (the training set size) and
the minibatch as its subsample, so every Pyro objective is scaled by ``num_data / batch_size`` and estimates the
full-data objective (Hoffman et al. 2013). Estimators of log p(x) in :mod:`inference` ignore that scale.
"""

import functools
import inspect
from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from pyro.nn.module import to_pyro_module_

from pyro_vae.components.guides import GUIDES, positive_scale
from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.components.networks import NETWORKS
from pyro_vae.components.priors import PRIORS


def module_local(method):
    """Run ``method`` with Pyro's ``module_local_params`` on, so the VAE's parameters stay in the module.

    Pyro's default keeps a PyroModule's parameters also in the global param store under names such as
    ``"encoder.0.weight"``, which a second VAE in the same process would share. Module-local, every VAE owns its
    tensors; it is trained with :class:`inference.Trainer` (``torch.optim`` over ``vae.parameters()``).
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with pyro.settings.context(module_local_params=True):
            return method(*args, **kwargs)

    return wrapper


class VAE(PyroModule):
    """A VAE from its five components; see :func:`build_vae` to build one by names.

    Its parameters are module-local (see :func:`module_local`): train it with :class:`inference.Trainer` or any
    ``torch.optim`` optimizer over ``vae.parameters()``, not with ``pyro.infer.SVI``, which optimizes only the
    parameters of the global param store. The estimators themselves also drive ``SVI`` on model/guide pairs whose
    parameters live there (the README's own-model example). Build the PyroModule components inside
    :func:`module_local` too (:func:`build_vae` does).
    """

    #: The data plate is the only plate, so estimators need not guess the nesting by running the model.
    max_plate_nesting = 1
    #: The latent site that diagnostics (KL per dimension, active units, posterior draws) describe.
    latent_site = "z"

    @module_local
    def __init__(self, prior, likelihood, guide_family, encoder, decoder, num_data: Optional[int] = None):
        super().__init__()
        self.prior = prior
        self.likelihood = likelihood
        self.guide_family = guide_family
        # Plain nn.Modules become PyroModules, whose parameters Pyro traces see as param sites.
        to_pyro_module_(encoder)
        to_pyro_module_(decoder)
        self.encoder = encoder
        self.decoder = decoder
        self.num_data = num_data
        # 8-bit likelihoods read grey levels 0..255; the encoder sees them scaled to [0, 1], as other data
        self.input_scale = 1 / 255 if likelihood.data_representation == "8-bit" else 1.0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output for data ``x`` (scaled to [0, 1] first for 8-bit data)."""
        return self.encoder(x * self.input_scale if self.input_scale != 1.0 else x)

    def data_plate(self, x: torch.Tensor):
        batch_size = x.shape[0]
        size = self.num_data or batch_size
        return pyro.plate("data", size=size, subsample=torch.arange(batch_size, device=x.device))

    @module_local
    @pyro_method
    def model(self, x: torch.Tensor):
        """``p(x, z)`` for a minibatch ``x`` of shape ``[batch, data_dim]``."""
        with self.data_plate(x):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    @module_local
    @pyro_method
    def guide(self, x: torch.Tensor):
        """``q(z | x)`` for a minibatch ``x`` of shape ``[batch, data_dim]``."""
        with self.data_plate(x):
            pyro.sample("z", self.guide_family(self.encode(x)))

    @module_local
    def posterior(self, x: torch.Tensor):
        """The guide's distribution ``q(z | x)``, batched over the rows of ``x``."""
        return self.guide_family(self.encode(x))

    @module_local
    def decode(self, z: torch.Tensor):
        """The likelihood ``p(x | z)``, batched over the rows of ``z``."""
        return self.likelihood(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``p(x | z)`` at the guide's mean ``z`` (at one guide draw where the guide has no closed-form
        mean, e.g. relaxed Bernoulli latents): what the model makes of ``x``."""
        q = self.posterior(x)
        try:
            z = q.mean
        except NotImplementedError:
            z = q.sample()
        return self.decode(z).mean

    @torch.no_grad()
    @module_local
    def sample_means(self, num_samples: int) -> torch.Tensor:
        """Means of ``p(x | z)`` for ``num_samples`` draws ``z ~ p(z)``."""
        z = self.prior().sample((num_samples,))
        return self.decode(z).mean


class TwoLayerVAE(VAE):
    """A VAE with two stochastic layers (Burda et al. 2016, section 5), top-down in the model, bottom-up in the
    guide::

        model:  z2 ~ p(z2),  z1 | z2 ~ N(mu(z2), diag(sigma(z2)^2)),  x | z1 ~ p(x | decoder(z1))
        guide:  z1 ~ q(z1 | encoder(x)),  z2 ~ q(z2 | top_encoder(z1))

    The prior component is ``p(z2)``; ``conditional`` maps ``z2`` to the location and raw scale of ``z1``; the
    guide family (one per layer) is the configured one. Diagnostics describe ``z1``.
    """

    latent_site = "z1"

    @module_local
    def __init__(
        self,
        prior,
        likelihood,
        guide_family,
        encoder,
        decoder,
        top_guide_family,
        top_encoder,
        conditional,
        num_data=None,
    ):
        super().__init__(prior, likelihood, guide_family, encoder, decoder, num_data=num_data)
        self.top_guide_family = top_guide_family
        to_pyro_module_(top_encoder)
        to_pyro_module_(conditional)
        self.top_encoder = top_encoder
        self.conditional = conditional

    def conditional_prior(self, z2: torch.Tensor):
        """``p(z1 | z2)``: a diagonal normal whose scale is ``softplus(.) + 1e-4``."""
        loc, raw_scale = self.conditional(z2).chunk(2, dim=-1)
        return dist.Normal(loc, positive_scale(raw_scale)).to_event(1)

    @module_local
    @pyro_method
    def model(self, x: torch.Tensor):
        with self.data_plate(x):
            z2 = pyro.sample("z2", self.prior())
            z1 = pyro.sample("z1", self.conditional_prior(z2))
            pyro.sample("x", self.likelihood(self.decoder(z1)), obs=x)

    @module_local
    @pyro_method
    def guide(self, x: torch.Tensor):
        with self.data_plate(x):
            z1 = pyro.sample("z1", self.guide_family(self.encode(x)))
            pyro.sample("z2", self.top_guide_family(self.top_encoder(z1)))

    @torch.no_grad()
    @module_local
    def sample_means(self, num_samples: int) -> torch.Tensor:
        z2 = self.prior().sample((num_samples,))
        return self.decode(self.conditional_prior(z2).sample()).mean


#: The options that give a prior, or a guide, latents of each kind (the refusal of a mismatched pair names them).
KIND_OPTIONS = {
    "continuous": ("--prior normal", "--guide diagonal-normal"),
    "binary": ("--prior bernoulli", "--guide bernoulli"),
    "relaxed-binary": ("--prior concrete", """--guide concrete --guide-options '{"straight_through": false}'"""),
}


def check_latent_kinds(config, prior, guide) -> None:
    """Prior and guide must put mass on the same kind of latents: continuous, binary or relaxed binary. The refusal
    names a guide of the prior's kind and a prior of the guide's kind, each of which pairs them."""
    kinds = [prior.latent_kind, guide.latent_kind]
    if kinds[0] != kinds[1]:
        raise ValueError(
            f"the '{config.prior.name}' prior has {kinds[0]} latents but the '{config.guide.name}' guide draws "
            f"{kinds[1]} ones, so log p(z) / q(z | x) would compare densities on different spaces: use "
            f"{KIND_OPTIONS[kinds[0]][1]} (a guide of {kinds[0]} latents), or {KIND_OPTIONS[kinds[1]][0]} (a prior "
            f"of {kinds[1]} latents)"
        )


@module_local
def build_model(config, data_dim: int, num_data: Optional[int] = None, image_shape=None) -> VAE:
    """Build the :class:`VAE` of a :class:`~pyro_vae.config.ModelConfig`: each component by name and options.

    :param data_dim: dimension of a flattened data point.
    :param num_data: training set size, for the data plate's subsample scale.
    :param image_shape: ``(C, H, W)`` of image data, for networks that ask for it (convolutions).
    """
    if config.latent_dim < 1 or data_dim < 1 or (config.top_latent_dim is not None and config.top_latent_dim < 1):
        raise ValueError(
            f"latent_dim, top_latent_dim and data_dim must be positive, got {config.latent_dim}, "
            f"{config.top_latent_dim} and {data_dim}"
        )
    latent_dim = config.latent_dim
    prior_dim = latent_dim if config.top_latent_dim is None else config.top_latent_dim  # the prior is on the top
    prior = PRIORS.build(config.prior.name, latent_dim=prior_dim, **config.prior.options)
    likelihood = LIKELIHOODS.build(config.likelihood.name, data_dim=data_dim, **config.likelihood.options)
    guide = GUIDES.build(config.guide.name, latent_dim=latent_dim, **config.guide.options)
    check_latent_kinds(config, prior, guide)
    if prior.needs_posterior and guide.point_mass:
        raise ValueError(
            f"the '{config.prior.name}' prior is a mixture of the guide at pseudo-inputs, and the "
            f"'{config.guide.name}' guide is a point mass, so the prior would be a mixture of point masses with no "
            "density: choose a guide with a density (diagonal-normal) or another prior (normal)"
        )
    encoder = _network(config.encoder, data_dim, guide.num_params(latent_dim), image_shape)
    decoder = _network(config.decoder, latent_dim, likelihood.num_params * data_dim, image_shape)
    if config.top_latent_dim is None:
        vae = VAE(prior, likelihood, guide, encoder, decoder, num_data=num_data)
    else:
        vae = _two_layer(config, prior, likelihood, guide, encoder, decoder, num_data)
    if prior.needs_posterior:  # a prior made of the guide (the VampPrior)
        prior.attach(vae.posterior, data_dim, data_scale=1 / vae.input_scale)
    return vae


def _two_layer(config, top_prior, likelihood, guide, encoder, decoder, num_data) -> TwoLayerVAE:
    if top_prior.needs_posterior:
        raise ValueError(
            f"the '{config.prior.name}' prior is made of the guide of x, but with two stochastic layers the prior "
            "is on z2: use another prior, or one stochastic layer (model.top_latent_dim = null)"
        )
    top = config.top_latent_dim
    if guide.latent_kind != "continuous":
        raise ValueError(
            f"two stochastic layers need a continuous guide (z1 is scored under a normal p(z1 | z2)), not "
            f"'{config.guide.name}'"
        )
    top_guide = GUIDES.build(config.guide.name, latent_dim=top, **config.guide.options)
    activation = config.encoder.options.get("activation", "tanh")
    hidden = list(config.top_hidden_sizes)
    top_encoder = NETWORKS.build(
        "mlp", in_dim=config.latent_dim, out_dim=top_guide.num_params(top), hidden_sizes=hidden, activation=activation
    )
    conditional = NETWORKS.build(
        "mlp", in_dim=top, out_dim=2 * config.latent_dim, hidden_sizes=hidden[::-1], activation=activation
    )
    return TwoLayerVAE(top_prior, likelihood, guide, encoder, decoder, top_guide, top_encoder, conditional, num_data)


def _network(component, in_dim, out_dim, image_shape):
    builder = NETWORKS.get(component.name)
    shape = {"image_shape": image_shape} if "image_shape" in inspect.signature(builder).parameters else {}
    return builder(in_dim=in_dim, out_dim=out_dim, **shape, **component.options)


def build_vae(
    data_dim: int,
    latent_dim: int = 10,
    hidden_sizes: Sequence[int] = (200, 200),
    activation: str = "tanh",
    network: str = "mlp",
    prior: str = "normal",
    likelihood: str = "bernoulli",
    guide: str = "diagonal-normal",
    num_data: Optional[int] = None,
    prior_options: Optional[dict] = None,
    likelihood_options: Optional[dict] = None,
    guide_options: Optional[dict] = None,
) -> VAE:
    """Build a :class:`VAE` by component names, with mirrored encoder and decoder networks (a shorthand for
    :func:`build_model` with a :class:`~pyro_vae.config.ModelConfig`).

    :param data_dim: dimension of a flattened data point.
    :param latent_dim: dimension of ``z``.
    :param hidden_sizes: the encoder's hidden sizes; the decoder uses them reversed.
    :param num_data: training set size, for the data plate's subsample scale.
    """
    from pyro_vae.config import Component, ModelConfig

    config = ModelConfig(
        latent_dim=latent_dim,
        prior=Component(prior, dict(prior_options or {})),
        likelihood=Component(likelihood, dict(likelihood_options or {})),
        guide=Component(guide, dict(guide_options or {})),
        encoder=Component(network, {"hidden_sizes": list(hidden_sizes), "activation": activation}),
        decoder=Component(network, {"hidden_sizes": list(hidden_sizes)[::-1], "activation": activation}),
    )
    return build_model(config, data_dim, num_data)
