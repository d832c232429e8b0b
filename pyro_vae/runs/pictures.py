"""Pictures of a trained run: samples from the prior and reconstructions of data, as PNG grids in its folder."""

import os

import pyro
import torch

from inference.atomic import atomic_write
from pyro_vae.folder import RunLock, command_line
from pyro_vae.runs.loading import load_run
from pyro_vae.runs.preparation import eval_split


def image_grid(flat: torch.Tensor, image_shape, nrow: int, upscale: int):
    import torchvision.utils

    images = flat.reshape(-1, *image_shape).clamp(0, 1)
    if upscale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=upscale, mode="nearest")
    return torchvision.utils.make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


def sample_run(run_dir, *, num_samples=64, nrow=8, split="test", seed=0, upscale=None, device="auto") -> dict:
    """Write ``samples.png`` (likelihood means of ``z ~ p(z)``) and ``reconstructions.png`` (data rows alternating
    with their reconstructions) into the run folder; returns the two paths."""
    run = load_run(run_dir, device)
    grids = picture_grids(run, num_samples=num_samples, nrow=nrow, split=split, seed=seed, upscale=upscale)
    return write_pictures(run_dir, grids)


@torch.no_grad()
def picture_grids(run, *, num_samples=64, nrow=8, split="test", seed=0, upscale=None) -> dict:
    """``{"samples", "reconstructions"}``: image grids ``(3, H, W)`` in [0, 1] of a
    :class:`~pyro_vae.runs.LoadedRun`'s samples and of ``split`` rows alternating with their reconstructions."""
    config, splits, vae = run.config, run.splits, run.vae
    if splits.image_shape is None:
        raise ValueError(f"dataset '{config.data.name}' has no image shape, so there is nothing to draw as images")
    upscale = upscale or max(1, 112 // splits.image_shape[-1])
    device = next(vae.parameters()).device
    pyro.set_rng_seed(seed)
    samples = vae.sample_means(num_samples).cpu()
    x = eval_split(splits, split)[: nrow * max(1, num_samples // (2 * nrow))]
    rows = []
    for start in range(0, len(x), nrow):
        chunk = x[start : start + nrow]
        rows += [chunk, vae.reconstruct(chunk.to(device)).cpu()]
    brightness = brightness_of(splits)
    return {
        "samples": image_grid(samples / brightness, splits.image_shape, nrow, upscale),
        "reconstructions": image_grid(torch.cat(rows) / brightness, splits.image_shape, nrow, upscale),
    }


def write_pictures(run_dir, grids: dict) -> dict:
    """Write each of :func:`picture_grids` as ``<name>.png`` into the run folder, under its lock; returns the
    paths."""
    import torchvision.utils

    paths = {name: os.path.join(run_dir, f"{name}.png") for name in grids}
    with RunLock(run_dir, command_line()):
        for name, grid in grids.items():
            atomic_write(paths[name], lambda f, grid=grid: torchvision.utils.save_image(grid, f, format="png"))
    return paths


def brightness_of(splits) -> float:
    """What divides the model's means to show them in [0, 1]: 255 for 8-bit levels, else 1."""
    return 255.0 if splits.representation == "8-bit" else 1.0
