"""``pyro-vae sample``: samples and reconstructions of a run folder as PNG grids (:func:`pyro_vae.runs.sample_run`)."""

import argparse
import sys

from pyro_vae.cli.options import PLUGIN_HELP


def add_parser(sub):
    p = sub.add_parser(
        "sample",
        help="draw samples and reconstructions of a trained run as PNG grids",
        description="Writes samples.png (decoder means for z drawn from the prior) and reconstructions.png "
        "(rows of data alternating with their reconstructions) into the run folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", help="run folder written by `pyro-vae train`")
    p.add_argument("--num-samples", type=int, default=64, help="number of images in each grid")
    p.add_argument("--nrow", type=int, default=8, help="images per grid row")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to reconstruct")
    p.add_argument("--seed", type=int, default=0, help="seed for the prior samples")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    p.set_defaults(run=run)


def run(args):
    from pyro_vae import runs

    for name, value in (("--num-samples", args.num_samples), ("--nrow", args.nrow)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    paths = runs.sample_run(
        args.run_dir,
        num_samples=args.num_samples,
        nrow=args.nrow,
        split=args.split,
        seed=args.seed,
        device=args.device,
    )
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    from pyro_vae.folder import progress_text, read_status

    status = read_status(args.run_dir)
    if status.get("state") != "finished":
        print(
            f"pyro-vae sample: warning: '{args.run_dir}' is not a finished run (status {status.get('state')!r}, "
            f"{progress_text(status)}): the pictures show its "
            f"last checkpoint; finish it with `pyro-vae train --resume --out {args.run_dir}`",
            file=sys.stderr,
        )
