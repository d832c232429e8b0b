"""pyro-vae: variational autoencoders as Pyro model/guide pairs.

The names below are imported on first use (PEP 562), so that ``pyro-vae --help`` starts without loading torch.
"""

import importlib

_EXPORTS = {
    "BernoulliGuide": "pyro_vae.components.discrete",
    "BernoulliPrior": "pyro_vae.components.discrete",
    "ConcreteGuide": "pyro_vae.components.discrete",
    "ConcretePrior": "pyro_vae.components.discrete",
    "GUIDES": "pyro_vae.components",
    "LIKELIHOODS": "pyro_vae.components",
    "NETWORKS": "pyro_vae.components",
    "PRIORS": "pyro_vae.components",
    "DATASETS": "pyro_vae.data",
    "Splits": "pyro_vae.data",
    "batches": "pyro_vae.data",
    "binarize": "pyro_vae.data",
    "fixed_binarization": "pyro_vae.data",
    "load_dataset": "pyro_vae.data",
    "LinearGaussian": "pyro_vae.data",
    "VAE": "pyro_vae.vae",
    "build_model": "pyro_vae.vae",
    "build_vae": "pyro_vae.vae",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pyro_vae' has no attribute '{name}'")
    try:
        module = importlib.import_module(_EXPORTS[name])
    except AttributeError as error:  # or Python reports only "cannot import name", hiding where it failed
        raise ImportError(f"importing {_EXPORTS[name]} failed: {error}") from error
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
