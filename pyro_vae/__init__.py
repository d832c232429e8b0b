"""pyro-vae: variational autoencoders as Pyro model/guide pairs."""

from pyro_vae.components.discrete import BernoulliGuide, BernoulliPrior, ConcreteGuide, ConcretePrior
from pyro_vae.components.guides import GUIDES
from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.components.networks import NETWORKS
from pyro_vae.components.priors import PRIORS
from pyro_vae.data.datasets import DATASETS, Splits, batches, binarize, fixed_binarization, load_dataset
from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.vae import VAE, build_vae

__all__ = [
    "BernoulliGuide",
    "BernoulliPrior",
    "ConcreteGuide",
    "ConcretePrior",
    "DATASETS",
    "GUIDES",
    "LIKELIHOODS",
    "LinearGaussian",
    "NETWORKS",
    "PRIORS",
    "Splits",
    "VAE",
    "batches",
    "binarize",
    "build_vae",
    "fixed_binarization",
    "load_dataset",
]
