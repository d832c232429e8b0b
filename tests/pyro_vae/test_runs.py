import json
import math

from pyro_vae.runs import RunConfig, json_safe


def test_json_safe_turns_non_finite_numbers_into_null():
    report = {"khat_max": math.inf, "stderr": math.nan, "values": [1.5, -math.inf], "n": 3}
    assert json.loads(json.dumps(json_safe(report), allow_nan=False)) == {
        "khat_max": None,
        "stderr": None,
        "values": [1.5, None],
        "n": 3,
    }


def test_config_round_trips_and_rejects_unknown_keys():
    config = RunConfig(hidden_sizes=(10, 20), estimator="iwae", estimator_options={"num_outer": 2})
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == RunConfig(
        hidden_sizes=[10, 20], estimator="iwae", estimator_options={"num_outer": 2}
    )
    try:
        RunConfig.from_dict({"latent_dimm": 3})
    except ValueError as e:
        assert "latent_dimm" in str(e)
    else:
        raise AssertionError("an unknown key must be an error")


def test_component_options_reach_the_components(tmp_path):
    from pyro_vae.runs import load_run, train_run

    config = RunConfig(
        prior="bernoulli",
        prior_options={"learned": True},
        guide="concrete",
        guide_options={"temperature": 0.3},
        latent_dim=3,
        hidden_sizes=(8,),
        epochs=1,
        num_train=200,
    )
    train_run(config, str(tmp_path / "run"), progress=False)
    _, _, vae = load_run(str(tmp_path / "run"))
    assert vae.guide_family.temperature == 0.3
    assert any(name.startswith("prior.") for name, _ in vae.named_parameters())  # the learned prior's logits
