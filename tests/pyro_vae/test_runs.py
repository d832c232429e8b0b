import json
import math
import subprocess
import sys

import pyro
import pytest
import torch

from inference import log_marginal_likelihood
from pyro_vae.config import Component, RunConfig
from pyro_vae.folder import json_safe
from pyro_vae.runs import eval_split, load_run, prepare_data, read_metrics, train_run
from tests.pyro_vae.small_run import small_config


def test_json_safe_turns_non_finite_numbers_into_null():
    report = {"khat_max": math.inf, "stderr": math.nan, "values": [1.5, -math.inf], "n": 3}
    assert json.loads(json.dumps(json_safe(report), allow_nan=False)) == {
        "khat_max": None,
        "stderr": None,
        "values": [1.5, None],
        "n": 3,
    }


def _small(**overrides):
    return small_config(**{"train.epochs": 2, **overrides})


def test_component_options_reach_the_components(tmp_path):
    config = _small(
        **{
            "model.prior": Component("bernoulli", {"learned": True}),
            "model.guide": Component("concrete", {"temperature": 0.3}),
        }
    )
    train_run(config, str(tmp_path / "run"), progress=False)
    vae = load_run(str(tmp_path / "run")).vae
    assert vae.guide_family.temperature == 0.3
    assert any(name.startswith("prior.") for name, _ in vae.named_parameters())  # the learned prior's logits


def test_two_training_seeds_are_evaluated_on_the_very_same_examples():
    one, two = _small(**{"train.seed": 1}), _small(**{"train.seed": 2})
    for split in ("val", "test"):
        a = eval_split(prepare_data(one), split)
        b = eval_split(prepare_data(two), split)
        assert torch.equal(a, b)
    other_data = _small(**{"data.seed": 1})
    assert not torch.equal(eval_split(prepare_data(other_data), "test"), a)


def test_config_json_rebuilds_the_model_exactly(tmp_path):
    """The saved tree alone rebuilds a model whose log p(x) equals the trained one's on the same draws."""
    config = _small(**{"train.estimator": Component("iwae", {"num_particles": 3})})
    trained = train_run(config, str(tmp_path / "run"), progress=False).vae
    with open(tmp_path / "run" / "config.json") as f:
        assert RunConfig.from_dict(json.load(f)) == config
    run = load_run(str(tmp_path / "run"), device="cpu")  # where it was trained
    rebuilt, x = run.vae, eval_split(run.splits, "test")
    estimates = []
    for vae in (trained, rebuilt):
        pyro.set_rng_seed(7)
        estimates.append(log_marginal_likelihood(vae.model, vae.guide, x, num_samples=50).log_px)
    assert torch.equal(estimates[0], estimates[1])


def _final_state(run_dir):
    state = torch.load(f"{run_dir}/checkpoint.pt", weights_only=True)
    strip = [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in read_metrics(run_dir)]
    return strip, state["module"]


SEPARATE_PROCESS = """
import sys
from pyro_vae.config import RunConfig
import json
config = RunConfig.from_dict(json.loads(sys.argv[1]))
from pyro_vae.runs import train_run
train_run(config, sys.argv[2], progress=False)
"""


def test_models_trained_in_one_process_equal_their_separate_process_runs(tmp_path, monkeypatch):
    """Two different VAEs and the same configuration twice, one after another in this process (no param store
    clearing between them), each end exactly where a fresh process running it alone ends."""
    first = _small()
    second = _small(**{"model.latent_dim": 2, "train.estimator": Component("iwae", {"num_particles": 2})})

    def refuse():
        raise AssertionError("a run must not depend on clearing Pyro's global param store")

    monkeypatch.setattr(pyro, "clear_param_store", refuse)
    for name, config in (("a", first), ("b", second), ("a-again", first)):
        train_run(config, str(tmp_path / name), progress=False)
    monkeypatch.undo()
    for name, config in (("a", first), ("b", second)):
        subprocess.run(
            [sys.executable, "-c", SEPARATE_PROCESS, json.dumps(config.to_dict()), str(tmp_path / f"{name}-alone")],
            check=True,
        )
    for in_process, alone in (("a", "a-alone"), ("a-again", "a-alone"), ("b", "b-alone")):
        metrics, module = _final_state(tmp_path / in_process)
        metrics_alone, module_alone = _final_state(tmp_path / alone)
        assert metrics == metrics_alone, in_process
        assert module.keys() == module_alone.keys()
        for key in module:
            assert torch.equal(module[key], module_alone[key]), (in_process, key)


