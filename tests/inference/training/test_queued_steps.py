"""An epoch's steps with a fused optimizer read nothing back from the device, and change nothing more than the
step-by-step loop would have (:meth:`inference.Trainer.train_epoch`)."""

import contextlib
import math
import warnings

import pyro
import pytest
import torch

from inference import Trainer, estimator
from inference.host_reads import HostReads
from inference.objectives.estimators import ESTIMATORS
from pyro_vae import build_vae
from pyro_vae.components import likelihoods
from tests.inference.training.faulty_losses import FlakyGradient, FlakyLoss

NUM_DATA = 400


def _data(seed=0):
    return torch.bernoulli(torch.full((NUM_DATA, 20), 0.3), generator=torch.Generator().manual_seed(seed))


def _trainer(loss, **options):
    pyro.set_rng_seed(0)
    vae = build_vae(20, latent_dim=3, hidden_sizes=(16,), num_data=NUM_DATA)
    return vae, Trainer(vae.model, vae.guide, loss, module=vae, validate_every_step=False, **options)


def _estimator(name):
    return estimator(name) if name in ("mmd", "js") else estimator(name, num_particles=3)


@pytest.mark.parametrize("name", sorted(ESTIMATORS.names()))
def test_an_epoch_reads_back_only_at_its_checks(name, device, monkeypatch):
    """Every estimator, on the machine's device, with a Bernoulli likelihood in the form a GPU runs (on a CPU
    the softplus passes test the logits against a cap): 12 steps at ``check_every=5`` read back 2 flags at the
    checks, 1 at the end, and the epoch's objective. On a GPU, CUDA's own count of synchronizing calls says the
    same. Pyro's own ``Trace_ELBO`` reads every site's log density back, which the count sees."""
    monkeypatch.setattr(likelihoods, "sum_softplus", likelihoods.fused_sum_softplus)
    x = _data().to(device)
    batches = [(b,) for b in x[:240].split(20)]
    for loss, reads_expected in ((_estimator(name), lambda n: n == 4), (pyro.infer.Trace_ELBO(), lambda n: n > 36)):
        vae, trainer = _trainer(loss, check_every=5)
        vae.to(device)
        trainer.setup(*batches[0])
        with HostReads() as reads, _cuda_synchronizations(device) as synchronizations:
            trainer.train_epoch(batches, num_data=NUM_DATA)
        assert reads_expected(sum(reads.calls.values())), reads.report()
        if device == "cuda":
            assert reads_expected(len(synchronizations)), [str(w.message) for w in synchronizations]


@contextlib.contextmanager
def _cuda_synchronizations(device):
    """The warnings of CUDA's synchronization debug mode inside the block (none off a GPU)."""
    if device != "cuda":
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")
    caught[:] = [w for w in caught if "synchroniz" in str(w.message)]


@pytest.mark.parametrize("name", ["elbo", "iwae"])
def test_queued_steps_train_exactly_as_checked_steps(name):
    """The same draws and batches through :meth:`Trainer.step` (a read every step) and :meth:`Trainer.train_epoch`
    (reads every 4 steps): the same parameters bit for bit, and the same objective."""
    x = _data()
    batches = [(b,) for b in x.split(40)]
    checked_vae, checked = _trainer(_estimator(name))
    checked.setup(*batches[0])
    losses = [checked.step(*batch) for batch in batches]
    checked_objective = -sum(loss * 40 / NUM_DATA for loss in losses) / NUM_DATA
    queued_vae, queued = _trainer(_estimator(name), check_every=4)
    queued.setup(*batches[0])
    objective = queued.train_epoch(batches, num_data=NUM_DATA)
    for (key, a), b in zip(checked_vae.state_dict().items(), queued_vae.state_dict().values()):
        assert torch.equal(a, b), key
    assert objective == pytest.approx(checked_objective, rel=1e-6)
    assert not hasattr(queued.optimizer, "found_inf")  # the epoch's skip flag is gone with it


