"""The components a VAE is built from, each chosen by name from its table: priors, likelihoods, guide families
and networks. Importing this package fills every table. A new prior, likelihood or guide subclasses
:class:`Prior`, :class:`Likelihood` or :class:`GuideFamily`, whose docstrings (:mod:`pyro_vae.components.base`) list
the capabilities it may declare."""

from pyro_vae.components import discrete, discretized  # noqa: F401  (registers binary latents, 8-bit likelihoods)
from pyro_vae.components.base import GuideFamily, Likelihood, Prior
from pyro_vae.components.guides import GUIDES
from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.components.networks import NETWORKS
from pyro_vae.components.priors import PRIORS

__all__ = ["GUIDES", "LIKELIHOODS", "NETWORKS", "PRIORS", "GuideFamily", "Likelihood", "Prior"]
