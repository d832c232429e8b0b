"""Training time per epoch in one process against N data-parallel processes (``pyro-vae train --nproc N``), side
by side in one run, with the validation ELBO each reaches (the same data stream and global batch, so it should
agree up to the latent noise).

    python benchmarks/data_parallel.py                                  # digits, 20 epochs, 1 and 2 processes
    python benchmarks/data_parallel.py --dataset fashion-mnist --epochs 2 --nproc 2
    python benchmarks/data_parallel.py --dataset fashion-mnist --epochs 2 --nproc 1 --device cuda   # one GPU

One process gets every CPU thread; each of N processes gets 1/N of them. Seconds per epoch are the median of the
epochs' ``train_seconds`` in ``metrics.json`` (training only: validation is timed apart).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def train(out, args, nproc):
    command = [sys.executable, "-m", "pyro_vae.cli", "train", "--dataset", args.dataset, "--epochs", str(args.epochs)]
    command += ["--batch-size", str(args.batch_size), "--out", out, "--no-progress", "--device", args.device]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode:
        raise SystemExit(f"{' '.join(command[1:])} failed:\n{finished.stderr}")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    return {
        "processes": nproc,
        "seconds_per_epoch": statistics.median(m["train_seconds"] for m in metrics),
        "val_elbo": metrics[-1]["val_elbo"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--nproc", type=int, default=2, help="processes to set against one (1: one process only)")
    parser.add_argument("--device", default="auto", help="pyro-vae train's --device (auto: a GPU when present)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        rows = [train(os.path.join(root, f"p{n}"), args, n) for n in sorted({1, args.nproc})]
    for row in rows:
        row["time_ratio_to_one_process"] = row["seconds_per_epoch"] / rows[0]["seconds_per_epoch"]
    print(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
