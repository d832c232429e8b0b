"""Peak resident memory and wall time of ``pyro-vae train`` (one epoch) and ``pyro-vae evaluate`` on a large
``.npy``, read a batch at a time (``data.memory_map=true``) and read whole (``false``), beside a small file.

Each command runs in a fresh process with glibc's default trimming of freed memory (``pyro-vae`` otherwise keeps
up to 256 MB of freed memory for reuse, which would hide what the data take). Prints one row per command and the
growth of the peak over the small file's, as a fraction of the file's size.

    python benchmarks/memory_mapped.py --megabytes 1024
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

PEAK = """
import sys
from pyro_vae.cli.main import main
assert main(sys.argv[1:]) == 0
with open("/proc/self/status") as f:  # VmHWM: this process's peak (ru_maxrss would carry the parent's over)
    print(next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM")))
"""
WIDTH = 784


def write_rows(path, num_rows):
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(num_rows, WIDTH))
    rng = np.random.default_rng(0)
    for start in range(0, num_rows, 20000):
        array[start : start + 20000] = rng.random((min(20000, num_rows - start), WIDTH), dtype=np.float32)
    array.flush()


def peak(*command):
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_MMAP_THRESHOLD_": "131072"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr)
    return int(done.stdout.split()[-1]), time.perf_counter() - start


def commands(folder, data, memory_map):
    out = os.path.join(folder, f"run-{os.path.basename(data)}-{memory_map}")
    train = ["train", "--dataset", data, "--epochs", "1", "--batch-size", "100", "--hidden-sizes", "16"]
    train += ["--latent-dim", "2", "--no-progress", "--set", f"data.memory_map={memory_map}", "--out", out]
    evaluate = ["evaluate", out, "--num-samples", "5", "--data-batch-size", "1000", "--no-progress"]
    return {"train": train, "evaluate": evaluate}


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1024, help="size of the large file")
    parser.add_argument("--skip-whole", action="store_true", help="do not also read the large file whole")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        large, small = os.path.join(folder, "large.npy"), os.path.join(folder, "small.npy")
        write_rows(large, args.megabytes * 2**20 // (WIDTH * 4))
        write_rows(small, 5000)
        size = os.path.getsize(large)
        cases = [("small file, mapped", small, "true"), ("large file, mapped", large, "true")]
        cases += [] if args.skip_whole else [("large file, read whole", large, "false")]
        print(f"large file: {size / 2**20:.0f} MiB ({size // (WIDTH * 4)} rows of {WIDTH} float32)")
        print(f"{'case':<24} {'command':<9} {'peak MiB':>9} {'seconds':>8} {'growth / file size':>19}")
        baseline = {}
        for name, data, memory_map in cases:
            for command, argv in commands(folder, data, memory_map).items():
                resident, seconds = peak(*argv)
                baseline.setdefault(command, resident)
                growth = (resident - baseline[command]) / size
                print(f"{name:<24} {command:<9} {resident / 2**20:>9.0f} {seconds:>8.1f} {growth:>19.3f}")
                rows.append({"case": name, "command": command, "peak_bytes": resident, "growth_over_file": growth})
    return rows


if __name__ == "__main__":
    main()
