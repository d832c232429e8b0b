"""`pyro-vae compare` end to end on digits: the report's numbers are the run folders' numbers, paired differences
are the per-example differences of the stored estimates, and a killed comparison resumes to the same results."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import arviz
import numpy as np
import pytest

from pyro_vae.compare import Grid, run_comparison
from pyro_vae.compare.grid import Cell, load_grid_file
from pyro_vae.compare.report import table_rows
from pyro_vae.config import ConfigError
from tests.conftest import require_module

TIMING_COLUMNS = {"train_seconds", "seconds", "eval_seconds", "seconds_per_epoch"}


def tiny_grid(epochs=2, seeds=(0, 1)):
    return Grid(
        base={
            "data": {"name": "digits", "num_test": 60},
            "model": {"latent_dim": 4},
            "train": {"epochs": epochs, "estimator": {"name": "elbo", "options": {"num_particles": 2}}},
            "eval": {"method": {"name": "is", "options": {"num_samples": 100}}},
        },
        axes={"train.estimator": ["elbo", "iwae"]},
        seeds=list(seeds),
    )


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def eval_report(root, row):
    with open(os.path.join(root, row["run_dir"], "eval", "is-test.json")) as f:
        return json.load(f)


def per_example(root, row):
    report = eval_report(root, row)
    data = arviz.from_netcdf(os.path.join(root, row["run_dir"], report["inference_data"]))
    return data.log_marginal_likelihood["log_px"].values


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("compare") / "tiny")
    start = time.perf_counter()
    result = run_comparison(tiny_grid(), root, jobs=2, progress=False)
    return root, result, time.perf_counter() - start


def test_tiny_grid_runs_end_to_end_within_a_minute(tiny):
    root, result, seconds = tiny
    assert seconds < 60, f"2 estimators x 2 seeds x 2 epochs took {seconds:.0f} s"
    assert not result["failures"]
    for name in ("results.csv", "results.json", "report.md", "report.html", "grid.json"):
        assert os.path.getsize(os.path.join(root, name)) > 0
    assert len(read_csv(os.path.join(root, "results.csv"))) == 4


def test_results_csv_holds_each_runs_own_evaluation(tiny):
    root, _, _ = tiny
    for row in read_csv(os.path.join(root, "results.csv")):
        report = eval_report(root, row)
        for key in ("log_px", "log_px_stderr", "log_px_mc_stderr", "elbo", "gap", "khat_fraction_above_0.7"):
            assert float(row[key]) == report[key], key
        assert int(row["active_units"]) == report["active_units"]
        assert int(row["num_examples"]) == report["num_examples"] == 60
        assert row["train.estimator"] in ("elbo", "iwae")


def test_report_table_is_the_mean_over_seeds_of_the_evaluations(tiny):
    root, _, _ = tiny
    rows = read_csv(os.path.join(root, "results.csv"))
    with open(os.path.join(root, "report.md")) as f:
        markdown = f.read()
    for cell in ("estimator=elbo", "estimator=iwae"):
        reports = [eval_report(root, r) for r in rows if r["cell"] == cell]
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {cell} |"))
        fields = [field.strip() for field in line.strip("|").split("|")]
        log_px = [r["log_px"] for r in reports]
        assert fields[2] == f"{np.mean(log_px):.3f}"
        assert fields[3] == f"{np.std(log_px, ddof=1) / math.sqrt(2):.3f}"  # across the two seeds
        assert fields[4] == f"{np.mean([r['elbo'] for r in reports]):.3f}"
        assert fields[5] == f"{np.mean([r['gap'] for r in reports]):.3f}"


def test_paired_differences_are_means_of_per_example_differences(tiny):
    root, result, _ = tiny
    rows = read_csv(os.path.join(root, "results.csv"))
    base = {r["seed"]: r for r in rows if r["cell"] == "estimator=elbo"}
    per_seed = []
    for row in rows:
        if row["cell"] != "estimator=iwae":
            continue
        d = per_example(root, row) - per_example(root, base[row["seed"]])
        assert float(row["diff_to_baseline"]) == pytest.approx(d.mean(), abs=1e-9)
        assert float(row["diff_stderr"]) == pytest.approx(d.std(ddof=1) / math.sqrt(d.size), rel=1e-9)
        per_seed.append(d.mean())
    summary = next(s for s in result["cells"] if s["cell"] == "estimator=iwae")
    assert summary["diff_to_baseline"] == pytest.approx(np.mean(per_seed), abs=1e-9)
    assert summary["diff_stderr"] == pytest.approx(np.std(per_seed, ddof=1) / math.sqrt(2), rel=1e-9)
    assert summary["diff_stderr_kind"] == "seeds"


def test_a_dequantized_density_stands_beside_an_8_bit_mass(tmp_path):
    """The dequantized cell's bound on the 8-bit mass is paired with the 8-bit cell, example by example."""
    grid = Grid(
        base={
            "data": {"name": "digits", "num_test": 40},
            "model": {"latent_dim": 4},
            "train": {"epochs": 1},
            "eval": {"method": {"name": "is", "options": {"num_samples": 20}}},
        },
        cells=[
            {"label": "8-bit", "model.likelihood": "discretized-logistic"},
            {"label": "dequantized", "model.likelihood": "beta", "data.dequantize": True},
        ],
        seeds=[0],
    )
    result = run_comparison(grid, str(tmp_path), progress=False, pictures=False)
    rows = {r["cell"]: r for r in read_csv(os.path.join(tmp_path, "results.csv"))}
    assert rows["dequantized"]["data_representation"] == "dequantized"
    d = per_example(tmp_path, rows["dequantized"]) - per_example(tmp_path, rows["8-bit"])
    assert float(rows["dequantized"]["diff_to_baseline"]) == pytest.approx(d.mean(), abs=1e-9)
    with open(os.path.join(tmp_path, "report.md")) as f:
        assert "stand beside the 8-bit cells" in f.read()
    assert not result["failures"]


