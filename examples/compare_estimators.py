"""Train the same VAE under several gradient estimators and compare held-out log p(x), in pairs, from Python.

    python examples/compare_estimators.py                        # digits, about 2 minutes on 2 cores
    python examples/compare_estimators.py --epochs 2 --num-samples 200 --out runs/quick

The same comparison from the command line::

    pyro-vae compare --dataset digits --epochs 100 --latent-dim 10 --vary train.estimator=elbo,iwae,iwae-dreg \\
        --vary train.estimator.options.num_particles=5 --seeds 0 1 --jobs 2 --out runs/compare-digits

Each cell (estimator) trains once per seed into ``OUT/cells/<cell>/seed-<s>/`` (ordinary run folders), is
evaluated on the same test examples, and ``OUT/report.md`` gives log p(x), ELBO, gap, active units, k-hat, time,
and each estimator's paired difference to the ELBO with its standard error (:mod:`pyro_vae.compare`).
"""

import argparse

from pyro_vae.compare import Grid, run_comparison
from pyro_vae.compare.report import table_rows


def estimator_grid(estimators, num_particles, epochs, num_samples, seeds, dataset="digits") -> Grid:
    return Grid(
        base={
            "data": {"name": dataset},
            "model": {"latent_dim": 10},
            "train": {"epochs": epochs},
            "eval": {"method": {"name": "is", "options": {"num_samples": num_samples}}},
        },
        axes={"train.estimator": list(estimators), "train.estimator.options.num_particles": [num_particles]},
        seeds=list(seeds),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimators", nargs="+", default=["elbo", "iwae", "iwae-dreg", "iwae-stl"])
    parser.add_argument("--num-particles", type=int, default=5, help="particles K of every estimator")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=5000, help="importance samples K for evaluation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="runs/compare-estimators")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    grid = estimator_grid(args.estimators, args.num_particles, args.epochs, args.num_samples, args.seeds)
    result = run_comparison(grid, args.out, jobs=args.jobs, progress=not args.no_progress)
    for row in table_rows(result["cells"]):
        print(" | ".join(row))
    print(f"report: {result['paths']['report.md']}")


if __name__ == "__main__":
    main()
