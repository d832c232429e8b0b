"""pyro-vae: variational autoencoders as Pyro model/guide pairs."""

from .data import DATASETS, Splits, batches, binarize, fixed_binarization, load_dataset
from .discrete import BernoulliGuide, BernoulliPrior, ConcreteGuide, ConcretePrior
from .guides import GUIDES
from .likelihoods import LIKELIHOODS
from .linear_gaussian import LinearGaussian
from .networks import NETWORKS
from .priors import PRIORS
from .vae import VAE, build_vae

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
