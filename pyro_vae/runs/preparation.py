"""From a configuration to what training and evaluation read: the data as the model reads them, the model and the
estimator.

How the model reads the data (its representation: binarized, 8-bit, dequantized or continuous, see
:data:`~pyro_vae.data.splits.REPRESENTATIONS`) follows from the likelihood and ``data.dequantize``. It is decided
here once, checked against the data, and carried on the :class:`~pyro_vae.data.splits.Splits` that
:func:`prepare_data` returns; everything downstream (minibatches, evaluation splits, units, pictures, comparisons)
reads ``splits.representation``.
"""

import dataclasses
import math

import pyro
import torch

from inference import estimator
from inference.importance import forked_rng
from pyro_vae.components import LIKELIHOODS
from pyro_vae.config import ConfigError, RunConfig
from pyro_vae.data import batches, fixed_binarization, fixed_dequantization, load_dataset
from pyro_vae.data.mapped import is_lazy
from pyro_vae.data.splits import Splits
from pyro_vae.vae import VAE, build_model

SPLITS = ("train", "val", "test")


def data_representation(config: RunConfig) -> str:
    """How the likelihood of ``config`` reads the data: its declared ``data_representation``, made
    ``"dequantized"`` for a density on data that ``data.dequantize`` dequantizes."""
    representation = LIKELIHOODS.get(config.model.likelihood.name).data_representation
    return "dequantized" if representation == "continuous" and config.data.dequantize else representation


def prepare_data(config: RunConfig) -> Splits:
    """The run's splits, drawn by the data seed (the same for every training seed), as the model reads them, with
    their ``representation`` decided; a :class:`~pyro_vae.config.ConfigError` for data the likelihood cannot read."""
    data = config.data
    splits = load_dataset(
        data.name,
        root=data.root,
        download=data.download,
        seed=data.seed,
        num_train=data.num_train,
        num_val=data.num_val,
        num_test=data.num_test,
        memory_map=data.memory_map,
    )
    representation = data_representation(config)
    _check_representation(config, splits, representation)
    if representation in ("8-bit", "dequantized") and not splits.eight_bit:
        splits = to_eight_bit(splits)
    if config.train.batch_size > len(splits.train):
        raise ConfigError(
            f"train.batch_size {config.train.batch_size} is larger than the {len(splits.train)} training examples: "
            "choose a smaller --batch-size"
        )
    return dataclasses.replace(splits, representation=representation)


def _check_representation(config: RunConfig, splits: Splits, representation: str) -> None:
    likelihood, name = config.model.likelihood.name, config.data.name
    if config.data.dequantize and representation != "dequantized":
        raise ConfigError(
            f"data.dequantize gives a density on dequantized 8-bit levels, but the '{likelihood}' likelihood reads "
            f"{representation} data: choose a density on [0, 1] (gaussian, laplace, beta, continuous-bernoulli) or "
            "drop data.dequantize"
        )
    if representation == "binarized" and splits.eight_bit:
        raise ConfigError(
            f"the '{likelihood}' likelihood reads 0/1 data made from grey levels in [0, 1], but '{name}' holds 8-bit "
            "levels 0..255: choose an 8-bit likelihood (--likelihood discretized-logistic or categorical-256), or "
            "save the data divided by 255"
        )
    if splits.eight_bit or representation == "continuous" or splits.binary_ok:
        return
    if representation == "dequantized":
        raise ConfigError(
            f"data.dequantize needs pixel data in [0, 1] made of 8-bit levels, but '{name}' is real-valued: "
            "drop data.dequantize"
        )
    raise ConfigError(
        f"the '{likelihood}' likelihood reads {representation} grey levels made from data in [0, 1], but '{name}' "
        "is real-valued: choose --likelihood gaussian"
    )


def to_eight_bit(splits: Splits) -> Splits:
    """Grey levels in [0, 1] as the integers 0..255 (stored as floats) that 8-bit likelihoods read."""
    scaled = {split: _scaled_to_levels(getattr(splits, split)) for split in SPLITS}
    return dataclasses.replace(splits, **scaled, binary_ok=False)


