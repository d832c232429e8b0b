"""``pyro-vae compare``: run every cell of a grid over its seeds, then write the report.

The comparison folder holds::

    grid.json                     the grid (another grid into the same folder needs ``update``)
    cells/<cell>/seed-<s>/        one ordinary run folder per cell and seed
    results.csv, results.json     one row per run: what varies, the evaluation, the training time, the paired
                                  difference to the baseline's run with the same seed
    report.md, report.html        the cell table and the figures (plots/*.png; embedded in the HTML)

Running the same command again resumes: finished runs are skipped, half-trained ones continue from their
checkpoints (:mod:`pyro_vae.compare.execution`), and the report is written afresh from the run folders.

A changed grid (values dropped or changed, cells or seeds added, more epochs) runs into the same folder with
``update=True`` (``--update``): every run whose folder holds a run trained with the same settings is kept as above
(more epochs continue it), a folder with nothing trained trains afresh, and the grid is refused, before any file
changes, when a folder it names holds a run trained with other settings, so that no label stands for two
configurations. Run folders of the earlier grid that the new one does not name stay on disk, outside the report.
"""

import glob
import json
import os

from pyro_vae.compare.cross_checks import cross_check_rows, run_cross_checks
from pyro_vae.compare.execution import ProgressMonitor, run_local, run_ray
from pyro_vae.compare.grid import Grid
from pyro_vae.compare.report import write_report
from pyro_vae.compare.snr import cell_snr_curves, check_snr_settings
from pyro_vae.compare.statistics import add_paired_differences, cell_summaries, run_folder, run_row
from pyro_vae.config import ConfigError, RunConfig, same_but_for_epochs
from pyro_vae.folder import RunLock, command_line, read_json, read_status, write_json
from pyro_vae.runs import CHECKPOINT_FILE, CONFIG_FILE, read_config_tree

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
    update: bool = False,
    gradient_snr=None,
) -> dict:
    """Run (or resume) the comparison ``grid`` into the folder ``out`` and write its report.

    :param int jobs: runs at a time: in this process for 1, else in a pool of that many processes.
    :param bool ray: run the runs as Ray tasks on a local Ray instance; ``ray_address`` joins a cluster instead.
    :param int threads: torch threads per run; by default the machine's cores shared among ``jobs``.
    :param bool update: run a grid other than the one ``out`` holds, keeping the runs whose settings it keeps.
    :param dict gradient_snr: ``{"ks": [...], "num_draws": S}``: also draw each cell's gradient signal-to-noise
        ratio against ``K`` (:mod:`pyro_vae.compare.snr`) into ``gradient_snr.json`` and the report.
    :returns: ``{"paths": {name: path}, "runs": rows, "cells": summaries, "failures": results of failed runs,
        "left_out": run folders under ``out`` that the grid does not name}``.
    """
    grid.check()
    if gradient_snr:
        check_snr_settings(**gradient_snr)
    if jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {jobs}")
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    with RunLock(out, command_line()):
        _claim_folder(grid, out, update)
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
        if grid.cross_checks:
            run_cross_checks(grid, out, progress=progress)
        by_folder = {r["run_dir"]: r for r in results}
        rows = [
            run_row(grid, cell, seed, out, by_folder[run_folder(out, cell, seed)])
            for cell in grid.expand()
            for seed in grid.seeds
        ]
        add_paired_differences(grid, rows, out)
        summaries = cell_summaries(grid, rows)
        snr_points = None
        if gradient_snr and not any(r["error"] for r in results):
            snr_points = cell_snr_curves(grid, out, **gradient_snr)
        checks = cross_check_rows(grid, out, rows) if grid.cross_checks else []
        paths = write_report(grid, out, rows, summaries, pictures=pictures, snr_points=snr_points, checks=checks)
    failures = [r for r in results if r["error"]]
    return {
        "paths": paths,
        "runs": rows,
        "cells": summaries,
        "cross_checks": checks,
        "failures": failures,
        "left_out": left_out(grid, out),
    }


