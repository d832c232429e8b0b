"""Published figures beside a comparison's own: what a statistician checks first.

A grid may carry published test log p(x) per cell (in TOML, one ``[[published]]`` table each)::

    [[published]]
    cell = "estimator=iwae, num_particles=50"      # a cell's label, as the report names it
    value = -84.78                                 # nats per example, higher is better (a published NLL negated)
    source = "Burda et al. 2016, Table 1"
    dataset = "mnist"                              # optional: the data the figure is on (default: the grid's)
    epochs = 3280                                  # optional: the published training budget
    note = "784-200-200-50 tanh, K = 5000"          # optional

The report lists each beside the cell's measured mean with the gap (measured minus published) and the budget
difference; a figure on other data than the grid's is shown without a gap, since it measures something else.
"""

import math

from pyro_vae.config import ConfigError

FIELDS = {"cell", "value", "source", "dataset", "epochs", "note"}


def check_published(published: list, labels: list) -> None:
    """Refuse an entry that names no cell, lacks a value or a source, or has keys other than :data:`FIELDS`."""
    for i, entry in enumerate(published):
        where = f"published figure {i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with cell, value and source, got {entry!r}")
        unknown = set(entry) - FIELDS
        if unknown:
            raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; it takes {', '.join(sorted(FIELDS))}")
        if entry.get("cell") not in labels:
            raise ConfigError(
                f"{where} names the cell {entry.get('cell')!r}, which the grid does not have; the cells are: "
                + "; ".join(labels)
            )
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} ('{entry['cell']}') needs a finite number as value (log p(x) in nats)")
        if not isinstance(entry.get("source"), str) or not entry["source"].strip():
            raise ConfigError(f"{where} ('{entry['cell']}') needs a source: the paper and table it comes from")
        epochs = entry.get("epochs")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise ConfigError(f"{where} ('{entry['cell']}'): epochs must be a positive integer, got {epochs!r}")


def published_rows(published: list, summaries: list, dataset: str) -> list:
    """One row per published figure: the cell's measured mean log p(x), the published value, the gap (measured
    minus published; ``None`` when the figure is on other data, or the cell has no result) and both budgets."""
    by_cell = {s["cell"]: s for s in summaries}
    rows = []
    for entry in published:
        summary = by_cell.get(entry["cell"], {})
        measured = summary.get("log_px")
        same_data = entry.get("dataset", dataset) == dataset
        rows.append(
            {
                "cell": entry["cell"],
                "measured": measured,
                "published": float(entry["value"]),
                "gap": measured - entry["value"] if measured is not None and same_data else None,
                "dataset": entry.get("dataset", dataset),
                "same_data": same_data,
                "source": entry["source"],
                "published_epochs": entry.get("epochs"),
                "epochs": summary.get("epochs"),
                "note": entry.get("note"),
            }
        )
    return rows


def published_lines(rows: list) -> list:
    """The report's markdown section (empty without published figures)."""
    if not rows:
        return []
    lines = [
        "## Published figures",
        "",
        "| cell | measured | published | gap | budget | source |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['cell']} | {_number(row['measured'])} | {row['published']:.2f} | {gap_text(row)} | "
            f"{budget_text(row)} | {row['source']}{' (' + row['note'] + ')' if row['note'] else ''} |"
        )
    lines += [
        "",
        "Gap: measured minus published, nats per example (negative: below the published figure). A figure on other "
        "data than this grid's is shown for its direction only, without a gap.",
        "",
    ]
    return lines


def gap_text(row) -> str:
    if not row["same_data"]:
        return f"– (published on {row['dataset']})"
    return _number(row["gap"], signed=True)


def budget_text(row) -> str:
    ours = f"{row['epochs']:.0f} epochs here" if row["epochs"] is not None else "–"
    theirs = f"{row['published_epochs']} published" if row["published_epochs"] else "published budget not given"
    return f"{ours}; {theirs}"


def _number(value, signed=False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"
