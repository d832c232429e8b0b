"""Start-up time of the command line: `pyro-vae --help` and `pyro-vae list` against `import torch` alone.

Each command runs in a fresh process, several times; the table gives the median wall-clock seconds and the ratio
to importing torch (the floor for anything that needs a component). `list` is timed twice: with its catalogue
cached (every `list` after the first since the sources last changed), and with an empty cache, when it builds the
catalogue from the registries.

    python benchmarks/startup.py [--repeats 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "pyro-vae --help": [sys.executable, "-m", "pyro_vae.cli", "--help"],
    "pyro-vae train --help": [sys.executable, "-m", "pyro_vae.cli", "train", "--help"],
    "pyro-vae list": [sys.executable, "-m", "pyro_vae.cli", "list"],
    "pyro-vae list, empty cache": [sys.executable, "-m", "pyro_vae.cli", "list"],
}


def median_seconds(name, command, repeats, cache):
    times = []
    for _ in range(repeats):
        env = {**os.environ, "XDG_CACHE_HOME": tempfile.mkdtemp() if "empty cache" in name else cache}
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (the median is reported)")
    args = parser.parse_args()
    cache = tempfile.mkdtemp()
    warm_cache = {**os.environ, "XDG_CACHE_HOME": cache}
    subprocess.run(COMMANDS["pyro-vae list"], check=True, capture_output=True, env=warm_cache)  # builds it once
    seconds = {name: median_seconds(name, command, args.repeats, cache) for name, command in COMMANDS.items()}
    floor = seconds["python -c 'import torch'"]
    print("| command | median seconds | ratio to import torch |")
    print("|---|---|---|")
    for name, value in seconds.items():
        print(f"| `{name}` | {value:.2f} | {value / floor:.2f} |")


if __name__ == "__main__":
    main()
