"""Train the same VAE under several gradient estimators and compare held-out log p(x), side by side.

    python examples/compare_estimators.py                                   # digits, about 3 minutes on 2 cores
    python examples/compare_estimators.py --dataset fashion-mnist --epochs 10 --num-test 1000 --out runs/compare-fm

Each estimator trains from the same seed into ``OUT/<estimator>-k<K>/`` (a normal run folder, so
``pyro-vae evaluate`` and ``pyro-vae sample`` work on it), is evaluated with the same K-sample importance-weighted
estimator on the same fixed binarization of the test split, and the table (log p(x) with its Monte Carlo and
across-example standard errors, ELBO, active units, training seconds) is printed and written to
``OUT/comparison.md`` with a plot ``OUT/comparison.png``. Differences between rows are paired (same examples), so
the Monte Carlo standard error is the one to read when asking whether two rows differ.
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae.config import RunConfig, apply_overrides  # noqa: E402
from pyro_vae.runs import evaluate_run, read_metrics, train_run  # noqa: E402

DEFAULT_METHODS = ["elbo:1", "elbo:5", "iwae:5", "iwae-dreg:5", "iwae-stl:5", "ciwae:5"]


def parse_method(text):
    name, _, k = text.partition(":")
    return name, int(k or 1)


def run_grid(methods, out, dataset, epochs, num_test, num_samples, hidden_sizes, latent_dim, seed, progress):
    rows = []
    for name, k in methods:
        run_dir = os.path.join(out, f"{name}-k{k}")
        config = apply_overrides(
            RunConfig(),
            [
                ("data.name", dataset),
                ("data.num_test", num_test),
                ("train.estimator", {"name": name, "options": {"num_particles": k}}),
                ("train.epochs", epochs),
                ("train.seed", seed),
                ("model.latent_dim", latent_dim),
                ("model.encoder.options.hidden_sizes", hidden_sizes),
                ("model.decoder.options.hidden_sizes", hidden_sizes[::-1]),
            ],
        )
        train_run(config, run_dir, resume=True, progress=progress)
        report = evaluate_run(
            run_dir, method_options={"num_samples": num_samples}, progress=progress, posterior_examples=()
        )
        seconds = sum(m["seconds"] for m in read_metrics(run_dir))
        rows.append({"estimator": name, "k": k, "train_seconds": seconds, **report})
        print(f"{name:>12} K={k:<3} log p(x) {report['log_px']:9.3f}  ELBO {report['elbo']:9.3f}", flush=True)
    return rows


def write_report(rows, out):
    lines = [
        "| estimator | K | log p(x) | MC s.e. | s.e. over examples | ELBO | active units | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['estimator']} | {r['k']} | {r['log_px']:.3f} | {r['log_px_mc_stderr']:.3f} | "
            f"{r['log_px_stderr']:.3f} | {r['elbo']:.3f} | {r['active_units']} | {r['train_seconds']:.0f} |"
        )
    table = "\n".join(lines)
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "comparison.json"), "w") as f:
        json.dump(rows, f, indent=2)
    labels = [f"{r['estimator']}\nK={r['k']}" for r in rows]
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.5))
    xs = range(len(rows))
    ax.errorbar(
        xs,
        [r["log_px"] for r in rows],
        yerr=[2 * r["log_px_mc_stderr"] for r in rows],
        fmt="o",
        label="log p(x) (IS, ±2 MC s.e.)",
    )
    ax.plot(xs, [r["elbo"] for r in rows], "s", label="ELBO")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("nats per test example")
    ax.set_title(f"{rows[0]['dataset']}: held-out log p(x), K={rows[0]['num_samples']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "comparison.png"), dpi=120)
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="estimator:K pairs")
    parser.add_argument("--dataset", default="digits", help="data set name")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs per estimator")
    parser.add_argument("--num-test", type=int, default=None, help="evaluate on the first this many test examples")
    parser.add_argument("--num-samples", type=int, default=5000, help="importance samples K for evaluation")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[200, 200], help="hidden layer sizes")
    parser.add_argument("--latent-dim", type=int, default=10, help="latent dimension")
    parser.add_argument("--seed", type=int, default=0, help="seed shared by every run")
    parser.add_argument("--out", default="runs/compare-digits", help="folder for the runs and the report")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = run_grid(
        [parse_method(m) for m in args.methods],
        args.out,
        args.dataset,
        args.epochs,
        args.num_test,
        args.num_samples,
        args.hidden_sizes,
        args.latent_dim,
        args.seed,
        not args.no_progress,
    )
    print(write_report(rows, args.out))


if __name__ == "__main__":
    main()