def test_plots_exist_and_are_images(tiny):
    import matplotlib.image

    root, _, _ = tiny
    names = ["learning_curves", "log_px", "paired_differences", "khat", "samples"]
    for name in names:
        image = matplotlib.image.imread(os.path.join(root, "plots", f"{name}.png"))
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01, f"{name}.png is blank"
    with open(os.path.join(root, "report.html")) as f:
        page = f.read()
    assert page.count("data:image/png;base64,") == len(names)


def test_a_different_grid_into_the_same_folder_is_refused(tiny):
    root, _, _ = tiny
    with pytest.raises(ConfigError, match="holds another comparison .*: rerun with --update"):
        run_comparison(tiny_grid(seeds=(0, 1, 2)), root, progress=False)


def test_rerun_of_a_finished_comparison_trains_and_evaluates_nothing(tiny, tmp_path):
    root, _, _ = tiny
    files = [os.path.join(dirpath, f) for dirpath, _, names in os.walk(os.path.join(root, "cells")) for f in names]
    stamps = {f: os.stat(f).st_mtime_ns for f in files if f.endswith((".pt", ".nc", "metrics.json"))}
    run_comparison(tiny_grid(), root, progress=False, pictures=False)
    assert {f: os.stat(f).st_mtime_ns for f in stamps} == stamps


# -- resuming after a kill ---------------------------------------------------------------------------------------


