"""Budgets in steps, likelihood evaluations and seconds (issue 25): exact counts, exact resume, and refusals."""

import json

import pytest
import torch

from inference.training.budget import Budget, Spent
from inference.training.callbacks import Callback
from pyro_vae.cli.main import main
from pyro_vae.config import ConfigError
from pyro_vae.runs import read_metrics, train_run
from tests.pyro_vae.small_run import small_config


def _without_times(metrics):
    return [{k: v for k, v in entry.items() if not k.endswith("seconds")} for entry in metrics]


def test_an_evaluations_budget_gives_iwae_50_one_fiftieth_of_the_elbos_steps(tmp_path):
    budget = {"train.budget.kind": "evaluations", "train.budget.amount": 50 * 50 * 6}  # 6 IWAE-50 steps
    elbo = train_run(small_config(**budget), str(tmp_path / "elbo"), progress=False).metrics
    iwae = small_config(**budget, **{"train.estimator.name": "iwae", "train.estimator.options": {"num_particles": 50}})
    iwae = train_run(iwae, str(tmp_path / "iwae"), progress=False).metrics
    assert (elbo[-1]["steps"], iwae[-1]["steps"]) == (300, 6)
    assert elbo[-1]["likelihood_evaluations"] == iwae[-1]["likelihood_evaluations"] == 15000
    assert elbo[-1]["budget_spent"] and iwae[-1]["budget_spent"]
    assert [m["steps"] for m in iwae] == [4, 6]  # four steps an epoch; the second epoch stops part-way
    assert read_metrics(str(tmp_path / "iwae")) == iwae  # metrics.json holds the same counts