def test_resume_with_another_configuration_is_refused(tmp_path):
    train_run(_small(), str(tmp_path / "run"), progress=False)
    with pytest.raises(ValueError, match="differs from .* in more than train.epochs"):
        train_run(_small(**{"train.epochs": 3, "model.latent_dim": 4}), str(tmp_path / "run"), resume=True)
    train_run(_small(**{"train.epochs": 3}), str(tmp_path / "run"), resume=True, progress=False)
    assert [m["epoch"] for m in read_metrics(str(tmp_path / "run"))] == [1, 2, 3]


def test_a_run_trains_on_the_device_and_its_checkpoint_loads_on_the_cpu(tmp_path, device):
    from pyro_vae.runs import evaluate_run

    run = str(tmp_path / "run")
    vae = train_run(_small(**{"device": device}), run, progress=False).vae
    assert {p.device.type for p in vae.parameters()} == {torch.device(device).type}
    state = torch.load(f"{run}/checkpoint.pt", weights_only=True, map_location="cpu")
    assert all(t.device.type == "cpu" for t in state["module"].values())
    report = evaluate_run(
        run, device="cpu", method_options={"num_samples": 20}, posterior_examples=(0,), progress=False
    )
    assert report["data_seed"] == 0 and report["train_seed"] == 0 and report["elbo"] < report["log_px"] < 0


@pytest.mark.parametrize(
    "likelihood, representation",
    [("bernoulli", "binarized"), ("discretized-logistic", "8-bit"), ("gaussian", "continuous")],
)
def test_every_evaluation_records_its_data_representation_and_bits_per_dim_for_masses(
    tmp_path, likelihood, representation
):
    from pyro_vae.runs import evaluate_run

    config = _small(**{"model.likelihood": likelihood, "train.epochs": 1})
    train_run(config, str(tmp_path / "run"), progress=False)
    report = evaluate_run(
        str(tmp_path / "run"), method_options={"num_samples": 20}, posterior_examples=(), progress=False
    )
    assert report["data_representation"] == representation and report["units"] == "nats per example"
    if representation == "continuous":
        assert "bits_per_dim" not in report  # a density on [0, 1] is not a mass: no bits per dimension
    else:
        assert report["bits_per_dim"] == pytest.approx(-report["log_px"] / (64 * math.log(2)), rel=1e-12)
    if representation == "8-bit":
        splits = load_run(str(tmp_path / "run")).splits
        assert splits.test.max() == 255 and torch.equal(splits.test, splits.test.round())


def test_rate_plus_distortion_is_minus_the_elbo(tmp_path):
    from pyro_vae.runs import evaluate_run

    train_run(_small(), str(tmp_path / "run"), progress=False)
    report = evaluate_run(str(tmp_path / "run"), method_options={"num_samples": 2000}, progress=False,
                          posterior_examples=())  # fmt: skip
    # ELBO = E_q[log p(x | z)] - KL: the three are estimated from separate draws, so they agree to Monte Carlo error
    assert report["kl"] + report["distortion"] == pytest.approx(-report["elbo"], abs=0.3)
    assert 0 < report["reconstruction_mse"] < 1


def test_a_point_mass_guide_is_refused_as_an_importance_sampling_proposal_before_training(tmp_path):
    from pyro_vae.config import ConfigError

    with pytest.raises(ConfigError, match="point mass.*eval.method=is-prior"):
        train_run(_small(**{"model.guide": "delta"}), str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()
    train_run(_small(**{"model.guide": "delta", "eval.method": "is-prior"}), str(tmp_path / "ok"), progress=False)


def test_evaluate_scores_the_first_num_examples(tmp_path):
    from pyro_vae.runs import evaluate_run

    train_run(_small(), str(tmp_path / "run"), progress=False)
    options = {"method_options": {"num_samples": 50}, "progress": False, "posterior_examples": ()}
    whole = evaluate_run(str(tmp_path / "run"), **options)
    part = evaluate_run(str(tmp_path / "run"), num_examples=10, **options)
    assert (whole["num_examples"], part["num_examples"]) == (40, 10)
    with pytest.raises(ValueError, match="has 40 examples"):
        evaluate_run(str(tmp_path / "run"), num_examples=41, **options)