def test_killed_comparison_resumes_to_the_same_results(tmp_path):
    epochs = 40
    args = [
        sys.executable, "-m", "pyro_vae.cli", "compare", "--dataset", "digits", "--num-test", "60",
        "--latent-dim", "4", "--epochs", str(epochs), "--num-samples", "100", "--vary", "train.estimator=elbo,iwae",
        "--no-pictures", "--no-progress", "--jobs", "1",
    ]  # fmt: skip
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    subprocess.run(args + ["--out", whole], check=True, capture_output=True)

    second = os.path.join(killed, "cells", "estimator-iwae", "seed-0", "status.json")
    process = subprocess.Popen(args + ["--out", killed], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # generous: on a loaded machine the second run starts late
    status = {}
    while time.time() < deadline and process.poll() is None:
        try:
            with open(second) as f:
                status = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        if status.get("epochs_done", 0) >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with open(second) as f:
        status = json.load(f)
    assert status["state"] == "training" and 2 <= status["epochs_done"] < epochs, "the kill missed the second run"
    first = os.path.join(killed, "cells", "estimator-elbo", "seed-0", "checkpoint.pt")
    stamp = os.stat(first).st_mtime_ns

    subprocess.run(args + ["--out", killed], check=True, capture_output=True)
    assert os.stat(first).st_mtime_ns == stamp, "the finished run was trained again"
    resumed, uninterrupted = read_csv(os.path.join(killed, "results.csv")), read_csv(os.path.join(whole, "results.csv"))
    for a, b in zip(resumed, uninterrupted):
        assert {k: v for k, v in a.items() if k not in TIMING_COLUMNS} == {
            k: v for k, v in b.items() if k not in TIMING_COLUMNS
        }


# -- Ray -----------------------------------------------------------------------------------------------------------


def test_ray_gives_the_same_results_as_a_local_pool(tiny, tmp_path):
    require_module("ray", "pip install -e '.[ray]'")
    root, _, _ = tiny
    ray_root = str(tmp_path / "ray")
    result = run_comparison(tiny_grid(), ray_root, jobs=2, ray=True, progress=False, pictures=False)
    assert not result["failures"]
    local, on_ray = read_csv(os.path.join(root, "results.csv")), read_csv(os.path.join(ray_root, "results.csv"))
    assert len(local) == len(on_ray) == 4
    for a, b in zip(local, on_ray):
        assert {k: v for k, v in a.items() if k not in TIMING_COLUMNS} == {
            k: v for k, v in b.items() if k not in TIMING_COLUMNS
        }


# -- the grid ------------------------------------------------------------------------------------------------------


def test_grid_crosses_hand_picked_cells_with_axes_and_names_them():
    grid = Grid(
        axes={"train.estimator.options.num_particles": [1, 5], "train.estimator": ["elbo", "iwae"]},
        cells=[{"label": "small"}, {"model.latent_dim": 20}],
    )
    labels = [cell.label for cell in grid.expand()]
    assert len(labels) == 8
    assert labels[0] == "small, estimator=elbo, num_particles=1"
    assert labels[-1] == "latent_dim=20, estimator=iwae, num_particles=5"
    # the component comes before its options, so the options survive the component's name being set
    config = grid.config(grid.expand()[-1], seed=3)
    assert config.train.estimator.name == "iwae" and config.train.estimator.options["num_particles"] == 5
    assert config.train.seed == 3 and config.model.latent_dim == 20
    assert grid.expand()[-1].folder == "latent_dim-20_estimator-iwae_num_particles-5"


@pytest.mark.parametrize(
    "grid, message",
    [
        (Grid(axes={"data.seed": [0, 1]}), "may not vary 'data.seed'"),
        (Grid(axes={"train.seed": [0, 1]}), "may not vary 'train.seed'"),
        (Grid(axes={"train.estimator": ["elbo", "iwea"]}), "Did you mean 'iwae'"),
        (Grid(axes={"train.estimator": []}), "non-empty list"),
        (Grid(seeds=[0, 0]), "repeats a seed"),
        (Grid(axes={"train.estimator": ["elbo"]}, baseline="estimator=iwae"), "is not a cell"),
        (Grid(cells=[{"label": "a"}, {"label": "a"}]), "twice"),
    ],
)
def test_grids_that_cannot_be_compared_are_refused(grid, message):
    with pytest.raises(ConfigError, match=message):
        grid.check()


def test_bundled_burda_grids_load():
    for name in ("burda-fashion-mnist.toml", "burda-fashion-mnist-full.toml"):
        grid = load_grid_file(os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", name))
        grid.check()
        cells = grid.expand()
        assert len(cells) == 12
        two_layer = grid.config(next(c for c in cells if c.label.startswith("2 layers")), 0)
        assert (two_layer.model.latent_dim, two_layer.model.top_latent_dim) == (100, 50)
    assert grid.base_config().train.epochs == 3280 and grid.base_config().train.lr_schedule.name == "burda"


@pytest.mark.parametrize(
    "name, epochs, pseudo_inputs",
    [("vampprior-fashion-mnist.toml", 30, 100), ("vampprior-fashion-mnist-full.toml", 2000, 500)],
)
def test_bundled_vampprior_grids_load(name, epochs, pseudo_inputs):
    grid = load_grid_file(os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", name))
    grid.check()
    configs = {cell.label: grid.config(cell, 0) for cell in grid.expand()}
    assert sorted(configs) == ["VampPrior", "normal prior"] and grid.base_config().train.epochs == epochs
    assert configs["VampPrior"].model.prior.options["num_pseudo_inputs"] == pseudo_inputs


def test_cell_folder_names_are_safe():
    assert Cell("model=a/b, lr=1e-3", ()).folder == "model-a-b_lr-1e-3"


def test_report_marks_failed_cells():
    table = table_rows([{"cell": "x", "seeds": 0, "failed": 1}])
    assert table[1][:3] == ["x", "0", "failed"]


def test_progress_survives_a_status_file_it_cannot_read(tmp_path):
    from pyro_vae.compare.execution import ProgressMonitor

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text("{")  # as if caught between two writes
    tree = {"train": {"epochs": 3}, "eval": {"method": {"name": "is"}, "split": "test"}}
    with ProgressMonitor([(str(run_dir), tree)], enabled=False, interval=0.01) as monitor:
        time.sleep(0.05)
        (run_dir / "status.json").write_text(json.dumps({"state": "training", "epochs_done": 2}))
        time.sleep(0.1)
        assert monitor.bar.n == 2  # the polling thread is still alive and has read the good file
