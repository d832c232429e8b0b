r"""What a VAE's latent space looks like, next to a plain autoencoder's.

    python examples/latent_space.py                  # digits, 2-D latents, about a minute on 2 CPU cores

Both models have the same networks and a 2-D code. The VAE is trained on the ELBO with a diagonal-normal guide;
the plain autoencoder has a deterministic encoder (the ``delta`` guide) and a KL weight of 0, so its objective is
the reconstruction term alone. Three views of each (the figure's rows):

* the posterior means of the test images, coloured by digit class;
* the decoder's means over a grid of codes: the prior's quantiles for the VAE (Kingma & Welling 2014, fig. 4),
  the same quantiles of the codes' own spread for the autoencoder;
* decoded straight-line interpolations between the codes of pairs of test images.

The VAE's KL term asks every code to be a draw-able region of the prior, so its codes fill a ball around 0 and
every point in it decodes to something digit-like, and paths between codes pass through plausible images; the
autoencoder places codes wherever reconstruction is easiest, leaving gaps that decode to nothing in particular
(the Q&A's argument for why a VAE, not an autoencoder, is a generative model). ``smoothness`` quantifies the
second view: the mean squared change between decoded images of neighbouring grid points.
"""

import argparse
import os

import numpy as np
import torch

from pyro_vae.config import RunConfig, apply_overrides
from pyro_vae.runs import load_run, train_run

GALLERY = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "gallery")


def configs(epochs: int) -> dict:
    common = [
        ("data.name", "digits"),
        ("model.latent_dim", 2),
        ("model.encoder.options.hidden_sizes", [128, 64]),
        ("model.decoder.options.hidden_sizes", [64, 128]),
        ("train.epochs", epochs),
    ]
    vae = apply_overrides(RunConfig(), common)
    autoencoder = apply_overrides(
        RunConfig(),
        common
        + [
            ("model.guide", "delta"),
            ("train.estimator.options.kl_weight", 0.0),  # reconstruction alone: a plain autoencoder
            ("eval.method", "is-prior"),
        ],
    )
    return {"VAE": vae, "autoencoder": autoencoder}


def digit_labels(split: str, seed: int = 0) -> torch.Tensor:
    """The classes of the digits' ``split`` rows, in the order :func:`pyro_vae.data.load_dataset` gives them."""
    from sklearn.datasets import load_digits

    from pyro_vae.data.datasets import split_by_permutation

    targets = torch.as_tensor(load_digits().target)
    held_out = len(targets) // 10
    sizes = (len(targets) - 2 * held_out, held_out, held_out)
    return dict(zip(("train", "val", "test"), split_by_permutation(targets, sizes, seed)))[split]


@torch.no_grad()
def views(vae, x, grid_size=12, quantiles=None, pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)), steps=10) -> dict:
    """Codes of ``x``, decoded grid of codes, and decoded interpolations; ``quantiles`` maps ``[0, 1]`` levels to
    code values per dimension (default: standard normal quantiles)."""
    codes = vae.posterior(x).mean
    levels = torch.linspace(0.05, 0.95, grid_size)
    if quantiles is None:
        axis = [torch.distributions.Normal(0.0, 1.0).icdf(levels)] * 2
    else:
        axis = [quantiles(levels, d) for d in range(2)]
    grid = torch.cartesian_prod(axis[1].flip(0), axis[0])[:, [1, 0]]  # rows: z_1 from high to low; columns: z_0
    decoded = vae.decode(grid).mean.reshape(grid_size, grid_size, -1)
    paths = []
    for a, b in pairs:
        t = torch.linspace(0, 1, steps).unsqueeze(1)
        paths.append(vae.decode((1 - t) * codes[a] + t * codes[b]).mean)
    return {"codes": codes, "grid": decoded, "paths": torch.stack(paths)}


def smoothness(grid: torch.Tensor) -> float:
    """Mean squared difference between decoded images of horizontally and vertically neighbouring grid codes."""
    across = (grid[:, 1:] - grid[:, :-1]).pow(2).mean()
    down = (grid[1:] - grid[:-1]).pow(2).mean()
    return float((across + down) / 2)


def tile(images: torch.Tensor, rows: int, cols: int, side: int) -> np.ndarray:
    """``rows x cols`` images (row-major), as one picture with a one-pixel border between them."""
    from pyro_vae.runs import image_grid

    grid = image_grid(images.reshape(rows * cols, -1), (1, side, side), nrow=cols, upscale=1)
    return grid.permute(1, 2, 0).numpy()


def figure(results: dict, labels, side: int, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 3, figsize=(15, 4.6 * len(results)), layout="constrained",
                             gridspec_kw={"width_ratios": [1.2, 1, 1]})  # fmt: skip
    for row, (name, v) in enumerate(results.items()):
        codes = v["codes"].numpy()
        points = axes[row, 0].scatter(codes[:, 0], codes[:, 1], c=labels.numpy(), cmap="tab10", s=8)
        fig.colorbar(points, ax=axes[row, 0], label="digit")
        axes[row, 0].set_title(f"{name}: posterior means of test digits")
        grid_size = v["grid"].shape[0]
        axes[row, 1].imshow(tile(v["grid"], grid_size, grid_size, side))
        axes[row, 1].set_title(f"{name}: decoded grid (smoothness {smoothness(v['grid']):.4f})")
        paths = v["paths"]
        axes[row, 2].imshow(tile(paths, paths.shape[0], paths.shape[1], side))
        axes[row, 2].set_title(f"{name}: interpolations between test codes")
        for ax in axes[row, 1:]:
            ax.axis("off")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--out", default="runs/latent-space")
    parser.add_argument("--figure", default=os.path.join(GALLERY, "latent_space.png"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    for name, config in configs(args.epochs).items():
        run_dir = os.path.join(args.out, name.lower())
        train_run(config, run_dir, resume=True, progress=not args.no_progress)
        run = load_run(run_dir, device="cpu")
        splits, vae = run.splits, run.vae
        x = splits.test
        quantiles = None
        if name == "autoencoder":
            codes = vae.posterior(x).mean.detach()
            quantiles = lambda levels, d, codes=codes: torch.quantile(codes[:, d], levels)  # noqa: E731
        results[name] = views(vae, x, quantiles=quantiles)
        print(f"{name:>12}: grid smoothness {smoothness(results[name]['grid']):.4f}")
    side = splits.image_shape[-1]
    print(f"wrote {figure(results, digit_labels('test'), side, args.figure)}")
    return results


if __name__ == "__main__":
    main()
