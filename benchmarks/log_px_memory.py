"""Peak memory and time of ``inference.log_marginal_likelihood`` with and without chunking, side by side.

Each configuration runs in a fresh subprocess so its peak resident memory (``ru_maxrss``) is its own. The model is
a Burda-sized VAE (784-200-200-50, Bernoulli) with random weights on Fashion-MNIST-shaped random binary data; the
numbers measure the estimator's memory, not the model's quality.

    python benchmarks/log_px_memory.py                      # K = 5000 on 200 examples
    python benchmarks/log_px_memory.py --num-examples 1000 --num-samples 5000
"""

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = {
    "default (100 examples x 20 particles, auto)": {"data_batch_size": 100, "particle_batch_size": "auto"},
    "chunked (100 examples x 500 particles)": {"data_batch_size": 100, "particle_batch_size": 500},
    "chunked (20 examples x 100 particles)": {"data_batch_size": 20, "particle_batch_size": 100},
    "one pass per 100 examples, all K at once": {"data_batch_size": 100, "particle_batch_size": None},
}


def run_one(num_examples, num_samples, options):
    import pyro
    import torch

    from inference import log_marginal_likelihood
    from pyro_vae import build_vae

    torch.set_num_threads(2)
    pyro.set_rng_seed(0)
    vae = build_vae(784, latent_dim=50, hidden_sizes=(200, 200), num_data=60000)
    x = torch.bernoulli(torch.full((num_examples, 784), 0.3))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=num_samples, **options)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mib": peak / 1024, "extra_mib": (peak - base) / 1024, "log_px": result.mean}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-examples", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.num_examples, args.num_samples, CONFIGS[args.child])))
        return
    rows = {}
    for name in CONFIGS:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--num-examples",
                str(args.num_examples),
                "--num-samples",
                str(args.num_samples),
                "--child",
                name,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows[name] = json.loads(out.strip().splitlines()[-1])
    reference = rows[next(iter(CONFIGS))]
    print(f"K = {args.num_samples}, {args.num_examples} examples, 784-200-200-50 Bernoulli VAE")
    print(f"{'configuration':<44} {'s':>7} {'peak MiB':>9} {'extra MiB':>10} {'extra / first':>14} {'log p(x)':>9}")
    for name, row in rows.items():
        ratio = row["extra_mib"] / reference["extra_mib"]
        print(
            f"{name:<44} {row['seconds']:>7.1f} {row['peak_mib']:>9.0f} {row['extra_mib']:>10.0f} "
            f"{ratio:>14.2f} {row['log_px']:>9.2f}"
        )


if __name__ == "__main__":
    main()
