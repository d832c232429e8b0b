"""Denormal floats are flushed in every process that trains or evaluates a run (``flush_denormals``, on by default
and recorded in ``config.json``), and flushing leaves a short run's numbers as they were."""

import glob
import json
import os

import pytest

from pyro_vae.cli.main import main
from pyro_vae.compare import Grid, run_comparison
from pyro_vae.config import RunConfig, apply_overrides, load_plugins
from pyro_vae.runs import evaluate_run, read_metrics, train_run
from tests.conftest import require_module

PROBE = os.path.join(os.path.dirname(__file__), "denormal_probe.py")


@pytest.fixture(autouse=True)
def probe_plugin():
    """The probe's encoder registered, as a user names a plugin in Python (a configuration only records it)."""
    load_plugins([PROBE])


def probe_tree(record) -> dict:
    """A small digits run whose encoder records, in each process, whether denormals are flushed there."""
    return {
        "data": {"name": "digits", "num_train": 200, "num_val": 50, "num_test": 40},
        "model": {"latent_dim": 3, "encoder": {"name": "denormal-probe", "options": {"record": str(record)}},
                  "decoder": {"name": "mlp", "options": {"hidden_sizes": [16]}}},
        "train": {"epochs": 1, "batch_size": 50},
        "eval": {"method": {"name": "is", "options": {"num_samples": 20}}},
        "device": "cpu",
        "plugins": [PROBE],
    }  # fmt: skip


def probed(record) -> dict:
    """``{(pid, phase): flushed}`` from the probe's files."""
    found = {}
    for path in glob.glob(os.path.join(record, "*.json")):
        pid, phase = os.path.basename(path)[: -len(".json")].split("-")
        with open(path) as f:
            found[pid, phase] = json.load(f)["flushed"]
    return found


@pytest.mark.parametrize("flush", [True, False])
def test_the_setting_is_recorded_and_applied_while_training_and_evaluating_in_this_process(tmp_path, flush):
    record = tmp_path / "record"
    record.mkdir()
    tree = probe_tree(record)
    if not flush:
        tree["flush_denormals"] = False
    train_run(RunConfig.from_dict(tree), str(tmp_path / "run"), progress=False)
    evaluate_run(str(tmp_path / "run"), progress=False, posterior_examples=())
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["flush_denormals"] is flush
    assert set(probed(record).values()) == {flush} and len(probed(record)) == 2  # one process, steps and no-grad
    assert RunConfig().flush_denormals is True


def test_both_ranks_of_nproc_train_and_evaluate_flush_denormals(tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    config = tmp_path / "probe.json"
    config.write_text(json.dumps(probe_tree(record)))
    run = str(tmp_path / "run")
    train = ["train", "--config", str(config), "--out", run, "--nproc", "2", "--no-progress", "--plugin", PROBE]
    assert main(train) == 0
    trained = probed(record)
    assert len({pid for pid, _ in trained}) == 2 and all(trained.values()), trained
    evaluate = ["evaluate", run, "--nproc", "2", "--data-batch-size", "20", "--no-progress", "--plugin", PROBE]
    evaluate += ["--posterior-examples"]
    assert main(evaluate) == 0
    evaluated = {key: value for key, value in probed(record).items() if key not in trained}
    assert len({pid for pid, _ in evaluated}) == 2 and all(evaluated.values()), evaluated


@pytest.mark.parametrize("ray", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["jobs", "ray"])
def test_every_worker_of_a_comparison_flushes_denormals(tmp_path, ray):
    if ray:
        require_module("ray", "pip install -e '.[ray]'")
    record = tmp_path / "record"
    record.mkdir()
    grid = Grid(base=probe_tree(record), axes={"train.estimator": ["elbo", "iwae"]}, seeds=[0])
    result = run_comparison(grid, str(tmp_path / "cmp"), jobs=2, ray=ray, progress=False, pictures=False)
    assert not result["failures"]
    found = probed(record)
    assert len({pid for pid, _ in found}) >= 2 and all(found.values()), found


def test_a_short_run_with_flushing_equals_the_run_without_within_1e_5_nats(tmp_path):
    """Flushing changes values below 2^-126 only: after 3 epochs the objectives agree to 1e-5 nats per example."""
    base = [("data.num_train", 300), ("data.num_val", 60), ("train.epochs", 3), ("model.latent_dim", 4),
            ("device", "cpu")]  # fmt: skip
    metrics = {}
    for flush in (True, False):
        config = apply_overrides(RunConfig(), base + [("flush_denormals", flush)])
        train_run(config, str(tmp_path / str(flush)), progress=False)
        metrics[flush] = read_metrics(str(tmp_path / str(flush)))
    assert len(metrics[True]) == 3
    for flushed, kept in zip(metrics[True], metrics[False]):
        for key in ("train_objective", "val_elbo"):
            assert flushed[key] == pytest.approx(kept[key], abs=1e-5), key


def test_the_decoder_bandit_flushes_denormals_as_its_configuration_says(tmp_path):
    from pyro_vae.bandit import run_bandit

    for flush in (True, False):
        record = tmp_path / str(flush)
        record.mkdir()
        config = RunConfig.from_dict({**probe_tree(record), "flush_denormals": flush})
        run_bandit(config, ["mlp", "mlp"], steps=2, progress=False)
        assert set(probed(record).values()) == {flush}
