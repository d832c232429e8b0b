"""A multi-armed bandit over decoders on Fashion-MNIST rescaled to 32x32, against training every decoder equally.

    python examples/decoder_bandit.py --steps 600          # about 5 minutes on 2 CPU cores
    python examples/decoder_bandit.py --dataset digits --steps 200 --out runs/bandit-quick

One encoder and guide; four decoders (an MLP, transposed-convolution and pixel-shuffle decoders, and a linear map
to a 16x16 grid with one deconvolution); each policy of :mod:`pyro_vae.bandit` (UCB1, Thompson sampling,
epsilon-greedy) picks which decoder takes each gradient step, rewarded by the negative reconstruction loss; the
``uniform`` policy trains every decoder for the same budget. Writes ``OUT/bandit.json`` and a figure of the pulls
over time and each decoder's validation ELBO per policy. QMNIST (``--dataset qmnist``) and CIFAR-10
(``--dataset cifar10``, 3x32x32) load through torchvision with ``--data-root`` or ``--download``.
"""

import argparse
import json
import os

import numpy as np

from pyro_vae.bandit import run_bandit
from pyro_vae.config import Component, RunConfig, apply_overrides

GALLERY = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "gallery")
POLICIES = ["ucb1", "thompson", "epsilon-greedy", "uniform"]


def decoders_for(image_size: int) -> dict:
    """Name -> decoder component; the convolutional ones need the side to be a multiple of 4."""
    decoders = {"mlp": Component("mlp", {"hidden_sizes": [256], "activation": "relu"})}
    if image_size % 4 == 0:
        decoders["deconv (transposed)"] = Component("deconv", {"channels": [32, 16]})
        decoders["deconv (pixel shuffle)"] = Component("deconv", {"channels": [32, 16], "upsampling": "pixel-shuffle"})
        decoders["linear + deconv"] = Component("deconv", {"channels": [16]})
    return decoders


def config_for(dataset, latent_dim=16, data_root=None):
    return apply_overrides(
        RunConfig(),
        [
            ("data.name", dataset),
            ("data.root", data_root),
            ("data.num_val", None if dataset == "digits" else 1000),
            ("model.latent_dim", latent_dim),
            ("model.encoder.options.hidden_sizes", [256]),
            ("model.encoder.options.activation", "relu"),
            ("train.batch_size", 100),
        ],
    )


def figure(results: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = next(iter(results.values()))["decoders"]
    fig, axes = plt.subplots(1, len(results) + 1, figsize=(4.2 * (len(results) + 1), 3.8))
    for ax, (policy, r) in zip(axes, results.items()):
        choices = np.array(r["choices"])
        for arm, name in enumerate(names):
            ax.plot(np.cumsum(choices == arm), label=name)
        ax.set_title(f"{policy}: cumulative pulls")
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    for i, (policy, r) in enumerate(results.items()):
        offsets = np.arange(len(names)) + (i - (len(results) - 1) / 2) * 0.12
        axes[-1].plot(offsets, r["val_elbo"], "o", label=policy)
    axes[-1].set_xticks(np.arange(len(names)), names, rotation=25, ha="right", fontsize=7)
    axes[-1].set_ylabel("nats per example")
    axes[-1].set_title("validation ELBO per decoder")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist-32")
    parser.add_argument("--data-root")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--policies", nargs="+", default=POLICIES)
    parser.add_argument("--out", default="runs/decoder-bandit")
    parser.add_argument("--figure", default=os.path.join(GALLERY, "decoder_bandit.png"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = config_for(args.dataset, data_root=args.data_root)
    from pyro_vae.runs import prepare_data

    side = prepare_data(config).image_shape[-1]
    decoders = decoders_for(side)
    results = {}
    for policy in args.policies:
        r = run_bandit(config, list(decoders.values()), policy=policy, steps=args.steps, names=list(decoders),
                       progress=not args.no_progress)  # fmt: skip
        results[policy] = r
        print(f"{policy:>15}: pulls {r['pulls']}, validation ELBO {[round(v, 2) for v in r['val_elbo']]}, "
              f"chosen {r['chosen']}")  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bandit.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {figure(results, args.figure)} and {os.path.join(args.out, 'bandit.json')}")
    return results


if __name__ == "__main__":
    main()
