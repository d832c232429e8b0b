r"""Decoding with L2 (and L1) distortion, and the rate-distortion curve a weight on the KL term traces.

    python examples/rate_distortion.py                  # digits, 2 seeds, about 3 minutes on 2 cores
    python examples/rate_distortion.py --epochs 5 --seeds 0 --out runs/rd-quick

A Gaussian decoder with a fixed scale :math:`s` is an L2 autoencoder with a rate term:
:math:`-\log p(x \mid z) = \lVert x - f(z) \rVert^2 / 2s^2 + \text{const}`, so the objective with a weight
:math:`\beta` on the KL term,

.. math:: E_q[\log p(x \mid z)] - \beta\, \mathrm{KL}(q(z \mid x) \,\|\, p(z)) = -(D + \beta R),

trades the distortion :math:`D = E_q[-\log p(x \mid z)]` against the rate :math:`R = \mathrm{KL}` (Alemi et al.
2018, "Fixing a broken ELBO"): a larger :math:`\beta` buys a lower rate at a higher distortion. A Laplace decoder is
the L1 version (sharper reconstructions: the median, not the mean). A deterministic encoder (the ``delta`` guide)
is the zero-entropy end, a plain autoencoder with a prior penalty on its codes; its rate is not finite, so it is
drawn as a line at its distortion.

The sweep is a ``pyro-vae compare`` grid over ``train.estimator.options.kl_weight`` and the likelihood; each run
records ``kl`` (rate), ``distortion`` and ``reconstruction_mse`` in its ``eval/*.json``.
"""

import argparse
import os

import numpy as np

from pyro_vae.compare import Grid, run_comparison

GALLERY = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "gallery")
BETAS = [0.25, 0.5, 1.0, 2.0, 4.0]
LIKELIHOODS = ["gaussian", "laplace"]


def base(epochs, scale=0.1, num_samples=100):
    return {
        "data": {"name": "digits"},
        "model": {"latent_dim": 10, "likelihood": {"name": "gaussian", "options": {"scale": scale}}},
        "train": {"epochs": epochs},
        "eval": {"method": {"name": "is", "options": {"num_samples": num_samples}}},
    }


def sweep_grid(epochs, seeds, betas=BETAS, likelihoods=LIKELIHOODS, scale=0.1) -> Grid:
    """A KL weight (beta) sweep for each decoder."""
    return Grid(
        base=base(epochs, scale),
        axes={"model.likelihood.name": list(likelihoods), "train.estimator.options.kl_weight": list(betas)},
        seeds=list(seeds),
    )


def autoencoder_grid(epochs, seeds, likelihoods=LIKELIHOODS, scale=0.1) -> Grid:
    """The zero-entropy end: a deterministic (delta) encoder, evaluated with the prior as proposal."""
    tree = base(epochs, scale)
    tree["model"]["guide"] = "delta"
    tree["eval"]["method"] = {"name": "is-prior", "options": {"num_samples": 1000}}
    return Grid(base=tree, axes={"model.likelihood.name": list(likelihoods)}, seeds=list(seeds))


def curves(result) -> dict:
    """``{likelihood: {"beta": [...], "rate": [...], "distortion": [...], "mse": [...]}}``, means over seeds."""
    out = {}
    for s in result["cells"]:
        runs = [r for r in result["runs"] if r["cell"] == s["cell"] and r["state"] == "done"]
        likelihood, beta = runs[0]["model.likelihood.name"], runs[0]["train.estimator.options.kl_weight"]
        entry = out.setdefault(likelihood, {"beta": [], "rate": [], "distortion": [], "mse": []})
        entry["beta"].append(beta)
        entry["rate"].append(s["kl"])
        entry["distortion"].append(s["distortion"])
        entry["mse"].append(s["reconstruction_mse"])
    return out


def figure(sweep: dict, autoencoder: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (likelihood, c) in enumerate(sweep.items()):
        color = f"C{i}"
        for ax, key, label in ((axes[0], "distortion", "distortion E[-log p(x|z)] (nats)"), (axes[1], "mse", "MSE")):
            ax.plot(c["rate"], c[key], "o-", color=color, label=f"{likelihood} decoder")
            for beta, x, y in zip(c["beta"], c["rate"], c[key]):
                ax.annotate(f"β={beta:g}", (x, y), fontsize=7, textcoords="offset points", xytext=(4, 4))
            if likelihood in autoencoder:
                ax.axhline(autoencoder[likelihood][key], color=color, ls="--", lw=1,
                           label=f"{likelihood}, delta encoder (rate ∞)")  # fmt: skip
            ax.set_xlabel("rate KL(q(z|x) || p(z)) (nats)")
            ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    axes[0].set_title("Rate-distortion curve traced by β")
    axes[1].set_title("Reconstruction error against rate")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="runs/rate-distortion")
    parser.add_argument("--figure", default=os.path.join(GALLERY, "rate_distortion.png"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    options = {"jobs": args.jobs, "progress": not args.no_progress, "pictures": False}
    sweep = run_comparison(sweep_grid(args.epochs, args.seeds), os.path.join(args.out, "sweep"), **options)
    ae = run_comparison(autoencoder_grid(args.epochs, args.seeds), os.path.join(args.out, "delta"), **options)
    autoencoder = {
        r["model.likelihood.name"]: {
            "distortion": np.mean([x["distortion"] for x in ae["runs"] if x["cell"] == r["cell"]]),
            "mse": np.mean([x["reconstruction_mse"] for x in ae["runs"] if x["cell"] == r["cell"]]),
        }
        for r in ae["runs"]
    }
    rd = curves(sweep)
    for likelihood, c in rd.items():
        for beta, rate, distortion, mse in zip(c["beta"], c["rate"], c["distortion"], c["mse"]):
            print(f"{likelihood:>9} beta={beta:<5g} rate {rate:7.2f}  distortion {distortion:9.2f}  MSE {mse:.4f}")
    print(f"wrote {figure(rd, autoencoder, args.figure)}")
    return rd, autoencoder


if __name__ == "__main__":
    main()