def _scaled_to_levels(x):
    """``round(255 x)``, of a tensor at once or of rows on disk as they are read."""
    return x.transformed(_to_levels) if is_lazy(x) else _to_levels(x)


def _to_levels(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round()


def eval_split(splits: Splits, split: str) -> torch.Tensor:
    """A split as the model sees it at evaluation: binarized once, by the data seed, for a 0/1 likelihood;
    dequantized once, by the data seed, for dequantized data."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got '{split}'")
    x = getattr(splits, split)
    # A different fixed seed per split, so validation and test binarizations (or dequantizations) are independent.
    seed = splits.seed * 3 + SPLITS.index(split) + 1
    if splits.binarized:
        x = fixed_binarization(x, seed=seed)
    elif splits.dequantized:
        x = fixed_dequantization(x, seed=seed)
    return x


def training_batches(splits: Splits, batch_size: int, generator: torch.Generator, device=None):
    """Shuffled minibatches of the training split, binarized or dequantized afresh as the representation says."""
    train = splits.train if device is None else splits.train.to(device)
    return batches(
        train,
        batch_size,
        shuffle=True,
        generator=generator,
        dynamic_binarization=splits.binarized,
        dequantization=splits.dequantized,
    )


def dequantization_correction(splits: Splits, data_dim: int) -> float:
    """``-D log 256`` for dequantized data, else 0. For 8-bit levels ``k`` and ``y = (k + u) / 256``, Jensen's
    inequality gives ``log P(k) = log E_u[p(y) / 256^D] >= E_u[log p(y)] - D log 256``, so the density's
    log p(y) plus this correction is a (stochastic) lower bound on the 8-bit log-mass (Theis et al. 2016)."""
    return -data_dim * math.log(256) if splits.dequantized else 0.0


def model_for(config: RunConfig, splits: Splits) -> VAE:
    """The VAE of ``config.model`` for these data, initialised by the training seed."""
    pyro.set_rng_seed(config.train.seed)
    vae = build_model(
        config.model, data_dim=splits.data_dim, num_data=len(splits.train), image_shape=splits.image_shape
    )
    # e.g. a VampPrior whose pseudo-inputs start as training examples; nothing for most priors
    vae.prior.initialize_from_data(splits.train, torch.Generator().manual_seed(config.train.seed))
    return vae


def estimator_for(config: RunConfig, vae: VAE):
    """The gradient estimator of ``config.train.estimator``, told the model's plate nesting."""
    options = {"max_plate_nesting": vae.max_plate_nesting, **config.train.estimator.options}
    return estimator(config.train.estimator.name, **options)


def trains_the_elbo_by_another_name(config: RunConfig) -> bool:
    """Whether the estimator is an importance-weighted bound averaging one weight per log-mean-exp (``K = 1``, the
    default ``num_particles``), which is the ELBO: an ``iwae`` run that trains what an ``elbo`` run trains. An
    estimator whose options do not build is left to the run to refuse."""
    try:
        chosen = estimator(config.train.estimator.name, **config.train.estimator.options)
    except (TypeError, ValueError):
        return False
    return chosen.is_the_elbo()


@torch.no_grad()
def check_data_support(config: RunConfig, vae: VAE, x: torch.Tensor, split: str) -> None:
    """Refuse data outside the support of the likelihood (e.g. values outside (0, 1) for a Beta), before training."""
    for start in range(0, len(x), 1000):
        chunk = x[start : start + 1000]
        with forked_rng():  # leave the training draws unchanged
            likelihood = vae.decode(vae.posterior(chunk).sample())
        outside = (~likelihood.support.check(chunk)).reshape(len(chunk), -1).any(1).nonzero().reshape(-1)
        if len(outside):
            row = chunk[outside[0]]
            raise ConfigError(
                f"the {split} data lie outside the support of the '{config.model.likelihood.name}' likelihood "
                f"({likelihood.support}), e.g. {split} example {start + outside[0].item()} with values from "
                f"{row.min().item():.4g} to {row.max().item():.4g}: choose a likelihood for these values, or "
                "rescale the data"
            )
