"""pyro-vae: variational autoencoders as Pyro model/guide pairs."""

from .guides import GUIDES
from .likelihoods import LIKELIHOODS
from .linear_gaussian import LinearGaussian
from .networks import NETWORKS
from .priors import PRIORS
from .vae import VAE, build_vae

__all__ = ["GUIDES", "LIKELIHOODS", "LinearGaussian", "NETWORKS", "PRIORS", "VAE", "build_vae"]
