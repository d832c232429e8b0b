"""A comparison grid: one base configuration, the configuration paths that vary, and the seeds.

A grid is written in TOML (or given on the command line, :mod:`pyro_vae.cli`)::

    [base]                          # a configuration tree, as for `pyro-vae train --config`
    data.name = "digits"
    train.epochs = 20

    [grid]                          # every combination of these values is a cell
    "train.estimator" = ["elbo", "iwae"]
    "train.estimator.options.num_particles" = [1, 5]

    [[cells]]                       # optional: hand-picked cells, each crossed with the [grid] axes
    label = "two layers"
    "model.top_latent_dim" = 50

    [compare]
    seeds = [0, 1, 2]               # train.seed of each cell's runs
    baseline = "estimator=elbo, num_particles=1"

    [[published]]                   # optional: published figures beside ours (pyro_vae.compare.published)
    cell = "estimator=iwae, num_particles=5"
    value = -85.54
    source = "Burda et al. 2016, Table 1"

Every cell of the grid runs once per seed into ``cells/<cell>/seed-<s>/``, an ordinary run folder. All runs share
the base's ``data`` section, in particular ``data.seed``, so that every cell is evaluated on the very same test
examples and their per-example log p(x) can be compared in pairs (:mod:`pyro_vae.compare.statistics`); a grid
that varies ``data.seed`` or a training seed is refused for that reason (seeds go in ``compare.seeds``).
"""

import dataclasses
import itertools
import json
import re
from typing import Optional

from pyro_vae.compare.published import check_published
from pyro_vae.config import ConfigError, RunConfig, apply_overrides, read_tree_file

