"""Data-parallel training in two CPU processes (gloo) against one process.

The model here has no latent variable, so its loss is deterministic: two processes, each stepping on half of every
global batch with DistributedDataParallel averaging the gradients, must end with exactly the parameters and the
objectives of one process stepping on the whole batch. That checks the sharding and the minibatch scale
``N / b_r`` together (a wrong scale would move the parameters by a different amount).
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pyro.infer import Trace_ELBO
from pyro.nn import PyroModule, PyroParam

from inference import Trainer
from inference.training import distributed
from inference.training.distributed import launch_local, shard, shard_bounds

NUM_DATA = 14  # with batch 6: batches of 6, 6 and 2 rows, so the last one is split 1 + 1


class GaussianMean(PyroModule):
    """``x_n ~ N(mu, sigma)`` with learned ``mu`` and ``sigma``: a loss with no randomness."""

    def __init__(self):
        super().__init__()
        self.mu = PyroParam(torch.zeros(3))
        self.sigma = PyroParam(torch.ones(3), constraint=dist.constraints.positive)
        self.max_plate_nesting = 1

    def model(self, x):
        with pyro.plate("data", NUM_DATA, subsample=torch.arange(len(x))):
            pyro.sample("x", dist.Normal(self.mu, self.sigma).to_event(1), obs=x)

    def guide(self, x):
        pass


def fit_gaussian_mean(out_path=None):
    """Two epochs of SGD on fixed data, in the process group the environment describes; rank 0 saves the result."""
    distributed.init_from_environment(torch.device("cpu"))
    with pyro.settings.context(module_local_params=True):
        pyro.set_rng_seed(0)
        x = torch.randn(NUM_DATA, 3, generator=torch.Generator().manual_seed(1)) * 2 + 1
        module = GaussianMean()
        trainer = Trainer(
            module.model, module.guide, Trace_ELBO(), module=module, optimizer="sgd", optimizer_options={"lr": 0.01}
        )
        batches = [(x[i : i + 6],) for i in range(0, NUM_DATA, 6)]
        metrics = trainer.fit(batches, epochs=2, val_batches=[(x,)], progress=False, num_data=NUM_DATA)
        result = {
            "metrics": [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in metrics],
            "params": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "world_size": distributed.world_size(),
        }
    if out_path is not None and distributed.is_main_process():
        torch.save(result, out_path)
    return result


def test_two_processes_take_the_steps_of_one(tmp_path):
    one = fit_gaussian_mean()
    launch_local(fit_gaussian_mean, 2, str(tmp_path / "two.pt"))
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert two["world_size"] == 2 and one["world_size"] == 1
    for name, value in one["params"].items():
        torch.testing.assert_close(two["params"][name], value, rtol=1e-6, atol=1e-6)
    for a, b in zip(one["metrics"], two["metrics"]):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-6), key
    assert one["metrics"][-1]["train_objective"] > one["metrics"][0]["train_objective"]  # it did learn


def failing_rank_one():
    distributed.init_from_environment(torch.device("cpu"))
    with pyro.settings.context(module_local_params=True):
        module = GaussianMean()
        trainer = Trainer(module.model, module.guide, Trace_ELBO(), module=module)
        x = torch.randn(NUM_DATA, 3)
        if distributed.rank() == 1:
            x = x * 1e30  # (x - mu)^2 overflows: an infinite loss on rank 1 alone
        trainer.fit([(x[:6],)], epochs=1, progress=False, num_data=NUM_DATA)


def test_a_non_finite_loss_on_one_rank_stops_every_rank():
    """Every rank sees the summed loss, so all raise together instead of one waiting forever for the others."""
    import torch.multiprocessing as mp

    with pytest.raises(mp.ProcessRaisedException, match="non-finite loss"):
        launch_local(failing_rank_one, 2)


@given(st.integers(1, 500), st.integers(1, 9))
def test_shards_partition_a_batch_into_near_equal_contiguous_slices(batch_size, world_size):
    bounds = [shard_bounds(batch_size, r, world_size) for r in range(world_size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == batch_size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shard_slices_every_data_argument_alike():
    x, y = torch.arange(10), torch.arange(10) * 2
    assert [t.tolist() for t in shard((x, y, "kept"), 1, 3)[:2]] == [[4, 5, 6], [8, 10, 12]]
    assert shard((x, y, "kept"), 1, 3)[2] == "kept"
    with pytest.raises(ValueError, match="share their first"):
        shard((x, torch.arange(3)), 0, 2)
