"""A data set split three ways, and the seeded permutation that splits one pool of rows: what every loader
(:mod:`pyro_vae.data.datasets`, :mod:`pyro_vae.data.user`) returns, in a module of its own so neither imports
the other's internals."""

from dataclasses import dataclass
from typing import Optional

import torch

from pyro_vae.data.linear_gaussian import LinearGaussian

#: How a likelihood reads data: "binarized" (0/1 draws of grey levels in [0, 1], a mass), "8-bit" (grey levels
#: 0..255, a mass), "dequantized" (a density on uniformly dequantized 8-bit levels, reported as a bound on their mass)
#: or "continuous" (a density on the values as given). Log-likelihoods of different representations are different
#: quantities and are never compared (the dequantized bound stands beside 8-bit masses).
REPRESENTATIONS = ("binarized", "8-bit", "dequantized", "continuous")


class DataError(ValueError):
    """Data that cannot be used as given; the message names the file or the problem and the fix."""


@dataclass
class Splits:
    """A dataset split three ways; each split is a float32 tensor ``[N, D]``."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    image_shape: Optional[tuple]  # (channels, height, width) of one flattened row; None for non-images
    binary_ok: bool  # every value lies in [0, 1], so it can be read as a Bernoulli mean
    seed: int = 0
    source: Optional[LinearGaussian] = None  # the generating model, when the data are synthetic
    #: How the rows were split: "seeded" (by ``seed``, from one pool), "official" (the official test set, validation
    #: held out of the official training set by ``seed``) or "file" (the user's file's own train/val/test arrays).
    split_source: str = "seeded"
    #: Every value is an integer level 0..255 and some exceed 1: grey levels not scaled to [0, 1].
    eight_bit: bool = False
    #: How the model reads the rows, decided once by :func:`pyro_vae.runs.prepare_data` and carried from there:
    #: one of :data:`REPRESENTATIONS`. Loaders return the values as given ("continuous").
    representation: str = "continuous"

    @property
    def binarized(self) -> bool:
        """Grey levels in [0, 1] read as 0/1 draws: dynamically binarized for training, once for evaluation."""
        return self.representation == "binarized"

    @property
    def dequantized(self) -> bool:
        """8-bit levels read as a density after uniform dequantization: dequantized afresh for training, once for
        evaluation, and reported as a bound on the 8-bit mass."""
        return self.representation == "dequantized"

    @property
    def data_dim(self) -> int:
        return self.train.shape[-1]

    def __repr__(self):
        sizes = ", ".join(f"{k}={tuple(getattr(self, k).shape)}" for k in ("train", "val", "test"))
        return (
            f"Splits({self.name!r}, {sizes}, image_shape={self.image_shape}, seed={self.seed}, "
            f"split_source={self.split_source!r}, representation={self.representation!r})"
        )


def split_by_permutation(data: torch.Tensor, sizes, seed: int):
    """Rows of ``data`` in a seeded random order, cut into consecutive pieces of the given ``sizes``."""
    order = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))
    return [data[idx] for idx in order.split(list(sizes))]
