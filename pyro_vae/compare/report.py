"""The comparison's report: ``results.csv`` / ``results.json`` (one row per run), ``report.md`` and
``report.html`` (the cell table, the budget, the plots), and ``plots/*.png``.

Every number in the report is read back from the runs' own files (``eval/*.json``, ``eval/*.nc``,
``metrics.json``), so the report and the run folders cannot disagree.
"""

import base64
import html
import json
import math
import os

from inference.atomic import atomic_write
from pyro_vae.compare import plots
from pyro_vae.compare.cross_checks import cross_check_lines
from pyro_vae.compare.grid import Grid
from pyro_vae.compare.published import budget_text, gap_text, published_lines, published_rows
from pyro_vae.compare.statistics import NOISE_STANDARD_ERRORS, per_example_results, rows_to_csv, run_folder
from pyro_vae.folder import write_json

PLOTS_FOLDER = "plots"


def write_report(
    grid: Grid, root: str, rows: list, summaries: list, pictures: bool = True, snr_points=None, checks=()
) -> dict:
    """Write every output file of a comparison into ``root``; returns ``{name: path}``. ``snr_points``
    (:func:`~pyro_vae.compare.snr.cell_snr_curves`) add the gradient-SNR figure and its caption."""
    paths = {"results.csv": os.path.join(root, "results.csv"), "results.json": os.path.join(root, "results.json")}
    atomic_write(paths["results.csv"], lambda f: f.write(rows_to_csv(rows).encode()))
    results = {"grid": grid.to_dict(), "runs": rows, "cells": summaries}
    write_json({**results, "cross_checks": list(checks)} if checks else results, paths["results.json"])
    figures = make_figures(grid, root, rows, summaries, pictures)
    captions = {}
    if snr_points:
        from pyro_vae.compare.snr import CAPTION

        path = os.path.join(root, PLOTS_FOLDER, "gradient_snr.png")
        figures["gradient SNR against K"] = plots.gradient_snr(snr_points, path)
        captions["gradient SNR against K"] = CAPTION
    paths.update(figures)
    relative = {k: os.path.relpath(v, root) for k, v in figures.items()}
    markdown = report_markdown(grid, rows, summaries, relative, captions, checks)
    paths["report.md"] = os.path.join(root, "report.md")
    atomic_write(paths["report.md"], lambda f: f.write(markdown.encode()))
    paths["report.html"] = os.path.join(root, "report.html")
    page = report_html(grid, rows, summaries, figures, captions, checks)
    atomic_write(paths["report.html"], lambda f: f.write(page.encode()))
    return paths


# -- the table ---------------------------------------------------------------------------------------------------

COLUMNS = [
    ("cell", "cell"),
    ("seeds", "seeds"),
    ("log p(x)", "log_px"),
    ("s.e.", "log_px_stderr"),
    ("ELBO", "elbo"),
    ("gap", "gap"),
    ("active units", "active_units"),
    ("k-hat > 0.7", "khat_fraction_above_0.7"),
    ("s / epoch", "seconds_per_epoch"),
    ("total s", "seconds"),
    ("steps", "steps"),
    ("evaluations", "likelihood_evaluations"),
    ("Δ baseline", "diff_to_baseline"),
    ("Δ s.e.", "diff_stderr"),
    ("within noise", "within_noise"),
    ("rank", "rank"),
]


def table_rows(summaries: list) -> list:
    """The report table as lists of strings (header first)."""
    lines = [[title for title, _ in COLUMNS]]
    for s in summaries:
        if "log_px" not in s:
            lines.append([s["cell"], "0", "failed"] + [""] * (len(COLUMNS) - 3))
            continue
        values = dict(s)
        values["log_px_stderr"] = _cell_stderr(s)
        lines.append([_format(key, values.get(key)) for _, key in COLUMNS])
    return lines


def _cell_stderr(summary):
    """Across seeds where there are several, else over examples."""
    se = summary.get("log_px_stderr_seeds")
    return se if se is not None and math.isfinite(se) else summary["log_px_stderr_examples"]