class _InterruptAtStep(Callback):
    """Ctrl-C after the ``step``-th step of the run: between two checkpoints."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.spent.steps == self.step:
            raise KeyboardInterrupt


def test_a_run_interrupted_mid_budget_resumes_to_the_uninterrupted_end(tmp_path):
    config = small_config(**{"train.budget.kind": "steps", "train.budget.amount": 10, "train.estimator.name": "iwae"})
    straight = train_run(config, str(tmp_path / "straight"), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, str(tmp_path / "cut"), progress=False, callbacks=[_InterruptAtStep(7)])
    assert read_metrics(str(tmp_path / "cut"))[-1]["steps"] == 4  # the checkpoint is that of the first epoch
    resumed = train_run(config, str(tmp_path / "cut"), resume=True, progress=False)
    assert [m["steps"] for m in straight.metrics] == [4, 8, 10]
    assert _without_times(resumed.metrics) == _without_times(straight.metrics)
    for (name, a), b in zip(straight.vae.state_dict().items(), resumed.vae.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_seconds_budget_counts_the_seconds_before_an_interruption(tmp_path):
    class InterruptAfterFirstEpoch(Callback):
        def on_epoch_end(self, trainer, entry):
            if entry["epoch"] == 1:
                raise KeyboardInterrupt

    config = small_config(**{"train.budget.kind": "seconds", "train.budget.amount": 1.0})
    with pytest.raises(KeyboardInterrupt):
        train_run(config, str(tmp_path / "run"), progress=False, callbacks=[InterruptAfterFirstEpoch()])
    first = read_metrics(str(tmp_path / "run"))[0]["elapsed_seconds"]
    metrics = train_run(config, str(tmp_path / "run"), resume=True, progress=False).metrics
    elapsed = [m["elapsed_seconds"] for m in metrics]
    assert elapsed[0] == first and elapsed == sorted(elapsed)  # carried over the resume, never reset
    assert elapsed[-1] >= 1.0 and metrics[-1]["budget_spent"]
    # the last step began before the second was out: the run overshoots by at most that step and its epoch's end
    assert elapsed[-1] - 1.0 < 1.0


def test_a_budget_run_resumes_only_to_its_own_budget(tmp_path, capsys):
    """Its last epoch stopped part-way: continued to a larger budget, it would not be the run that budget trains
    (steps per epoch 4, 2 against 4, 4, 1), so another budget on resume is refused, changing nothing."""
    args = ["--dataset", "digits", "--num-train", "200", "--batch-size", "50", "--hidden-sizes", "16"]
    args += ["--latent-dim", "3", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(["train", *args, "--budget", "steps=6"]) == 0
    assert "(6 steps budget: 6 steps, 300 likelihood evaluations" in capsys.readouterr().out
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()}
    assert main(["train", "--resume", *args, "--budget", "steps=9"]) == 2
    err = capsys.readouterr().err
    assert "trains to a budget of 6 steps" in err and "Resume without --budget" in err
    assert before == {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()}
    assert main(["train", "--resume", *args]) == 0  # the advice works: nothing left to train
    with open(tmp_path / "run" / "metrics.json") as f:
        assert [m["steps"] for m in json.load(f)] == [4, 6]


def test_a_budget_that_fits_no_step_is_refused_before_anything_is_written(tmp_path, capsys):
    args = ["--dataset", "digits", "--num-train", "200", "--batch-size", "50", "--hidden-sizes", "16"]
    out = tmp_path / "run"
    args += ["--latent-dim", "3", "--no-progress", "--out", str(out), "--estimator", "iwae", "--num-particles", "5"]
    assert main(["train", *args, "--budget", "evaluations=100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "fits no step of this run (one step computes 250 likelihood evaluations" in err and "\n" not in err
    assert not out.exists()
    assert main(["train", *args, "--budget", "evaluations=250"]) == 0  # the fix it names
    with open(out / "metrics.json") as f:
        assert [(m["steps"], m["likelihood_evaluations"]) for m in json.load(f)] == [(1, 250)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("bananas=5", "'train.budget.kind' must be epochs, steps, evaluations, seconds"),
        ("steps=0", "needs a positive 'train.budget.amount'"),
        ("steps", "is not KIND=AMOUNT"),
    ],
)
def test_a_bad_budget_is_refused_in_one_line_naming_a_working_form(tmp_path, capsys, text, message):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--budget", text, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "=1e7" in err  # each names a form that works
    assert not out.exists()


def test_budget_arithmetic():
    spent = Spent().after_step(100).after_step(100)
    assert Budget("evaluations", 300).allows(spent, 100) and not Budget("evaluations", 299).allows(spent, 100)
    assert Budget("steps", 2).is_spent(spent, 1) and not Budget("steps", 3).is_spent(spent, 1)
    assert Spent.from_metrics(spent.as_metrics()) == spent
    with pytest.raises(ValueError, match="positive"):
        Budget("steps", -1)
    with pytest.raises(ConfigError, match="an epochs budget is 'train.epochs'"):
        small_config(**{"train.budget.amount": 5})


def test_a_comparison_at_equal_evaluations_reports_the_budget_and_what_each_cell_spent(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--dataset", "digits", "--num-train", "200", "--num-test", "40", "--batch-size", "50"]
    args += ["--hidden-sizes", "16", "--latent-dim", "3", "--num-samples", "20", "--no-pictures", "--no-progress"]
    args += ["--set", "train.estimator=iwae", "--vary", "train.estimator.options.num_particles=1,50"]
    args += ["--budget", "evaluations=15000", "--out", str(out)]
    assert main(args) == 0
    with open(out / "results.json") as f:
        rows = {row["cell"]: row for row in json.load(f)["runs"]}
    steps = {label: row["steps"] for label, row in rows.items()}
    assert sorted(steps.values()) == [6, 300]  # K = 50 gets one fiftieth of K = 1's steps
    assert {row["likelihood_evaluations"] for row in rows.values()} == {15000}
    report = (out / "report.md").read_text()
    assert "**Budget per run:** 15000 evaluations" in report and "| 15,000 |" in report
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("cells/*/seed-0/checkpoint.pt")}
    assert len(stamps) == 2 and main(args) == 0  # rerun: every run is done, nothing trains again
    assert stamps == {path: path.stat().st_mtime_ns for path in stamps}


def test_compare_update_keeps_budget_runs_and_refuses_another_budget(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--dataset", "digits", "--num-train", "200", "--num-test", "40", "--batch-size", "50"]
    args += ["--hidden-sizes", "16", "--latent-dim", "3", "--num-samples", "20", "--no-pictures", "--no-progress"]
    args += ["--vary", "train.estimator=elbo,iwae", "--epochs", "2", "--out", str(out)]  # epochs: unused by a budget
    assert main([*args, "--budget", "steps=12"]) == 0  # 3 epochs of 4 steps, more than --epochs
    kept = out / "cells" / "estimator-elbo" / "seed-0" / "checkpoint.pt"
    stamp = kept.stat().st_mtime_ns
    assert main([*args, "--budget", "steps=12", "--seeds", "0", "1", "--update"]) == 0  # a seed added
    assert kept.stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main([*args, "--budget", "steps=16", "--seeds", "0", "1", "--update"]) == 2
    assert "was trained with other settings (train.budget.amount: 12.0 there, 16.0 here)" in capsys.readouterr().err


def test_a_whole_count_budget_of_a_fraction_is_refused_with_a_fix_that_trains(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "--dataset", "digits", "--num-train", "200", "--no-progress", "--out", str(out)]
    assert main([*common, "--budget", "steps=1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "counts whole steps" in err and "\n" not in err and not out.exists()
    fix = err.split("give --budget ")[1].split()[0]
    assert main([*common, "--budget", fix]) == 0
    assert read_metrics(str(out))[-1]["steps"] == 1


def test_a_seconds_budget_shorter_than_a_step_trains_one_step(tmp_path):
    """A step's time is known only once it is taken, so a seconds budget always takes the run's first step (before:
    no epoch, a traceback, and a 'finished' run without a checkpoint)."""
    config = small_config(**{"train.budget.kind": "seconds", "train.budget.amount": 1e-9})
    metrics = train_run(config, str(tmp_path / "run"), progress=False).metrics
    assert len(metrics) == 1 and metrics[-1]["steps"] == 1 and metrics[-1]["budget_spent"]
    assert (tmp_path / "run" / "checkpoint.pt").exists()
