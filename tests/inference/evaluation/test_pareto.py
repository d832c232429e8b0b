"""The batched Pareto k-hat against arviz's PSIS, data point by data point."""

import math
import warnings

import arviz
import numpy as np
import pytest
import torch

from inference.evaluation import pareto
from inference.evaluation.pareto import pareto_khat, tail_length


def arviz_khat(log_weights: torch.Tensor) -> np.ndarray:
    """arviz's k-hat of each column, one ``psislw`` call per data point (the reference)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([float(arviz.psislw(column.double().numpy())[1]) for column in log_weights.T])


def heavy_tailed_log_weights(num_samples, batch_size, seed):
    """Log weights of a normal proposal for targets from nearly matched to far too wide: k-hat from below 0 to
    above 1 across the columns."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num_samples, batch_size, generator=generator, dtype=torch.float64)
    target_scale = torch.linspace(0.8, 4.0, batch_size, dtype=torch.float64)
    return -0.5 * (z / target_scale) ** 2 - target_scale.log() + 0.5 * z**2


@pytest.mark.parametrize("num_samples", [5, 24, 25, 100, 1000, 5000])
def test_khat_equals_arviz_for_every_data_point(num_samples):
    log_weights = heavy_tailed_log_weights(num_samples, 12, seed=num_samples)
    ours = pareto_khat(log_weights).numpy()
    reference = arviz_khat(log_weights)
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)
    if num_samples >= 1000:  # the columns span the verdicts, so the comparison covers both sides of 0.7
        assert ours.min() < 0.5 and ours.max() > 0.7


def test_float32_weights_give_arvizs_khat_of_the_same_numbers_in_float32():
    log_weights = heavy_tailed_log_weights(2000, 8, seed=3).float()
    ours = pareto_khat(log_weights)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), arviz_khat(log_weights).astype(np.float32), rtol=1e-6)


def test_tails_shortened_by_ties_or_tiny_weights_are_arvizs_too():
    log_weights = heavy_tailed_log_weights(500, 4, seed=1)
    log_weights[:, 0] = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(0)).double()  # ties
    log_weights[:490, 1] = -1000.0  # under the cutoff's floor (log of the smallest double): a tail of 10, not 100
    log_weights[:498, 2] = -1000.0  # a tail of 2: too short to fit
    log_weights[:, 3] = (log_weights[:, 3] * 8).round() / 8  # coarse values: the cutoff ties with some of the tail
    ours = pareto_khat(log_weights)
    np.testing.assert_allclose(ours.numpy(), arviz_khat(log_weights), rtol=1e-9, atol=1e-12)
    assert math.isfinite(ours[1]) and ours[2] == math.inf and math.isfinite(ours[3])
    top = log_weights[:, 3].sort().values
    assert top[-tail_length(500) - 1] == top[-tail_length(500)]  # the tie that shortens column 3's tail


def test_data_points_are_fitted_in_blocks_that_do_not_change_the_answer(monkeypatch):
    log_weights = heavy_tailed_log_weights(300, 10, seed=2)
    whole = pareto_khat(log_weights)
    monkeypatch.setattr(pareto, "ROWS_PER_FIT", 3)
    assert torch.equal(pareto_khat(log_weights), whole)


def test_equal_weights_and_too_few_samples_keep_their_conventions():
    assert torch.equal(pareto_khat(torch.zeros(100, 3)), torch.full((3,), -math.inf))
    assert torch.equal(pareto_khat(torch.randn(4, 3)), torch.full((3,), math.inf))
    assert tail_length(5000) == 213 and tail_length(100) == 20


def test_khat_stays_on_the_weights_device(device):
    log_weights = heavy_tailed_log_weights(1000, 6, seed=4)
    ours = pareto_khat(log_weights.to(device))
    assert ours.device.type == torch.device(device).type
    np.testing.assert_allclose(ours.cpu().numpy(), arviz_khat(log_weights), rtol=1e-9, atol=1e-12)