def _format(key, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if key in ("cell", "seeds", "rank"):
        return str(value)
    if key == "within_noise":
        return "yes" if value else "no"
    if key == "khat_fraction_above_0.7":
        return f"{value:.0%}"
    if key == "active_units":
        return f"{value:.1f}" if value != int(value) else str(int(value))
    if key in ("seconds", "seconds_per_epoch"):
        return f"{value:.1f}"
    if key in ("steps", "likelihood_evaluations"):
        return f"{value:,.0f}"
    return f"{value:.3f}"


def budget_lines(grid: Grid, rows: list) -> list:
    """What every cell got: the training budget and the evaluation, stated once."""
    config = grid.base_config()
    done = [r for r in rows if r["state"] == "done"]
    examples = sorted({r["num_examples"] for r in done})
    methods = sorted({f"{r['method']} with K = {r['num_samples']}" for r in done})
    representations = sorted({r["data_representation"] for r in done})
    lines = [
        f"- **Data:** `{config.data.name}` (data seed {config.data.seed}), "
        f"{' / '.join(representations) or '–'} representation; every cell scored on the same "
        f"{', '.join(map(str, examples)) or '–'} {config.eval.split} examples.",
        f"- **Budget per run:** {config.train.budget.describe(config.train.epochs)} with minibatches of "
        f"{config.train.batch_size} "
        f"({config.train.optimizer.name}, lr {config.train.optimizer.options.get('lr', 'default')}, "
        f"schedule {config.train.lr_schedule.name}) unless a cell varies them; seeds {grid.seeds}. "
        "The table gives what each cell spent in gradient steps and likelihood evaluations (particles x examples x "
        "steps); total s is the wall-clock of training and validation.",
        f"- **Evaluation:** {', '.join(methods) or '–'}, nats per example (higher is better).",
        f"- **Baseline:** {grid.baseline_cell().label}.",
    ]
    if set(representations) == {"8-bit", "dequantized"}:
        lines.append(
            "- **Note:** dequantized cells report the lower bound log p(y) - D log 256 on the 8-bit mass, so they "
            "stand beside the 8-bit cells (a bound, not an estimate of the mass itself)."
        )
    elif len(representations) > 1:
        lines.append(
            "- **Warning:** the cells model different data representations "
            f"({', '.join(representations)}); their log p(x) are different quantities (a mass on binarized or "
            "8-bit pixels, a density on continuous ones) and are not compared: paired differences are given only "
            "between cells with the baseline's representation."
        )
    return lines


NOTES = (
    "log p(x): mean over seeds of each run's test-set mean. s.e.: its standard error across seeds when a cell has "
    "two or more seeds, else over test examples. Δ baseline: the mean paired per-example difference of log p(x) to "
    "the baseline's run with the same seed; Δ s.e.: its standard error across seeds (two or more seeds, training "
    "randomness included) or over examples (one seed). A difference no larger than "
    f"{NOISE_STANDARD_ERRORS:g} standard errors is within noise. gap: log p(x) − ELBO. k-hat > 0.7: fraction of "
    "examples whose importance weights are too heavy-tailed to trust. rank: by log p(x), 1 = highest."
)


def report_markdown(grid: Grid, rows: list, summaries: list, figures: dict, captions=None, checks=()) -> str:
    table = table_rows(summaries)
    lines = ["# Comparison", "", *budget_lines(grid, rows), ""]
    lines += ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    lines += ["", NOTES, ""]
    failed = [r for r in rows if r["state"] != "done"]
    if failed:
        lines += ["## Failed runs", ""]
        lines += [f"- {r['cell']}, seed {r['seed']} (`{r['run_dir']}`): {r['error']}" for r in failed]
        lines.append("")
    lines += published_lines(published_rows(grid.published, summaries, grid.base_config().data.name))
    lines += cross_check_lines(checks)
    lines += ["## Figures", ""]
    for name, path in figures.items():
        lines += [f"![{name}]({path})"] + (["", f"*{(captions or {})[name]}*", ""] if name in (captions or {}) else [])
    lines += ["", "Per-run numbers: `results.csv`; every run folder works with `pyro-vae evaluate` and `sample`.", ""]
    return "\n".join(lines)


def report_html(grid: Grid, rows: list, summaries: list, figures: dict, captions=None, checks=()) -> str:
    table = table_rows(summaries)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table[1:])
    budget = "".join(f"<li>{html.escape(line[2:]).replace('**', '')}</li>" for line in budget_lines(grid, rows))
    images = ""
    for name, path in figures.items():
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode()
        images += f'<h3>{html.escape(name)}</h3><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
        if name in (captions or {}):
            images += f"<p><em>{html.escape(captions[name])}</em></p>"
    failed = "".join(
        f"<li>{html.escape(r['cell'])}, seed {r['seed']}: {html.escape(str(r['error']))}</li>"
        for r in rows
        if r["state"] != "done"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>pyro-vae comparison</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body><h1>Comparison</h1>"
        f"<ul>{budget}</ul><table><tr>{head}</tr>{body}</table><p>{html.escape(NOTES)}</p>"
        + (f"<h2>Failed runs</h2><ul>{failed}</ul>" if failed else "")
        + published_html(published_rows(grid.published, summaries, grid.base_config().data.name))
        + markdown_table_html(cross_check_lines(checks))
        + f"<h2>Figures</h2>{images}</body></html>\n"
    )