def test_a_non_finite_step_between_checks_changes_nothing_and_is_named(recwarn):
    """Step 3 of 10 (call 4: call 1 finds the parameters) gives NaN, and the first check is after step 8. The
    error comes at that check, the parameters are those after step 2 (the skipped steps moved nothing, not even
    Adam's moments), and the message names the loss as :meth:`Trainer.step` does."""
    x = _data()
    batches = [(b,) for b in x.split(40)]
    vae, trainer = _trainer(FlakyLoss(4), check_every=8)
    trainer.setup(*batches[0])
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at epoch 1"):
        trainer.train_epoch(batches, num_data=NUM_DATA)
    reference_vae, reference = _trainer(FlakyLoss())
    reference.setup(*batches[0])
    for batch in batches[:2]:
        reference.step(*batch)
    for (key, a), b in zip(reference_vae.state_dict().items(), vae.state_dict().values()):
        assert torch.equal(a, b), key
    steps = [state["step"].item() for state in trainer.optimizer.state.values()]
    assert steps == [2.0] * len(steps)
    before = [p.detach().clone() for p in vae.parameters()]
    trainer.train_epoch(batches[:1], num_data=NUM_DATA)  # the next epoch starts without the skip flag
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))


def test_an_optimizer_without_a_fused_kernel_checks_every_step(recwarn):
    """RMSprop cannot skip a step on the device, so each step is checked before it moves the parameters."""
    x = _data()
    batches = [(b,) for b in x.split(40)]
    vae, trainer = _trainer(FlakyLoss(4), optimizer="rmsprop", check_every=8)
    trainer.setup(*batches[0])
    with HostReads() as reads, pytest.raises(FloatingPointError, match="non-finite loss"):
        trainer.train_epoch(batches, num_data=NUM_DATA)
    assert sum(reads.calls.values()) >= 3  # a read at each of the three steps


def test_check_every_must_be_a_positive_number_of_steps():
    for value in (0, -1, 2.5):
        with pytest.raises(ValueError, match="check_every must be a positive number of steps"):
            Trainer(None, None, pyro.infer.Trace_ELBO(), check_every=value)


@pytest.mark.parametrize("nan_on_calls, message", [
    ((4,), r"non-finite gradient at epoch 1 \(a fresh draw of it from the same parameters is finite: the largest"),
    ((4, 8), r"non-finite gradient at epoch 1 in encoder\..*and more \(the loss was"),
])  # fmt: skip
def test_a_non_finite_gradient_between_checks_is_named_from_its_step_taken_again(nan_on_calls, message):
    """The steps after the bad one overwrite its gradient, so the check takes it again from the same parameters and
    batch: a NaN that comes back names the parameters; one that does not is reported as not reproduced."""

    batches = [(b,) for b in _data().split(40)]
    # call 1 finds the parameters, steps 1-6 are calls 2-7, and the check after step 6 takes step 3 again: call 8
    _, trainer = _trainer(FlakyGradient(*nan_on_calls), check_every=6)
    trainer.setup(*batches[0])
    with pytest.raises(FloatingPointError, match=message):
        trainer.train_epoch(batches, num_data=NUM_DATA)


def test_a_gradient_whose_norm_overflows_is_named_as_such():
    """Every gradient entry finite (1e20) and the loss too (1e20), but the float32 norm is not: the error says so
    and names the largest entry, where it used to list no parameter at all."""

    def model(x):
        w = pyro.param("w", torch.ones(2))
        pyro.sample("x", pyro.distributions.Normal(1e10 * w, 1.0).to_event(1), obs=x)

    def guide(x):
        pass

    trainer = Trainer(model, guide, pyro.infer.Trace_ELBO(), check_every=4)
    with pytest.raises(FloatingPointError, match=r"its norm overflows: the largest entry is 1e\+20, in w\)"):
        trainer.train_epoch([(torch.zeros(2),)] * 2, num_data=1)


def test_queued_steps_train_in_double_precision(float64):
    """With float64 as the default dtype (as for exact comparisons) the skip flag stays float32, which the fused
    kernel requires, and a float64 VAE trains: its parameters move, and stay float64."""
    x = _data().double()
    vae, trainer = _trainer(_estimator("iwae"))
    before = [p.detach().clone() for p in vae.parameters()]
    objective = trainer.train_epoch([(b,) for b in x.split(40)], num_data=NUM_DATA)
    assert math.isfinite(objective) and all(p.dtype == torch.float64 for p in vae.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))
