"""What a prior, a likelihood and a guide family are, and the capabilities each declares.

A component is a ``PyroModule`` subclass of one of these bases, registered by name in its table (``PRIORS``,
``LIKELIHOODS``, ``GUIDES``): its constructor's keywords are its options, and the class attributes below are the only
capabilities the rest of the package reads. A new component sets those that differ from the defaults; a class
that does not subclass its base is refused when it is registered.

==========================  ===============================================================================
capability                  meaning
==========================  ===============================================================================
``Prior.latent_kind``       ``"continuous"``, ``"binary"`` or ``"relaxed-binary"``: what ``z`` it puts mass on;
                            prior and guide must agree (:func:`pyro_vae.vae.check_latent_kinds`)
``Prior.needs_posterior``   the prior is made of the guide (the VampPrior): the VAE hands it ``posterior`` by
                            ``attach(posterior, data_dim, data_scale)`` after building
``Prior.initialize_from_data(x, generator)``
                            called once with the training split before training (a no-op by default)
``Likelihood.num_params``   decoder outputs per data dimension
``Likelihood.data_representation``
                            ``"continuous"`` (a density on the values as given), ``"binarized"`` (0/1 draws of grey
                            levels in [0, 1]) or ``"8-bit"`` (grey levels 0..255): how the data pipeline prepares
                            the data (:mod:`pyro_vae.runs.preparation`)
``GuideFamily.latent_kind`` as for the prior
``GuideFamily.point_mass``  the guide is a point mass (no density: importance sampling with it estimates nothing)
``GuideFamily.num_params(latent_dim)``
                            encoder outputs per example
==========================  ===============================================================================
"""

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule


class Prior(PyroModule):
    """``p(z)``: built as ``Prior(latent_dim=..., **options)``; ``forward()`` returns a distribution with
    ``batch_shape == ()`` and ``event_shape == (latent_dim,)``."""

    latent_kind = "continuous"
    needs_posterior = False

    def forward(self) -> dist.Distribution:
        raise NotImplementedError

    def initialize_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Start parameters from the training split ``x``, drawing by ``generator``; nothing by default."""


class Likelihood(PyroModule):
    """``p(x | z)``: built as ``Likelihood(data_dim=..., **options)``; ``forward(decoder_output)`` maps
    ``[..., num_params * data_dim]`` to a distribution with ``event_shape == (data_dim,)``."""

    num_params = 1
    data_representation = "continuous"

    def __init__(self, data_dim: int):
        super().__init__()
        self.data_dim = data_dim

    def forward(self, decoder_output: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError


class GuideFamily(PyroModule):
    """``q(z | x)``: built as ``Guide(latent_dim=..., **options)``; ``forward(encoder_output)`` maps
    ``[..., num_params(latent_dim)]`` to a distribution with ``event_shape == (latent_dim,)``."""

    latent_kind = "continuous"
    point_mass = False

    def num_params(self, latent_dim: int) -> int:
        raise NotImplementedError

    def forward(self, encoder_output: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError
