"""Data sets with fixed splits, minibatches with dynamic binarization, and synthetic data of known log p(x)."""

from pyro_vae.data.datasets import (
    DATASETS,
    FASHION_MNIST_SYSTEM_FOLDERS,
    Splits,
    batches,
    binarize,
    dequantize,
    find_idx_image_files,
    fixed_binarization,
    fixed_dequantization,
    load_dataset,
)
from pyro_vae.data.linear_gaussian import LinearGaussian

__all__ = [
    "DATASETS",
    "FASHION_MNIST_SYSTEM_FOLDERS",
    "LinearGaussian",
    "Splits",
    "batches",
    "binarize",
    "find_idx_image_files",
    "dequantize",
    "fixed_binarization",
    "fixed_dequantization",
    "load_dataset",
]
