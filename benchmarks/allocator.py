"""log p(x) under glibc's default ``malloc`` settings against those of ``inference.allocator.keep_freed_memory``,
each in a fresh process, in alternating rounds; with the minor page faults each run took.

    python benchmarks/allocator.py                 # 3 rounds: K = 5000 on 100 examples, after a K = 500 warm-up
    python benchmarks/allocator.py --quick         # K = 40 on 20 examples, 1 round: the check the test suite runs

A fresh process builds the Burda-sized VAE of ``log_px_speed.py`` (random weights, random binary data), estimates
log p(x) once with K = 500 to warm up, then times ``log_marginal_likelihood`` at K = 5000 on 100 examples (what a
script or notebook that calls the Python API does), and measures the matrix-product FLOP/s for the "FLOP/s
fraction" of ``log_px_speed.py``. How many pages the C library returns to the system, and so how
many the next pass faults back in, depends on the heap's history, which is why each case gets a new process.
With freed memory kept, ``particle_batch_size="auto"`` also makes larger CPU passes (8192 draws against 2048), so
"kept" is what ``pyro-vae evaluate`` runs and "default" what a Python program gets without
``inference.allocator.keep_freed_memory()``.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def run_one(kept, num_examples, num_samples):
    """One case, in a process of its own (``__file__`` run as a script, so ``log_px_speed`` imports from here)."""
    if kept:
        from inference.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("keep_freed_memory() was not applied (not glibc, or MALLOC_* set in the environment)")
    import torch
    from log_px_speed import binary_data, build, decoder_flops_per_draw, matmul_flops_per_second

    from inference import log_marginal_likelihood

    torch.set_num_threads(2)
    vae, x = build(), binary_data(num_examples, "cpu")
    estimate = lambda k: log_marginal_likelihood(vae.model, vae.guide, x, num_samples=k, max_plate_nesting=1)
    estimate(max(num_samples // 10, 2))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    log_px = estimate(num_samples).mean
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    work = decoder_flops_per_draw() * num_examples * num_samples
    fraction = work / seconds / matmul_flops_per_second()
    return {"seconds": seconds, "page_faults": faults, "flops_fraction": fraction, "log_px": log_px}


def child(kept, num_examples, num_samples):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    command = [sys.executable, __file__, "--child", "kept" if kept else "default"]
    command += ["--num-examples", str(num_examples), "--num-samples", str(num_samples)]
    finished = subprocess.run(command, capture_output=True, text=True, env=environment)
    if finished.returncode:
        raise SystemExit(f"the {'kept' if kept else 'default'} run failed:\n{finished.stderr}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-examples", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="K = 40 on 20 examples, one round")
    parser.add_argument("--child", choices=["default", "kept"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.num_examples, args.num_samples = 1, 20, 40
    if args.child:
        print(json.dumps(run_one(args.child == "kept", args.num_examples, args.num_samples)))
        return None
    runs = {"default": [], "kept": []}
    for _ in range(args.rounds):
        for name in runs:
            runs[name].append(child(name == "kept", args.num_examples, args.num_samples))
    report = {
        name: {
            "seconds": [r["seconds"] for r in rows],
            "page_faults": [r["page_faults"] for r in rows],
            "flops_fraction": [r["flops_fraction"] for r in rows],
            "median_seconds": statistics.median(r["seconds"] for r in rows),
            "log_px": rows[0]["log_px"],
        }
        for name, rows in runs.items()
    }
    report["median_ratio_kept_to_default"] = report["kept"]["median_seconds"] / report["default"]["median_seconds"]
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
