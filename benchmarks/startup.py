"""Start-up time of the command line: `pyro-vae --help` and `pyro-vae list` against `import torch` alone.

Each command runs in a fresh process, several times; the table gives the median wall-clock seconds and the ratio
to importing torch (the floor for anything that needs a component).

    python benchmarks/startup.py [--repeats 5]
"""

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "pyro-vae --help": [sys.executable, "-m", "pyro_vae.cli", "--help"],
    "pyro-vae train --help": [sys.executable, "-m", "pyro_vae.cli", "train", "--help"],
    "pyro-vae list": [sys.executable, "-m", "pyro_vae.cli", "list"],
}


def median_seconds(command, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (the median is reported)")
    args = parser.parse_args()
    seconds = {name: median_seconds(command, args.repeats) for name, command in COMMANDS.items()}
    floor = seconds["python -c 'import torch'"]
    print("| command | median seconds | ratio to import torch |")
    print("|---|---|---|")
    for name, value in seconds.items():
        print(f"| `{name}` | {value:.2f} | {value / floor:.2f} |")


if __name__ == "__main__":
    main()
