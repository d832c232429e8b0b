"""Uniform dequantization: a density on ``y = (k + u) / 256`` reported as a bound on the 8-bit mass of ``k``."""

import json
import math
import os

import pytest
import torch

from pyro_vae.cli.main import main
from pyro_vae.config import RunConfig, apply_overrides
from pyro_vae.data import batches, dequantize, fixed_dequantization
from pyro_vae.runs import dequantization_correction, prepare_data


def test_dequantized_values_keep_their_level_and_lie_inside_zero_one():
    k = torch.arange(256.0).repeat(50)
    y = dequantize(k, torch.Generator().manual_seed(0))
    assert torch.equal(torch.floor(y * 256), k)
    assert (y > 0).all() and (y < 1).all()
    # u is uniform on (0, 1): mean 1/2 and variance 1/12 within 5 standard errors
    u = y * 256 - k
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / len(u))
    assert torch.equal(fixed_dequantization(k, 3), fixed_dequantization(k, 3))


def test_every_epoch_draws_new_noise_on_the_same_levels():
    k = torch.randint(0, 256, (40, 5)).float()
    stream = batches(k, 40, shuffle=False, generator=torch.Generator().manual_seed(0), dequantization=True)
    (first,), (second,) = next(iter(stream)), next(iter(stream))
    assert torch.equal(torch.floor(first * 256), k) and torch.equal(torch.floor(second * 256), k)
    assert not torch.equal(first, second)


def test_the_correction_bounds_the_mass_of_each_level_by_quadrature(float64):
    """For a Beta(2, 3) density: ``E_u[log p((k + u) / 256)] - log 256 <= log P(k)`` for every level k, with
    ``P(k)`` the density's integral over the level's bin (the bound is Jensen's inequality)."""
    density = torch.distributions.Beta(torch.tensor(2.0), torch.tensor(3.0))
    u = (torch.arange(2000) + 0.5) / 2000  # midpoint rule over the bin
    k = torch.arange(256.0)[:, None]
    log_p = density.log_prob(((k + u) / 256).clamp(1e-12, 1 - 1e-12))
    bound = log_p.mean(1) + dequantization_correction(prepare_data(_config("beta")), 1)
    mass = (log_p.exp().mean(1) / 256).log()
    assert (bound <= mass + 1e-9).all()
    # tight where log p changes little across a bin; loose near 0 and 1, where the density vanishes
    assert (mass - bound)[16:240].max() < 1e-3 and (mass - bound)[0] > 0.1


def _config(likelihood, **data):
    pairs = [("model.likelihood", likelihood), ("data.dequantize", True)] + [(f"data.{k}", v) for k, v in data.items()]
    return apply_overrides(RunConfig(), pairs)


@pytest.mark.parametrize(
    "likelihood, dataset, message",
    [("bernoulli", "digits", "reads binarized data"), ("gaussian", "linear-gaussian", "is real-valued")],
)
def test_dequantization_is_refused_where_it_means_nothing(likelihood, dataset, message):
    with pytest.raises(ValueError, match=message):
        prepare_data(_config(likelihood, name=dataset))


def test_a_dequantized_run_reports_the_bound_on_the_8_bit_mass(tmp_path):
    out = str(tmp_path / "run")
    flags = ["--dataset", "digits", "--likelihood", "beta", "--set", "data.dequantize=true"]
    assert main(["train", *flags, "--epochs", "2", "--latent-dim", "4", "--out", out, "--no-progress"]) == 0
    assert main(["evaluate", out, "--num-samples", "50", "--no-progress", "--posterior-examples"]) == 0
    with open(os.path.join(out, "eval", "is-test.json")) as f:
        report = json.load(f)
    assert report["data_representation"] == "dequantized"
    assert report["dequantization_correction"] == pytest.approx(-64 * math.log(256))
    assert report["log_px"] == pytest.approx(report["log_px_density"] - 64 * math.log(256), abs=1e-3)
    assert report["bits_per_dim"] == pytest.approx(-report["log_px"] / (64 * math.log(2)))
    assert 0 < report["bits_per_dim"] < 8  # a bound on a mass over 256 levels: at most 8 bits for a useful model
