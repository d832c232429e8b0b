"""The ``pyro-vae`` command line: a thin layer over :mod:`pyro_vae.runs`, :mod:`pyro_vae.compare` and
:mod:`pyro_vae.search`, one module per subcommand.

pyro-vae train --dataset digits --out runs/digits
pyro-vae train --config experiment.toml --set model.prior=bernoulli --set train.epochs=20 --out runs/x
pyro-vae train --resume --out runs/digits --epochs 200
pyro-vae evaluate runs/digits --num-samples 5000
pyro-vae sample runs/digits
pyro-vae compare --dataset digits --epochs 20 --vary train.estimator=elbo,iwae --seeds 0 1 --out runs/cmp
pyro-vae search --dataset digits --epochs 20 --space 'train.optimizer.options.lr=loguniform(1e-4,1e-2)' --out runs/s
pyro-vae list [--json]

Each subcommand's module has ``add_parser(sub)``, which adds its parser with ``set_defaults(run=run)``, and
``run(args)``, which calls the Python API; :data:`SUBCOMMANDS` lists them. Every training option is a dotted path of
the configuration tree (:mod:`pyro_vae.config`); :mod:`pyro_vae.cli.options` holds the flags several share. This
module parses, loads any ``--plugin``, starts the ``--nproc`` processes and turns a refusal into one line.
"""

import argparse
import os
import sys

from pyro_vae.cli import compare, evaluate, listing, sample, search, train

#: The subcommands, in the order `pyro-vae --help` lists them.
SUBCOMMANDS = (train, evaluate, sample, compare, search, listing)


class UsageError(Exception):
    """A command line that does not parse; its message is one line, with where to read the usage."""


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="pyro-vae",
        description="Variational autoencoders as Pyro model/guide pairs: train under many gradient estimators, "
        "and estimate held-out log p(x).",
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    nproc = getattr(args, "nproc", None)
    if nproc is not None and nproc < 1:
        print(f"pyro-vae {args.command}: error: --nproc must be a positive integer, got {nproc}", file=sys.stderr)
        return 2
    if args.command == "list":  # which loads no torch
        return _run(args, argv, nproc)
    from inference.training.interruption import stop_on_signals

    with stop_on_signals():  # SIGTERM cleans up as Ctrl-C does: no run folder is left "training" by a killed command
        return _run(args, argv, nproc)


def _run(args, argv, nproc) -> int:
    launcher = False
    try:
        if args.command != "list":  # which allocates no tensor
            from inference.allocator import keep_freed_memory

            keep_freed_memory()  # before the first tensor
        if getattr(args, "plugin", None):  # the only way a plugin runs: named on this command line
            from pyro_vae.config import load_plugins

            load_plugins(args.plugin)

        launcher = nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ
        if launcher:
            return _launch_processes(argv, nproc)
        else:
            args.run(args)
            if "WORLD_SIZE" in os.environ:  # one rank of a process group (torchrun or --nproc): leave it together
                from inference.training.distributed import shutdown

                shutdown()
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError, ImportError) as e:
        if args.debug:
            raise
        if not _stopped_by_a_peer(e):
            print(f"pyro-vae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        from inference.training.interruption import exit_status

        if not launcher and os.environ.get("RANK", "0") == "0":  # one line for a process group: its first rank's
            print(f"pyro-vae {args.command}: interrupted", file=sys.stderr)
        return exit_status(interrupt)
    return 0


def _launch_processes(argv, nproc) -> int:
    """Run this command line (less ``--nproc``) in ``nproc`` processes that form one process group. A rank that
    refused with its own message (exit status 2) makes that the exit status; any other failure becomes a
    RuntimeError naming the process."""
    import logging

    import torch.multiprocessing as mp

    from inference.training.distributed import launch_local

    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # not "Terminating process ..." per rank
    try:
        launch_local(main, nproc, _without_nproc(argv))
    except mp.ProcessExitedException as e:
        if e.exit_code == 2:  # the rank printed its one-line error
            return 2
        raise RuntimeError(f"{str(e).splitlines()[0]} (its message is above)") from None
    except mp.ProcessRaisedException as e:
        raise RuntimeError(f"{str(e).strip().splitlines()[0]} (its message is above)") from None
    return 0


def _stopped_by_a_peer(error) -> bool:
    """A rank other than the first whose collective failed because another rank stopped: that one says why."""
    if os.environ.get("RANK", "0") == "0":
        return False
    import torch.distributed as dist

    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(word in str(error) for word in ("gloo", "NCCL", "closed by peer"))


def _without_nproc(argv) -> list:
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            kept.append(item)
    return kept


if __name__ == "__main__":
    sys.exit(main())
