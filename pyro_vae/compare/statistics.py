r"""The numbers of a comparison: one row per run, one summary per cell, and paired differences to a baseline.

Every cell is evaluated on the same test examples (one data seed), so two cells trained with the same seed give
per-example estimates :math:`\hat\ell_a(x_i)` and :math:`\hat\ell_b(x_i)` of the same :math:`\log p(x_i)` under
two models, and their difference is judged by the **paired** standard error

.. math:: d_i = \hat\ell_a(x_i) - \hat\ell_b(x_i), \qquad \bar d = \frac1n \sum_i d_i, \qquad
    \operatorname{se}(\bar d) = \frac{\operatorname{sd}(d)}{\sqrt n},

which removes the spread of difficulty between examples, by far the largest part of each cell's own standard
error. Over :math:`S` training seeds the cell's difference is the mean of the per-seed :math:`\bar d_s`, with
the standard error across seeds :math:`\operatorname{sd}(\bar d_s) / \sqrt S` (training randomness included)
when :math:`S \ge 2`, else the paired standard error of the one seed (test-set sampling and Monte Carlo error
only). A difference smaller than twice its standard error is reported as within noise.
"""

import csv
import io
import json
import math
import os

import numpy as np

from pyro_vae.compare.execution import evaluation_file
from pyro_vae.compare.grid import Grid

#: A difference is "within noise" when its absolute value is below this many standard errors.
NOISE_STANDARD_ERRORS = 2.0


def run_folder(root: str, cell, seed: int) -> str:
    return os.path.join(root, "cells", cell.folder, f"seed-{seed}")


def per_example_results(run_dir: str, config_tree: dict):
    """The per-example group (``log_px``, ``elbo``, ``ess``, ``khat``, ...) a run's evaluation stored in its
    ``.nc`` file."""
    import arviz

    with open(evaluation_file(run_dir, config_tree)) as f:
        netcdf = os.path.join(run_dir, json.load(f)["inference_data"])
    return arviz.from_netcdf(netcdf).log_marginal_likelihood


def per_example_log_px(run_dir: str, config_tree: dict) -> np.ndarray:
    """The per-example log p(x) estimates of a run's evaluation."""
    return per_example_results(run_dir, config_tree)["log_px"].values


def paired_difference(a: np.ndarray, b: np.ndarray):
    """Mean of ``a - b`` over examples and its paired standard error."""
    if a.shape != b.shape:
        raise ValueError(f"paired differences need the same examples; got {a.shape[0]} and {b.shape[0]}")
    d = a - b
    stderr = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), stderr


def run_row(grid: Grid, cell, seed: int, root: str, result: dict) -> dict:
    """One run's row of ``results.csv``: what varies, its evaluation, its training time."""
    run_dir = run_folder(root, cell, seed)
    config = grid.config(cell, seed)
    overrides = dict(cell.overrides)
    row = {"cell": cell.label, "seed": seed, "run_dir": os.path.relpath(run_dir, root)}
    row.update({path: _plain(overrides.get(path)) for path in grid.varying_paths()})
    row["state"] = result["state"]
    row["error"] = result.get("error")
    if result["state"] != "done":
        return row
    with open(evaluation_file(run_dir, config.to_dict())) as f:
        report = json.load(f)
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    row.update(
        {
            "data_representation": report["data_representation"],
            "method": report["method"],
            "num_samples": report["num_samples"],
            "num_examples": report["num_examples"],
            "log_px": report["log_px"],
            "log_px_stderr": report["log_px_stderr"],
            "log_px_mc_stderr": report["log_px_mc_stderr"],
            "elbo": report["elbo"],
            "gap": report["gap"],
            "active_units": report["active_units"],
            "kl": report.get("kl"),
            "distortion": report.get("distortion"),
            "reconstruction_mse": report.get("reconstruction_mse"),
            "khat_fraction_above_0.7": report.get("khat_fraction_above_0.7"),
            "bits_per_dim": report.get("bits_per_dim"),
            "epochs": len(metrics),
            "steps": metrics[-1].get("steps"),  # spent over the whole run (absent from runs before budgets)
            "likelihood_evaluations": metrics[-1].get("likelihood_evaluations"),
            "train_seconds": sum(m["train_seconds"] for m in metrics),
            "seconds": sum(m["seconds"] for m in metrics),
            "eval_seconds": report["seconds"],
        }
    )
    row["seconds_per_epoch"] = row["train_seconds"] / max(1, row["epochs"])
    return row


