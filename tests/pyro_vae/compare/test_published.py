"""Published figures beside a comparison's own (issue 25, item 4)."""

import json
import os

import pytest

from pyro_vae.cli.main import main
from pyro_vae.compare.grid import load_grid_file

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, os.pardir, "configs")

GRID = """
[base]
data.name = "digits"
data.num_train = 200
data.num_val = 40
data.num_test = 40
train.epochs = 2
model.latent_dim = 2
model.encoder = { name = "mlp", options = { hidden_sizes = [8] } }
model.decoder = { name = "mlp", options = { hidden_sizes = [8] } }
eval.method = { name = "is", options = { num_samples = 20 } }

[grid]
"train.estimator" = ["elbo", "iwae"]

[[published]]
cell = "estimator=iwae"
value = -30.0
source = "A paper, Table 2"
epochs = 500

[[published]]
cell = "estimator=elbo"
value = -85.0
source = "Another paper on MNIST"
dataset = "mnist"
"""


def test_the_report_puts_published_figures_beside_the_measured_ones_with_the_gap(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    out = str(tmp_path / "cmp")
    assert main(["compare", "--grid", str(tmp_path / "grid.toml"), "--out", out, "--no-progress", "--no-pictures"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        measured = {cell["cell"]: cell["log_px"] for cell in json.load(f)["cells"]}
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    section = report.split("## Published figures")[1].split("##")[0]
    iwae_line = next(line for line in section.splitlines() if line.startswith("| estimator=iwae |"))
    gap = measured["estimator=iwae"] - (-30.0)
    assert f"| {measured['estimator=iwae']:.2f} | -30.00 | {gap:+.2f} |" in iwae_line
    assert "2 epochs here; 500 published" in iwae_line and "A paper, Table 2" in iwae_line
    elbo_line = next(line for line in section.splitlines() if line.startswith("| estimator=elbo |"))
    assert "– (published on mnist)" in elbo_line  # other data: no gap
    with open(os.path.join(out, "report.html")) as f:
        assert "<h2>Published figures</h2>" in f.read()


@pytest.mark.parametrize(
    "entry, message",
    [
        ('cell = "estimator=vimco"\nvalue = -1.0\nsource = "x"', "names the cell 'estimator=vimco', which the grid"),
        ('cell = "estimator=iwae"\nvalue = -1.0', "needs a source"),
        ('cell = "estimator=iwae"\nvalue = "high"\nsource = "x"', "needs a finite number as value"),
        ('cell = "estimator=iwae"\nvalue = -1.0\nsource = "x"\nyear = 2016', "unknown keys ['year']"),
    ],
)
def test_a_published_figure_that_cannot_be_placed_is_refused_before_anything_runs(tmp_path, capsys, entry, message):
    grid = GRID.split("[[published]]")[0] + "[[published]]\n" + entry + "\n"
    (tmp_path / "grid.toml").write_text(grid)
    out = tmp_path / "cmp"
    assert main(["compare", "--grid", str(tmp_path / "grid.toml"), "--out", str(out), "--no-progress"]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    "name, count", [("burda-fashion-mnist-full.toml", 14), ("vampprior-fashion-mnist-full.toml", 2)]
)
def test_the_full_budget_grids_carry_their_published_figures(name, count):
    grid = load_grid_file(os.path.join(CONFIGS, name))
    grid.check()  # every figure names a cell of the grid
    assert len(grid.published) == count and all(entry["source"] for entry in grid.published)


def test_a_grid_without_published_figures_keeps_its_grid_json(tmp_path):
    grid = load_grid_file(os.path.join(CONFIGS, "burda-fashion-mnist.toml"))
    assert "published" not in grid.to_dict()  # so an existing comparison folder still resumes
