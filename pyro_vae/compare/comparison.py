"""``pyro-vae compare``: run every cell of a grid over its seeds, then write the report.

The comparison folder holds::

    grid.json                     the grid (a rerun with another grid into the same folder is refused)
    cells/<cell>/seed-<s>/        one ordinary run folder per cell and seed
    results.csv, results.json     one row per run: what varies, the evaluation, the training time, the paired
                                  difference to the baseline's run with the same seed
    report.md, report.html        the cell table and the figures (plots/*.png; embedded in the HTML)

Running the same command again resumes: finished runs are skipped, half-trained ones continue from their
checkpoints (:mod:`pyro_vae.compare.execution`), and the report is written afresh from the run folders.
"""

import json
import os

from pyro_vae.compare.execution import ProgressMonitor, run_local, run_ray
from pyro_vae.compare.grid import Grid
from pyro_vae.compare.report import write_report
from pyro_vae.compare.statistics import add_paired_differences, cell_summaries, run_folder, run_row
from pyro_vae.config import ConfigError
from pyro_vae.folder import RunLock, command_line, write_json

GRID_FILE = "grid.json"


def run_comparison(
    grid: Grid,
    out: str,
    *,
    jobs: int = 1,
    ray: bool = False,
    ray_address=None,
    threads=None,
    progress: bool = True,
    pictures: bool = True,
) -> dict:
    """Run (or resume) the comparison ``grid`` into the folder ``out`` and write its report.

    :param int jobs: runs at a time: in this process for 1, else in a pool of that many processes.
    :param bool ray: run the runs as Ray tasks on a local Ray instance; ``ray_address`` joins a cluster instead.
    :param int threads: torch threads per run; by default the machine's cores shared among ``jobs``.
    :returns: ``{"paths": {name: path}, "runs": rows, "cells": summaries}``.
    """
    grid.check()
    if jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {jobs}")
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    with RunLock(out, command_line()):
        _claim_folder(grid, out)
        tasks = [
            (run_folder(out, cell, seed), grid.config(cell, seed).to_dict())
            for cell in grid.expand()
            for seed in grid.seeds
        ]
        with ProgressMonitor(tasks, enabled=progress):
            if ray or ray_address:
                results = run_ray(tasks, threads, ray_address)
            else:
                results = run_local(tasks, jobs, threads)
        by_folder = {r["run_dir"]: r for r in results}
        rows = [
            run_row(grid, cell, seed, out, by_folder[run_folder(out, cell, seed)])
            for cell in grid.expand()
            for seed in grid.seeds
        ]
        add_paired_differences(grid, rows, out)
        summaries = cell_summaries(grid, rows)
        paths = write_report(grid, out, rows, summaries, pictures=pictures)
    return {"paths": paths, "runs": rows, "cells": summaries, "failures": [r for r in results if r["error"]]}


def _claim_folder(grid: Grid, out: str) -> None:
    """Write ``grid.json``, or check that the folder's comparison is this grid."""
    path = os.path.join(out, GRID_FILE)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved != json.loads(json.dumps(grid.to_dict())):
            raise ConfigError(
                f"'{out}' holds another comparison (its {GRID_FILE} differs from this grid); rerun with the same grid "
                "to resume it, or choose another --out folder"
            )
        return
    write_json(grid.to_dict(), path)