def _claim_folder(grid: Grid, out: str, update: bool) -> None:
    """Write ``grid.json``, or check that the folder's comparison is this grid; with ``update`` another grid is
    accepted when :func:`check_trained_runs` passes, and only then written over the folder's."""
    path = os.path.join(out, GRID_FILE)
    if os.path.exists(path):
        if read_json(path) == json.loads(json.dumps(grid.to_dict())):
            return
        if not update:
            raise ConfigError(
                f"'{out}' holds another comparison (its {GRID_FILE} differs from this grid): rerun with --update to "
                "run this grid there, keeping the finished runs whose settings it keeps, or choose another --out folder"
            )
    check_trained_runs(grid, out)
    write_json(grid.to_dict(), path)


def check_trained_runs(grid: Grid, out: str) -> None:
    """Refuse a grid that names a run folder holding a run trained with other settings than the grid's run there
    (:func:`settings_conflict`): keeping it would put one label on two configurations. One line names the first
    such run, what differs, and the fixes."""
    conflicts = []
    for cell in grid.expand():
        for seed in grid.seeds:
            run_dir = run_folder(out, cell, seed)
            conflict = settings_conflict(run_dir, grid.config(cell, seed))
            if conflict:
                conflicts.append(f"'{run_dir}' (cell '{cell.label}', seed {seed}) {conflict}")
    if conflicts:
        more = f" (and {len(conflicts) - 1} more runs)" if len(conflicts) > 1 else ""
        raise ConfigError(
            f"{conflicts[0]}{more}: --update keeps trained runs as they are, so give the grid those settings back, "
            "delete that run folder to train it anew, or run this grid into another --out folder"
        )


def settings_conflict(run_dir: str, config: RunConfig):
    """Why the run in ``run_dir`` cannot be kept as the run of ``config`` (``None`` when it can): it was trained
    (it has a checkpoint) with settings that differ in more than ``train.epochs``, or for more epochs than
    ``config`` asks for. A folder with no checkpoint has nothing trained: it trains afresh."""
    if not os.path.exists(os.path.join(run_dir, CHECKPOINT_FILE)):
        return None
    saved = RunConfig.from_dict(read_config_tree(run_dir), checked=False)  # compared with one checked already
    done = read_status(run_dir).get("epochs_done", 0)
    if saved.train.budget.kind == "epochs" == config.train.budget.kind and config.train.epochs < done:
        return f"has trained {done} epochs, more than the {config.train.epochs} this grid asks for"
    if same_but_for_epochs(saved, config):
        return None
    changes = differing_paths(saved.to_dict(), config.to_dict())
    shown = "; ".join(f"{path}: {_json(a)} there, {_json(b)} here" for path, a, b in changes[:2])
    return f"was trained with other settings ({shown}{'; ...' if len(changes) > 2 else ''})"


def differing_paths(saved: dict, new: dict, prefix: str = "") -> list:
    """``[(path, saved value, new value)]`` for every dotted path (but ``train.epochs``) whose value differs
    between two configuration trees."""
    changes = []
    for key in sorted(set(saved) | set(new)):
        path = f"{prefix}{key}"
        a, b = saved.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += differing_paths(a, b, f"{path}.")
        elif path != "train.epochs" and _json(a) != _json(b):
            changes.append((path, a, b))
    return changes


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def left_out(grid: Grid, out: str) -> list:
    """The run folders under ``out/cells`` (those with a ``config.json``) that ``grid`` does not name: runs of an
    earlier grid, which stay on disk outside the report."""
    named = {os.path.normpath(run_folder(out, cell, seed)) for cell in grid.expand() for seed in grid.seeds}
    found = sorted(glob.glob(os.path.join(glob.escape(out), "cells", "*", "*", CONFIG_FILE)))
    return [os.path.dirname(path) for path in found if os.path.normpath(os.path.dirname(path)) not in named]