#: Paths a grid may not vary: the pairing of test examples needs one data seed, and seeds are their own axis.
FIXED_PATHS = ("data.seed", "train.seed")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the grid: its overrides of the base configuration, a label and a folder name."""

    label: str
    overrides: tuple  # ((path, value), ...), applied in order

    @property
    def folder(self) -> str:
        """The label as a folder name: ``estimator=iwae, num_particles=5`` -> ``estimator-iwae_num_particles-5``."""
        text = re.sub(r"\s*,\s*", "_", self.label)
        text = re.sub(r"[^A-Za-z0-9_.+-]+", "-", text.replace("=", "-"))
        return text.strip("-_") or "base"


@dataclasses.dataclass
class Grid:
    """What a comparison runs: ``base`` (a configuration tree), ``axes`` (``{path: [values]}``, crossed),
    ``cells`` (hand-picked ``{path: value}`` tables, optionally with a ``label``, crossed with the axes),
    ``seeds`` (training seeds) and ``baseline`` (the label of the cell every other is compared with; the first
    cell when ``None``)."""

    base: dict = dataclasses.field(default_factory=dict)
    axes: dict = dataclasses.field(default_factory=dict)
    cells: list = dataclasses.field(default_factory=list)
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    baseline: Optional[str] = None
    #: Published figures per cell (:mod:`pyro_vae.compare.published`), listed beside the measured ones.
    published: list = dataclasses.field(default_factory=list)
    #: Further log p(x) methods every run is evaluated with (:mod:`pyro_vae.compare.cross_checks`).
    cross_checks: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        tree = dataclasses.asdict(self)
        for optional in ("published", "cross_checks"):  # absent when empty: an older grid.json reads as it did
            if not tree[optional]:
                del tree[optional]
        return tree

    @classmethod
    def from_dict(cls, tree: dict) -> "Grid":
        unknown = set(tree) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(
                f"unknown grid keys {sorted(unknown)}: a grid has base, axes, cells, seeds, baseline, published, "
                "cross_checks"
            )
        grid = cls(**tree)
        grid.check()
        return grid

    # -- checks ------------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Refuse what cannot be compared, before anything runs: unknown paths or values, seeds in the grid, an
        empty grid, repeated cells, a baseline that names no cell."""
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ConfigError(f"compare.seeds must be a non-empty list of integers, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"compare.seeds repeats a seed: {self.seeds}")
        for path, values in self.axes.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid axis '{path}' must be a non-empty list of values, got {values!r}")
        for path in list(self.axes) + [p for cell in self.cells for p in cell if p != "label"]:
            if path in FIXED_PATHS:
                raise ConfigError(
                    f"a grid may not vary '{path}': every cell is evaluated on the same test examples (one data "
                    "seed) so that differences are paired; give training seeds with --seeds (compare.seeds)"
                )
        base = self.base_config()
        expanded = self.expand()
        labels = [cell.label for cell in expanded]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ConfigError(f"the grid has the cell '{repeated[0]}' twice; give hand-picked cells distinct labels")
        folders = [cell.folder for cell in expanded]
        if len(set(folders)) != len(folders):
            raise ConfigError("two cells map to one folder name; give the hand-picked cells distinct labels")
        for cell in expanded:
            try:
                apply_overrides(base, cell.overrides)
            except ConfigError as e:
                raise ConfigError(f"cell '{cell.label}': {e}") from None
        if self.baseline is not None and self.baseline not in labels:
            raise ConfigError(f"the baseline '{self.baseline}' is not a cell; the cells are: {'; '.join(labels)}")
        check_published(self.published, labels)
        check_cross_checks(self.cross_checks)

    # -- cells -------------------------------------------------------------------------------------------------

    def base_config(self) -> RunConfig:
        return RunConfig.from_dict(self.base)

    def expand(self) -> list:
        """The cells: every hand-picked cell (or the base alone) crossed with every combination of the axes; a
        cell's label names its hand-picked label (or values) and the values of the axes that take several."""
        picked = self.cells or [{}]
        axes = sorted(self.axes.items(), key=lambda item: item[0].count("."))  # a component before its options
        names = _short_names([path for path, _ in axes] + [p for cell in picked for p in cell if p != "label"])
        cells = []
        for chosen in picked:
            fixed = [(path, value) for path, value in chosen.items() if path != "label"]
            fixed_label = chosen.get("label") or ", ".join(f"{names[p]}={_text(v)}" for p, v in fixed)
            for values in itertools.product(*(values for _, values in axes)):
                varied = list(zip([path for path, _ in axes], values))
                parts = [fixed_label] if fixed_label else []
                parts += [f"{names[path]}={_text(value)}" for path, value in varied if len(self.axes[path]) > 1]
                cells.append(Cell(", ".join(parts) or "base", tuple(fixed + varied)))
        return cells

    def baseline_cell(self) -> Cell:
        cells = self.expand()
        return next(cell for cell in cells if cell.label == self.baseline) if self.baseline else cells[0]

    def config(self, cell: Cell, seed: int) -> RunConfig:
        """The configuration of ``cell``'s run with training seed ``seed``."""
        return apply_overrides(self.base_config(), list(cell.overrides) + [("train.seed", seed)])

    def varying_paths(self) -> list:
        """Every configuration path whose value differs between cells (the columns of ``results.csv``)."""
        cells = self.expand()
        paths = sorted({path for cell in cells for path, _ in cell.overrides})
        return [p for p in paths if len({json.dumps(dict(c.overrides).get(p), sort_keys=True) for c in cells}) > 1]


def _short_names(paths) -> dict:
    """``{path: label name}``: the last key that is not ``name``/``options`` (``train.estimator.options.
    num_particles`` -> ``num_particles``), or the whole path where two paths would share a name."""
    short = {}
    for path in paths:
        keys = [k for k in path.split(".") if k not in ("name", "options")]
        short[path] = keys[-1] if keys else path
    counts = {}
    for name in short.values():
        counts[name] = counts.get(name, 0) + 1
    return {path: name if counts[name] == 1 else path for path, name in short.items()}


def _text(value) -> str:
    if isinstance(value, dict) and set(value) <= {"name", "options"} and "name" in value:
        options = ",".join(f"{k}:{_text(v)}" for k, v in value.get("options", {}).items())
        return value["name"] + (f"({options})" if options else "")
    if isinstance(value, (list, tuple)):
        return "x".join(_text(v) for v in value)
    if value is None:
        return "none"
    return str(value)


def load_grid_file(path) -> Grid:
    """A grid from a TOML (or JSON) file with the tables ``base``, ``grid``, ``cells`` and ``compare``."""
    tree = read_tree_file(path, "grid file")
    unknown = set(tree) - {"base", "grid", "cells", "compare", "published"}
    if unknown:
        raise ConfigError(
            f"'{path}': unknown tables {sorted(unknown)}; a grid file has base, grid, cells, compare, published"
        )
    settings = dict(tree.get("compare", {}))
    extra = set(settings) - {"seeds", "baseline", "cross_checks"}
    if extra:
        raise ConfigError(
            f"'{path}': unknown keys {sorted(extra)} in [compare]; it takes seeds, baseline and cross_checks"
        )
    return Grid(
        base=tree.get("base", {}),
        axes=_flatten(tree.get("grid", {})),
        cells=[_flatten(cell) for cell in tree.get("cells", [])],
        seeds=settings.get("seeds", [0]),
        baseline=settings.get("baseline"),
        published=list(tree.get("published", [])),
        cross_checks=list(settings.get("cross_checks", [])),
    )


def _flatten(table: dict, prefix: str = "") -> dict:
    """TOML's nested tables (``train.estimator = [...]`` parses as ``{"train": {"estimator": [...]}}``) back to
    dotted paths; quoted keys (``"train.estimator" = [...]``) are dotted paths already."""
    flat = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and not (set(value) <= {"name", "options"} and "name" in value):
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def as_method(check) -> dict:
    """A cross-check as ``{"name", "options"}`` (a bare name has no options)."""
    return {"name": check, "options": {}} if isinstance(check, str) else {"options": {}, **check}


def check_cross_checks(checks: list) -> None:
    """Refuse what is not a registered log p(x) method with valid options, before anything runs."""
    from inference import log_px_method

    for check in checks:
        if not isinstance(check, (str, dict)) or (isinstance(check, dict) and "name" not in check):
            raise ConfigError(f"a cross-check is a log p(x) method name or {{name, options}}, got {check!r}")
        method = as_method(check)
        try:
            log_px_method(method["name"], **method["options"])
        except (ValueError, TypeError) as e:
            raise ConfigError(f"cross-check '{method['name']}': {e}") from None