# -- the figures -------------------------------------------------------------------------------------------------


def make_figures(grid: Grid, root: str, rows: list, summaries: list, pictures: bool) -> dict:
    folder = os.path.join(root, PLOTS_FOLDER)
    os.makedirs(folder, exist_ok=True)
    done = [r for r in rows if r["state"] == "done"]
    if not done:
        return {}
    cells = {cell.label: cell for cell in grid.expand()}
    curves = {}
    for r in done:
        with open(os.path.join(root, r["run_dir"], "metrics.json")) as f:
            curves.setdefault(r["cell"], []).append(json.load(f))
    figures = {
        "learning curves": plots.learning_curves(curves, os.path.join(folder, "learning_curves.png")),
        "log p(x) per cell": plots.log_px_per_cell(summaries, os.path.join(folder, "log_px.png")),
    }
    if any(s.get("diff_stderr") is not None for s in summaries):
        figures["paired differences"] = plots.paired_differences(
            summaries, grid.baseline_cell().label, os.path.join(folder, "paired_differences.png")
        )
    first = {}
    for r in done:
        first.setdefault(r["cell"], r)
    khats = {label: _khat(grid, cells[label], r["seed"], root) for label, r in first.items()}
    khats = {label: k for label, k in khats.items() if k is not None}
    if khats:
        figures["k-hat per example"] = plots.khat_distributions(khats, os.path.join(folder, "khat.png"))
    if pictures:
        figures.update(_picture_figures(root, first, folder))
    return figures


def _khat(grid, cell, seed, root):
    group = per_example_results(run_folder(root, cell, seed), grid.config(cell, seed).to_dict())
    return group["khat"].values if "khat" in group else None


def _picture_figures(root, first, folder) -> dict:
    """Sample and reconstruction grids (image data; also written into each run folder, as `pyro-vae sample`
    does), and latent manifolds (two-dimensional latents), from one load of each run."""
    import torch

    from pyro_vae import runs

    grids, manifolds = {}, {}
    for label, r in first.items():
        run_dir = os.path.join(root, r["run_dir"])
        run = runs.load_run(run_dir, device="cpu")
        config, splits, vae = run.config, run.splits, run.vae
        if splits.image_shape is None:
            continue
        pictures = runs.picture_grids(run)
        runs.write_pictures(run_dir, pictures)
        grids[label] = tuple(_as_image(pictures[name]) for name in ("samples", "reconstructions"))
        if config.model.latent_dim == 2 and config.model.top_latent_dim is None:
            quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 12))
            z = torch.cartesian_prod(quantiles, quantiles.flip(0))[:, [1, 0]]
            with torch.no_grad():
                means = vae.decode(z).mean
            upscale = max(1, 28 // splits.image_shape[-1])
            image = runs.image_grid(means / runs.brightness_of(splits), splits.image_shape, 12, upscale)
            manifolds[label] = _as_image(image)
    figures = {}
    if grids:
        figures["samples and reconstructions"] = plots.sample_grids(grids, os.path.join(folder, "samples.png"))
    if manifolds:
        figures["latent manifold"] = plots.latent_manifolds(manifolds, os.path.join(folder, "latent_manifold.png"))
    return figures


def _as_image(grid):
    """A ``(3, H, W)`` image grid as the ``(H, W, 3)`` array matplotlib shows."""
    return grid.permute(1, 2, 0).numpy()


def published_html(rows: list) -> str:
    """The published figures beside the measured ones, as an HTML table (empty without them)."""
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("cell", "measured", "published", "gap", "budget", "source"))
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(text)}</td>"
            for text in (
                row["cell"],
                "–" if row["measured"] is None else f"{row['measured']:.2f}",
                f"{row['published']:.2f}",
                gap_text(row),
                budget_text(row),
                row["source"] + (f" ({row['note']})" if row["note"] else ""),
            )
        )
        + "</tr>"
        for row in rows
    )
    return f"<h2>Published figures</h2><table><tr>{head}</tr>{body}</table>"


def markdown_table_html(lines: list) -> str:
    """A markdown section of a heading, one table and notes (as :func:`cross_check_lines` gives) as HTML."""
    if not lines:
        return ""
    title = html.escape(lines[0].lstrip("# "))
    table = [line for line in lines if line.startswith("|") and not line.startswith("|---")]
    cells = [[html.escape(c.strip()) for c in line.strip("|").split("|")] for line in table]
    head = "".join(f"<th>{c}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in lines[1:] if line and not line.startswith("|"))
    return f"<h2>{title}</h2><table><tr>{head}</tr>{body}</table>{notes}"
