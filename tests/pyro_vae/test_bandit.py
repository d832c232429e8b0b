"""The decoder bandit: policies steer training away from a crippled decoder; arms share one encoder."""

import pytest
import torch

from pyro_vae.bandit import POLICIES, UCB1, decoder_arms, run_bandit
from pyro_vae.config import Component, RunConfig, apply_overrides
from pyro_vae.runs import prepare_data

GOOD = Component("mlp", {"hidden_sizes": [64]})
CRIPPLED = Component("mlp", {"hidden_sizes": [1], "activation": "sigmoid"})  # one sigmoid unit: a poor decoder


def config():
    return apply_overrides(
        RunConfig(), [("model.latent_dim", 4), ("train.batch_size", 50), ("model.encoder.options.hidden_sizes", [64])]
    )


@pytest.mark.parametrize("policy", ["ucb1", "thompson", "epsilon-greedy"])
def test_every_policy_pulls_the_crippled_decoder_least(policy):
    result = run_bandit(config(), [CRIPPLED, GOOD], policy=policy, steps=120, progress=False)
    assert sum(result["pulls"]) == 120 and len(result["choices"]) == len(result["rewards"]) == 120
    assert result["pulls"][0] < result["pulls"][1], result["pulls"]
    assert result["mean_reward"][0] < result["mean_reward"][1]
    assert result["chosen"] == "mlp{'hidden_sizes': [64]}"


def test_uniform_policy_trains_every_decoder_for_the_same_budget():
    result = run_bandit(config(), [CRIPPLED, GOOD, "deconv"], policy="uniform", steps=30, progress=False)
    assert result["pulls"] == [10, 10, 10]
    assert result["val_elbo"][0] < result["val_elbo"][1]  # the crippled decoder is worse after the same training


def test_arms_share_the_encoder_guide_and_prior_but_not_the_decoder():
    cfg = config()
    arms = decoder_arms(cfg, [GOOD, "deconv"], prepare_data(cfg))
    assert arms[0].encoder is arms[1].encoder and arms[0].guide_family is arms[1].guide_family
    assert arms[0].prior is arms[1].prior and arms[0].decoder is not arms[1].decoder


def test_ucb1_tries_every_arm_once_then_prefers_the_better_mean():
    policy = UCB1(scale=0.01)
    counts, sums = torch.tensor([1.0, 0.0]), torch.tensor([-0.5, 0.0])
    assert policy.select(counts, sums, [-0.5], None) == 1
    counts, sums = torch.tensor([10.0, 10.0]), torch.tensor([-5.0, -3.0])
    assert policy.select(counts, sums, [-0.5, -0.3], None) == 1
    assert sorted(POLICIES.names()) == ["epsilon-greedy", "thompson", "ucb1", "uniform"]


def test_a_bandit_needs_two_decoders():
    with pytest.raises(ValueError, match="at least two decoders"):
        run_bandit(config(), [GOOD], steps=1, progress=False)
