"""Amortization networks: maps from data to guide parameters (encoders) and from latents to likelihood
parameters (decoders), chosen by name from :data:`NETWORKS`.

A network builder takes ``in_dim`` and ``out_dim`` (and, if it asks for it, the data's ``image_shape``) plus its
own options and returns an ``nn.Module`` that maps ``[..., in_dim]`` to ``[..., out_dim]`` for any leading
(particle and batch) dimensions. Decoder outputs are parameter-major: entries ``p*D .. (p+1)*D - 1`` are the
likelihood's ``p``-th parameter for the ``D`` data dimensions.
"""

import math
from typing import Sequence

from torch import nn

from inference.registry import Registry

NETWORKS = Registry("network")

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


@NETWORKS.register("mlp")
class MLP(nn.Sequential):
    """A fully connected network ``in_dim -> hidden_sizes... -> out_dim`` with ``activation`` between layers and
    a linear output (Burda et al. 2015 use ``hidden_sizes=(200, 200)`` with ``tanh``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_sizes: Sequence[int] = (200, 200), activation="tanh"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; choose one of {', '.join(sorted(ACTIVATIONS))}")
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden sizes must be positive integers, got {list(hidden_sizes)}")
        sizes = [in_dim, *hidden_sizes]
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], out_dim))
        super().__init__(*layers)


def _flat_images(x, image_shape):
    """``[..., C*H*W]`` as ``[N, C, H, W]`` for a convolution, with the leading shape to restore afterwards."""
    return x.reshape(-1, *image_shape), x.shape[:-1]


@NETWORKS.register("conv")
class ConvEncoder(nn.Module):
    """A convolutional encoder for images ``image_shape = (C, H, W)`` (e.g. 1x28x28, 3x32x32): ``len(channels)``
    blocks of a 4x4 convolution with stride 2 (halving height and width) and ``activation``, then a linear map to
    ``out_dim``. Takes flattened images ``[..., C*H*W]``; the run supplies ``image_shape``."""

    def __init__(
        self, in_dim: int, out_dim: int, image_shape=None, channels: Sequence[int] = (32, 64), activation: str = "relu"
    ):
        super().__init__()
        _check_channels("conv", channels)
        image_shape = _check_image_shape("conv", image_shape, in_dim, len(channels))
        if in_dim != math.prod(image_shape):
            raise ValueError(f"'conv' is an encoder of {image_shape} images; as a decoder use 'deconv'")
        self.image_shape = tuple(image_shape)
        layers, previous = [], image_shape[0]
        for width in channels:
            layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1), _activation(activation)]
            previous = width
        self.features = nn.Sequential(*layers)
        scale = 2 ** len(channels)
        self.head = nn.Linear(previous * (image_shape[1] // scale) * (image_shape[2] // scale), out_dim)

    def forward(self, x):
        images, leading = _flat_images(x, self.image_shape)
        return self.head(self.features(images).flatten(1)).reshape(*leading, -1)


@NETWORKS.register("deconv")
class DeconvDecoder(nn.Module):
    """A convolutional decoder to images ``image_shape = (C, H, W)``: a linear map from ``z`` to a
    ``channels[0] x H/2^L x W/2^L`` grid, ``L = len(channels)`` upsampling blocks, then a 3x3 convolution to
    ``out_dim / (H W)`` output channels (the likelihood's parameters, parameter-major). ``upsampling`` is
    ``"transposed"`` (a 4x4 transposed convolution with stride 2) or ``"pixel-shuffle"`` (a 3x3 convolution to 4x
    the channels at low resolution, rearranged into 2x2 blocks; Shi et al. 2016)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        image_shape=None,
        channels: Sequence[int] = (64, 32),
        activation: str = "relu",
        upsampling: str = "transposed",
    ):
        super().__init__()
        _check_channels("deconv", channels)
        image_shape = _check_image_shape("deconv", image_shape, None, len(channels))
        pixels = image_shape[1] * image_shape[2]
        if out_dim % pixels:
            raise ValueError(f"'deconv' makes images of {image_shape}; out_dim {out_dim} is not a multiple of {pixels}")
        if upsampling not in ("transposed", "pixel-shuffle"):
            raise ValueError(f"upsampling must be 'transposed' or 'pixel-shuffle', got {upsampling!r}")
        scale = 2 ** len(channels)
        self.start = (channels[0], image_shape[1] // scale, image_shape[2] // scale)
        self.image_shape = tuple(image_shape)
        self.project = nn.Sequential(nn.Linear(in_dim, math.prod(self.start)), _activation(activation))
        layers = []
        for width_in, width_out in zip(channels, [*channels[1:], channels[-1]]):
            if upsampling == "transposed":
                layers.append(nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1))
            else:
                layers += [nn.Conv2d(width_in, 4 * width_out, 3, padding=1), nn.PixelShuffle(2)]
            layers.append(_activation(activation))
        layers.append(nn.Conv2d(channels[-1], out_dim // pixels, 3, padding=1))
        self.upsample = nn.Sequential(*layers)

    def forward(self, z):
        grid = self.project(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        return self.upsample(grid).flatten(1).reshape(*z.shape[:-1], -1)


def _activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


def _check_channels(network, channels):
    if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"'{network}' needs channels as a non-empty list of positive integers, got {channels!r}")


def _check_image_shape(network, image_shape, in_dim, num_blocks):
    if image_shape is None or len(image_shape) != 3:
        raise ValueError(f"'{network}' needs image data (C, H, W), got image shape {image_shape}: use 'mlp'")
    if image_shape[1] % 2**num_blocks or image_shape[2] % 2**num_blocks:
        raise ValueError(
            f"'{network}' halves the image size {num_blocks} times, so height and width must be multiples of "
            f"{2**num_blocks}; {tuple(image_shape)} is not: use fewer channels entries"
        )
    return tuple(image_shape)
