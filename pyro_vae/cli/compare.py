"""``pyro-vae compare``: a grid of configurations over seeds, trained, evaluated and reported with paired statistics
(:func:`pyro_vae.compare.run_comparison`).
"""

import argparse
import json
import sys

from pyro_vae.cli.options import add_base_options, by_path, one_particle, train_overrides


def _axis(text):
    """``PATH=V1,V2,...`` (or ``PATH=[V1, V2]`` as JSON, for values that hold commas) -> ``(path, [values])``."""
    from pyro_vae.config import parse_value

    path, sep, values = text.partition("=")
    if not sep or not path or not values:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not PATH=V1,V2,..., e.g. train.estimator=elbo,iwae or 'model.encoder.options.hidden_sizes="
            "[[200],[400,400]]'"
        )
    parsed = parse_value(values) if values.lstrip().startswith("[") else [parse_value(v) for v in values.split(",")]
    if not isinstance(parsed, list):
        raise argparse.ArgumentTypeError(f"the values of '{path}' must be a list, got {values}")
    return path.strip(), parsed


def _one_axis(path, axes) -> str:
    """One ``--vary`` with the values of every ``--vary`` of ``path``, in order, each once."""
    merged = []
    for values in axes:
        merged += [value for value in values if value not in merged]
    return f"--vary '{path}={json.dumps(merged)}'"


def add_parser(sub):
    p = sub.add_parser(
        "compare",
        help="train and evaluate a grid of configurations over seeds; write a report with paired statistics",
        description="Run every cell of a grid (every combination of the --vary values, crossed with hand-picked "
        "cells of a --grid file) once per seed into OUT/cells/<cell>/seed-<s>/ (ordinary run folders), evaluate "
        "each on the same test examples, and write results.csv, results.json, report.md and report.html with "
        "plots. Rerunning the same command resumes: finished runs are skipped, half-trained ones continue from "
        "their checkpoints; a changed grid reruns into the same folder with --update, which keeps every run whose "
        "settings it keeps. The base configuration comes from the defaults, then the grid file's [base], then "
        "--config, the short flags of `pyro-vae train` and --set.",
    )
    p.add_argument("--out", required=True, help="comparison folder to create (or to resume)")
    p.add_argument("--grid", dest="grid_file", help="a TOML file with [base], [grid], [[cells]] and [compare]")
    p.add_argument(
        "--vary",
        type=_axis,
        action="append",
        default=[],
        metavar="PATH=V1,V2",
        help="a grid axis: a configuration path and its values, e.g. train.estimator=elbo,iwae; repeatable",
    )
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds of every cell (default 0)")
    p.add_argument("--baseline", help="label of the cell the others are compared with (default: the first)")
    p.add_argument(
        "--update",
        action="store_true",
        help="run a grid other than the one OUT holds: runs whose settings it keeps are kept (more --epochs continue "
        "them), new cells train, and runs it no longer names stay on disk outside the report; refused, changing "
        "nothing, if a run it names was trained with other settings",
    )
    p.add_argument(
        "--gradient-snr",
        type=int,
        nargs="+",
        metavar="K",
        help="also draw each cell's gradient signal-to-noise ratio (guide and model) at these particle numbers K, "
        "on a fixed validation minibatch at the cell's last checkpoint: the figure of Rainforth et al. (2018)",
    )
    p.add_argument("--snr-draws", type=int, default=100, help="gradient draws per K for --gradient-snr (default 100)")
    p.add_argument(
        "--cross-check",
        action="append",
        metavar="METHOD",
        help="also evaluate every run with this log p(x) method (e.g. ais) and report, per cell, both estimates, "
        "their paired difference and a flag where they disagree by more than 2 standard errors (repeatable)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    p.add_argument("--threads", type=int, help="torch threads per run (default: the cores shared among --jobs)")
    p.add_argument("--ray", action="store_true", help="run the runs as tasks of a local Ray instance")
    p.add_argument("--ray-address", help="run the runs on the Ray cluster at this address (e.g. ray://host:10001)")
    p.add_argument("--method", help="log p(x) method of every cell (default is)")
    p.add_argument("--num-samples", type=int, help="importance samples K per test example (default 5000)")
    p.add_argument("--no-pictures", action="store_true", help="skip the sample, reconstruction and manifold figures")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    add_base_options(p, "base configuration: the short flags of `pyro-vae train`", skip=("--seed",))
    p.set_defaults(run=run, seed=None)


def compare_grid(args):
    """The :class:`~pyro_vae.compare.Grid` a ``compare`` command line describes."""
    from pyro_vae.compare import Grid, load_grid_file
    from pyro_vae.config import config_from, layered, read_tree_file

    grid = load_grid_file(args.grid_file) if args.grid_file else Grid()
    base = layered(grid.base, read_tree_file(args.config)) if args.config else grid.base
    overrides = train_overrides(args)
    if args.method:
        overrides.append(("eval.method", args.method))
    if args.num_samples is not None:
        overrides.append(("eval.method.options.num_samples", args.num_samples))
    grid.base = config_from(base, overrides).to_dict()
    grid.axes = {**grid.axes, **by_path(args.vary, "--vary", _one_axis)}
    if args.seeds:
        grid.seeds = list(args.seeds)
    if args.baseline:
        grid.baseline = args.baseline
    if args.cross_check:
        grid.cross_checks = list(dict.fromkeys([*grid.cross_checks, *args.cross_check]))
    grid.check()
    return grid


def run(args):
    from pyro_vae import runs
    from pyro_vae.compare import run_comparison
    from pyro_vae.compare.report import table_rows

    grid = compare_grid(args)
    result = run_comparison(
        grid,
        args.out,
        jobs=args.jobs,
        ray=args.ray,
        ray_address=args.ray_address,
        threads=args.threads,
        progress=not args.no_progress,
        pictures=not args.no_pictures,
        update=args.update,
        gradient_snr={"ks": args.gradient_snr, "num_draws": args.snr_draws} if args.gradient_snr else None,
    )
    table = table_rows(result["cells"])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(
                value.rjust(width) if i else value.ljust(width) for i, (value, width) in enumerate(zip(row, widths))
            )
        )
    print(
        f"report: {result['paths']['report.md']} and {result['paths']['report.html']}; "
        f"per run: {result['paths']['results.csv']}"
    )
    if result["left_out"]:
        print(
            "runs of an earlier grid that this one does not name stay on disk, outside the report: "
            + ", ".join(result["left_out"])
        )
    for cell in grid.expand():  # after the runs: a refused command prints its error alone
        config = grid.config(cell, grid.seeds[0])
        if runs.trains_the_elbo_by_another_name(config):
            fix = "--vary train.estimator.options.num_particles=K"  # a varied estimator takes only varied options
            warning = one_particle(config.train.estimator.name, fix)
            print(f"pyro-vae compare: warning: cell '{cell.label}': {warning}", file=sys.stderr)
    if result["failures"]:
        for failure in result["failures"]:
            print(f"pyro-vae compare: run {failure['run_dir']} failed: {failure['error']}", file=sys.stderr)
        raise RuntimeError(
            f"{len(result['failures'])} of {len(result['runs'])} runs failed (see above and report.md): a run its "
            "settings fail fails again under the same command, so change or drop the failing values in --vary and "
            "rerun with --update: finished runs are kept (while each --vary keeps two values or more, so that the "
            "cells keep their names); a run stopped from outside (killed, out of memory) finishes when the same "
            "command is rerun"
        )