def add_paired_differences(grid: Grid, rows: list, root: str) -> None:
    """Add ``diff_to_baseline`` and ``diff_stderr`` (paired over examples) to every finished run whose baseline
    run with the same seed finished and scored the same examples."""
    baseline = grid.baseline_cell()
    base_rows = {r["seed"]: r for r in rows if r["cell"] == baseline.label and r["state"] == "done"}
    cells = {cell.label: cell for cell in grid.expand()}
    cache = {}

    def log_px(cell, seed):
        key = (cell.label, seed)
        if key not in cache:
            cache[key] = per_example_log_px(run_folder(root, cell, seed), grid.config(cell, seed).to_dict())
        return cache[key]

    for row in rows:
        row["diff_to_baseline"], row["diff_stderr"] = None, None
        cell = cells[row["cell"]]
        if row["state"] != "done" or row["seed"] not in base_rows:
            continue
        if _data_key(grid, cell, row) != _data_key(grid, baseline, base_rows[row["seed"]]):
            continue
        row["diff_to_baseline"], row["diff_stderr"] = paired_difference(
            log_px(cell, row["seed"]), log_px(baseline, row["seed"])
        )


def _data_key(grid: Grid, cell, row: dict) -> str:
    """What must agree for two runs' examples to be the same: the data section and the representation their
    evaluation recorded. A dequantized run's bound and an 8-bit run's mass are of the same 8-bit examples, so they
    count as one."""
    config = grid.config(cell, grid.seeds[0])
    data = {key: value for key, value in config.to_dict()["data"].items() if key != "dequantize"}
    representation = row["data_representation"].replace("dequantized", "8-bit")
    return json.dumps([data, representation, config.eval.split], sort_keys=True)


def cell_summaries(grid: Grid, rows: list) -> list:
    """One summary per cell over its seeds, ranked by mean log p(x) (1 = highest)."""
    summaries = []
    baseline = grid.baseline_cell().label
    for cell in grid.expand():
        done = [r for r in rows if r["cell"] == cell.label and r["state"] == "done"]
        summary = {
            "cell": cell.label,
            "seeds": len(done),
            "failed": sum(r["cell"] == cell.label for r in rows) - len(done),
        }
        if done:
            summary.update(_mean_over_seeds(done))
            summary.update(_difference_over_seeds(done, is_baseline=cell.label == baseline))
        summaries.append(summary)
    ranked = sorted((s for s in summaries if "log_px" in s), key=lambda s: -s["log_px"])
    for rank, summary in enumerate(ranked, 1):
        summary["rank"] = rank
    return summaries


def _mean_over_seeds(done: list) -> dict:
    values = np.array([r["log_px"] for r in done])
    summary = {
        "data_representation": done[0]["data_representation"],
        "log_px": float(values.mean()),
        "log_px_stderr_seeds": _stderr(values),
        "log_px_stderr_examples": float(np.sqrt(np.mean([r["log_px_stderr"] ** 2 for r in done]) / len(done))),
    }
    for key in (
        "elbo",
        "gap",
        "active_units",
        "kl",
        "distortion",
        "reconstruction_mse",
        "khat_fraction_above_0.7",
        "bits_per_dim",
        "seconds_per_epoch",
        "train_seconds",
        "seconds",
        "eval_seconds",
        "epochs",
        "steps",
        "likelihood_evaluations",
    ):
        present = [r[key] for r in done if r.get(key) is not None]
        summary[key] = float(np.mean(present)) if present else None
    return summary


def _difference_over_seeds(done: list, is_baseline: bool) -> dict:
    paired = [r for r in done if r.get("diff_to_baseline") is not None]
    if is_baseline or not paired:
        return {
            "diff_to_baseline": 0.0 if is_baseline else None,
            "diff_stderr": None,
            "diff_stderr_kind": None,
            "within_noise": None,
        }
    diffs = np.array([r["diff_to_baseline"] for r in paired])
    if len(paired) >= 2:
        stderr, kind = _stderr(diffs), "seeds"
    else:
        stderr, kind = paired[0]["diff_stderr"], "examples"
    mean = float(diffs.mean())
    return {
        "diff_to_baseline": mean,
        "diff_stderr": stderr,
        "diff_stderr_kind": kind,
        "within_noise": bool(abs(mean) <= NOISE_STANDARD_ERRORS * stderr) if math.isfinite(stderr) else None,
    }


def _stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")


def _plain(value):
    """A configuration value as one CSV/JSON cell: components as ``name`` or ``name(options)``, lists joined."""
    if isinstance(value, dict) or isinstance(value, list):
        return json.dumps(value, sort_keys=True)
    return value


def rows_to_csv(rows: list) -> str:
    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})
    return out.getvalue()
