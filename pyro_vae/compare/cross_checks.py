r"""Evaluations that check each other: a grid's log p(x) under a second method, paired with the first.

A grid may name further log p(x) methods (``[compare] cross_checks = ["ais"]``, or ``--cross-check ais``; a
component with options, ``{name = "ais", options = {num_chains = 32}}``, in a grid file). After its own
evaluation, every run is evaluated again with each, on the same examples (``eval/<method>-<split>.json``), and
the report gives per cell each estimate and their paired difference over examples

.. math:: d_i = \hat\ell_{\mathrm{check}}(x_i) - \hat\ell(x_i), \qquad \bar d \pm \operatorname{sd}(d) / \sqrt n,

flagging a cell when the two disagree by more than two standard errors of :math:`\bar d`, or when more than 10%
of its examples have Pareto k-hat above 0.7 under the grid's own (importance-sampling) evaluation. Both estimate
:math:`\log p(x)` from below in expectation (Jensen's inequality), so where they disagree the larger one is the
tighter: with a poor guide, AIS (Neal 2001; Wu et al. 2017) is markedly above importance sampling.
"""

import json
import math
import os

import numpy as np

from pyro_vae.compare.grid import as_method
from pyro_vae.compare.statistics import paired_difference, run_folder
from pyro_vae.folder import evaluation_paths, read_status

#: Two estimates disagree when their paired difference exceeds this many standard errors.
DISAGREEMENT_STANDARD_ERRORS = 2.0
#: The share of examples with k-hat above 0.7 beyond which a cell's importance weights are flagged.
KHAT_FRACTION = 0.10


def run_cross_checks(grid, root: str, progress: bool = False) -> None:
    """Evaluate every finished run with each of ``grid.cross_checks`` that has not scored its last checkpoint."""
    from pyro_vae import runs

    for cell in grid.expand():
        for seed in grid.seeds:
            run_dir = run_folder(root, cell, seed)
            if read_status(run_dir).get("state") != "finished":
                continue
            split = grid.config(cell, seed).eval.split
            for method in map(as_method, grid.cross_checks):
                if not _scored(run_dir, method, split):
                    runs.evaluate_run(
                        run_dir,
                        method=method["name"],
                        method_options=method["options"],
                        progress=progress,
                        posterior_examples=(),
                    )


def _scored(run_dir, method, split) -> bool:
    """Whether ``eval/<method>-<split>.json`` scored the run's last checkpoint with these options."""
    try:
        with open(evaluation_paths(run_dir, method["name"], split)["json"]) as f:
            report = json.load(f)
    except FileNotFoundError:
        return False
    checkpoint = read_status(run_dir).get("checkpoint", {}).get("sha256")
    asked = {k: v for k, v in method["options"].items()}
    given = report.get("method_options") or {}
    return report.get("checkpoint", {}).get("sha256") == checkpoint and all(given.get(k) == v for k, v in asked.items())


def cross_check_rows(grid, root: str, rows: list) -> list:
    """Per finished run and cross-check: both estimates, their paired difference and standard error, and the
    flags (``disagree``, ``heavy_tails``)."""
    import arviz

    found = []
    for row in rows:
        if row["state"] != "done":
            continue
        cell = next(c for c in grid.expand() if c.label == row["cell"])
        run_dir = run_folder(root, cell, row["seed"])
        split = grid.config(cell, row["seed"]).eval.split
        own = _per_example(run_dir, row["method"], split, arviz)
        for method in map(as_method, grid.cross_checks):
            if method["name"] == row["method"]:
                continue
            other = _per_example(run_dir, method["name"], split, arviz)
            if other is None or own is None:
                continue
            difference, stderr = paired_difference(other, own)
            khat = row.get("khat_fraction_above_0.7")
            found.append(
                {
                    "cell": row["cell"],
                    "seed": row["seed"],
                    "method": row["method"],
                    "log_px": float(own.mean()),
                    "check": method["name"],
                    "check_log_px": float(other.mean()),
                    "difference": difference,
                    "difference_stderr": stderr,
                    "disagree": bool(abs(difference) > DISAGREEMENT_STANDARD_ERRORS * stderr)
                    if math.isfinite(stderr)
                    else False,
                    "heavy_tails": khat is not None and khat > KHAT_FRACTION,
                }
            )
    return found


def _per_example(run_dir, method, split, arviz):
    path = evaluation_paths(run_dir, method, split)["json"]
    if not os.path.exists(path):
        return None
    with open(path) as f:
        netcdf = os.path.join(run_dir, json.load(f)["inference_data"])
    return np.asarray(arviz.from_netcdf(netcdf).log_marginal_likelihood["log_px"].values)


def cross_check_lines(checks: list) -> list:
    """The report's markdown section (empty without cross-checks)."""
    if not checks:
        return []
    lines = [
        "## Cross-checks of the evaluation",
        "",
        "| cell | seed | log p(x) | check | its log p(x) | difference | s.e. | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        lines.append(
            f"| {c['cell']} | {c['seed']} | {c['log_px']:.3f} ({c['method']}) | {c['check']} | {c['check_log_px']:.3f} "
            f"| {c['difference']:+.3f} | {c['difference_stderr']:.3f} | {flag_text(c)} |"
        )
    lines += [
        "",
        f"Difference: the check's log p(x) minus the evaluation's, paired over examples. Flags: *disagree* when it "
        f"exceeds {DISAGREEMENT_STANDARD_ERRORS:g} standard errors (both are lower bounds in expectation, so the "
        f"larger is the tighter); *heavy tails* when more than {KHAT_FRACTION:.0%} of the examples have Pareto "
        "k-hat above 0.7 under the evaluation's importance weights.",
        "",
    ]
    return lines


def flag_text(check) -> str:
    flags = [name for name, on in (("disagree", check["disagree"]), ("heavy tails", check["heavy_tails"])) if on]
    return ", ".join(flags) or "–"
