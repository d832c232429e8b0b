import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from inference import (
    Callback,
    Checkpoint,
    EarlyStopping,
    KLWeightSchedule,
    LearningRateSchedule,
    Trainer,
    estimator,
    evaluate_objectives,
    linear_warmup,
    load_checkpoint,
    train,
)
from inference.objectives.score import ScoreFunctionELBO
from pyro_vae import build_vae
from pyro_vae.data import batches, fixed_binarization, load_dataset
from tests.inference.training.faulty_losses import FlakyLoss


@pytest.fixture(scope="module")
def digits():
    splits = load_dataset("digits", seed=0)
    return splits.train[:400], fixed_binarization(splits.val, seed=1)


def _fit(x, x_val, epochs, path, resume=False, seed=0, loss=None, callbacks=()):
    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=len(x))
    data = batches(x, 50, shuffle=True, generator=generator, dynamic_binarization=True)
    trainer = Trainer(
        vae.model,
        vae.guide,
        loss if loss is not None else Trace_ELBO(),
        module=vae,
        generator=generator,
        callbacks=[*callbacks, Checkpoint(path, resume=resume)],
    )
    metrics = trainer.fit(data, epochs=epochs, val_batches=[(x_val,)], progress=False)
    return vae, metrics, trainer


def _strip(metrics):
    return [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in metrics]


def test_resume_is_exact(digits, tmp_path):
    x, x_val = digits
    straight, straight_metrics, _ = _fit(x, x_val, 4, tmp_path / "a.pt")
    _fit(x, x_val, 2, tmp_path / "b.pt", seed=0)
    # A different seed now must not matter: resuming restores every generator from the checkpoint.
    resumed, resumed_metrics, _ = _fit(x, x_val, 4, tmp_path / "b.pt", resume=True, seed=123)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert _strip(straight_metrics) == _strip(resumed_metrics)


def test_resume_is_exact_for_the_score_estimator_with_a_learned_baseline(digits, tmp_path):
    """The baseline's parameters and the running state live in the estimator and go into the checkpoint."""
    x, x_val = digits

    def score():
        return ScoreFunctionELBO(num_particles=2, baseline="learned", max_plate_nesting=1)

    straight, straight_metrics, straight_trainer = _fit(x, x_val, 4, tmp_path / "a.pt", loss=score())
    _fit(x, x_val, 2, tmp_path / "b.pt", loss=score())
    resumed, resumed_metrics, resumed_trainer = _fit(x, x_val, 4, tmp_path / "b.pt", resume=True, loss=score())
    assert _strip(straight_metrics) == _strip(resumed_metrics)
    a, b = straight_trainer.loss.baseline_net.value, resumed_trainer.loss.baseline_net.value
    assert a.item() != 0.0 and torch.equal(a, b)
    assert "baseline_net" in load_checkpoint(tmp_path / "b.pt")["estimator"]


class PlainParamModel:
    """The README's model/guide: bare ``pyro.param`` statements, which live in Pyro's global param store."""

    def __init__(self, num_data):
        self.num_data = num_data

    def model(self, x):
        w = pyro.param("w", torch.ones(3, 2))
        with pyro.plate("data", size=self.num_data, subsample=torch.arange(len(x))):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, 0.5).to_event(1), obs=x)

    def guide(self, x):
        a = pyro.param("a", torch.zeros(3, 2))
        s = pyro.param("s", torch.ones(2), constraint=dist.constraints.positive)
        with pyro.plate("data", size=self.num_data, subsample=torch.arange(len(x))):
            pyro.sample("z", dist.Normal(x @ a, s).to_event(1))


def _fit_plain(x, epochs, path, resume=False):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    generator = torch.Generator().manual_seed(0)
    plain = PlainParamModel(len(x))
    trainer = Trainer(
        plain.model,
        plain.guide,
        estimator("iwae", num_particles=3),
        optimizer_options={"lr": 0.05},
        generator=generator,
        callbacks=[Checkpoint(path, resume=resume)],
    )
    data = batches(x, 25, shuffle=True, generator=generator)
    metrics = trainer.fit(data, epochs=epochs, progress=False)
    return {name: pyro.param(name).detach().clone() for name in ("w", "a", "s")}, metrics


def test_resume_is_exact_for_plain_pyro_params(tmp_path):
    x = torch.randn(100, 3)
    straight, straight_metrics = _fit_plain(x, 4, tmp_path / "a.pt")
    _fit_plain(x, 2, tmp_path / "b.pt")
    resumed, resumed_metrics = _fit_plain(x, 4, tmp_path / "b.pt", resume=True)
    assert _strip(straight_metrics) == _strip(resumed_metrics)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    assert not torch.equal(straight["a"], torch.zeros(3, 2))  # it trained
    assert set(load_checkpoint(tmp_path / "b.pt")["params"]) == {"w", "a", "s"}


def test_two_models_in_one_process_do_not_share_parameters(digits, tmp_path):
    """Without clearing Pyro's param store, a second VAE of the same shape trains exactly as the first did."""
    x, x_val = digits
    first, first_metrics, _ = _fit(x, x_val, 2, tmp_path / "a.pt")
    second, second_metrics, _ = _fit(x, x_val, 2, tmp_path / "b.pt")
    assert _strip(first_metrics) == _strip(second_metrics)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
        assert a.data_ptr() != b.data_ptr()
    assert len(pyro.get_param_store()) == 0  # the VAE's parameters never went there


def test_checkpoint_is_code_free_and_complete(digits, tmp_path):
    x, x_val = digits
    path = tmp_path / "c.pt"
    vae, metrics, _ = _fit(x, x_val, 1, path)
    state = torch.load(path, weights_only=True)  # raises if anything but plain data were pickled
    assert state["epoch"] == 1 and state["metrics"] == metrics
    assert set(state["module"]) == set(vae.state_dict())
    assert len(state["optimizer"]["state"]) == len(list(vae.parameters()))
    assert load_checkpoint(path)["rng"]["torch"].dtype == torch.uint8


def test_training_raises_validation_elbo(digits):
    x, x_val = digits
    pyro.set_rng_seed(0)
    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=len(x))
    before = evaluate_objectives(vae.model, vae.guide, [(x_val,)], num_samples=10)
    data = batches(x, 50, shuffle=True, generator=torch.Generator().manual_seed(0), dynamic_binarization=True)
    metrics = train(
        vae.model, vae.guide, Trace_ELBO(), data, epochs=15, module=vae, val_batches=[(x_val,)], progress=False
    )
    assert metrics[-1]["val_elbo"] > before["elbo"] + 10.0  # about 44 -> 29 nats on 64 binary pixels
    assert metrics[-1]["val_log_px"] >= metrics[-1]["val_elbo"]
    assert metrics[-1]["val_num_samples"] == 10
    assert [m["epoch"] for m in metrics] == list(range(1, 16))
    assert all(m["seconds"] >= m["train_seconds"] > 0 and m["val_seconds"] > 0 for m in metrics)


def test_train_objective_is_per_example(digits):
    """With the data plate scaled to N, loss / N is the per-example ELBO: compare with the validation estimate
    on the same (training) data before any step has changed the parameters much."""
    x, _ = digits
    x_bin = fixed_binarization(x, seed=3)
    pyro.set_rng_seed(0)
    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=len(x))
    reference = evaluate_objectives(vae.model, vae.guide, [(x_bin,)], num_samples=50)["elbo"]
    trainer = Trainer(vae.model, vae.guide, Trace_ELBO(), module=vae, optimizer_options={"lr": 1e-9})
    objective = trainer.train_epoch([(x_bin[i : i + 50],) for i in range(0, len(x_bin), 50)], num_data=len(x))
    assert objective == pytest.approx(reference, abs=0.3)


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(digits, tmp_path):
    x, x_val = digits
    path = tmp_path / "n.pt"
    _fit(x, x_val, 1, path)
    before = torch.load(path, weights_only=True)

    class BrokenLoss(Trace_ELBO):
        def differentiable_loss(self, model, guide, *args, **kwargs):
            return super().differentiable_loss(model, guide, *args, **kwargs) * math.nan

    with pytest.raises(FloatingPointError, match="non-finite loss"):
        _fit(x, x_val, 2, path, resume=True, loss=BrokenLoss())
    after = torch.load(path, weights_only=True)
    assert after["epoch"] == before["epoch"] == 1


def test_kl_warmup_sets_the_estimators_kl_weight_each_epoch(digits, tmp_path):
    x, x_val = digits
    _, metrics, trainer = _fit(
        x, x_val, 3, tmp_path / "k.pt", loss=estimator("elbo"), callbacks=[KLWeightSchedule(linear_warmup(2))]
    )
    assert [m["kl_weight"] for m in metrics] == [0.0, 0.5, 1.0]
    assert trainer.loss.kl_weight == 1.0


def test_kl_schedule_needs_a_kl_weight(digits, tmp_path):
    x, x_val = digits
    with pytest.raises(ValueError, match="needs an estimator with a kl_weight"):
        _fit(x, x_val, 1, tmp_path / "k.pt", callbacks=[KLWeightSchedule(linear_warmup(2))])


def test_learning_rate_schedule_steps_each_epoch_and_resumes(digits, tmp_path):
    def schedule():
        return LearningRateSchedule(lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5))

    x, x_val = digits
    _, straight, _ = _fit(x, x_val, 3, tmp_path / "a.pt", callbacks=[schedule()])
    assert [m["lr"] for m in straight] == [1e-3, 5e-4, 2.5e-4]
    _fit(x, x_val, 1, tmp_path / "b.pt", callbacks=[schedule()])
    _, resumed, _ = _fit(x, x_val, 3, tmp_path / "b.pt", resume=True, callbacks=[schedule()])
    assert _strip(resumed) == _strip(straight)


def test_early_stopping_stops_when_the_monitored_metric_stalls(digits, tmp_path):
    x, x_val = digits
    # An objective that cannot improve by 1000 nats: stop after `patience` epochs without improvement.
    stop = EarlyStopping(monitor="val_elbo", patience=2, min_delta=1000.0)
    _, metrics, trainer = _fit(x, x_val, 10, tmp_path / "e.pt", callbacks=[stop])
    assert len(metrics) == 3 and metrics[-1]["stopped_early"] and trainer.should_stop


def test_a_model_without_parameters_is_refused():
    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match="no parameters"):
        Trainer(model, lambda x: None, Trace_ELBO()).step(torch.zeros(3))


@pytest.mark.parametrize("lr", [math.inf, math.nan, 0.0, -1.0])
def test_a_bad_learning_rate_is_refused(lr):
    with pytest.raises(ValueError, match="learning rate must be a positive finite number"):
        Trainer(None, None, Trace_ELBO(), optimizer_options={"lr": lr})


def _one_site_model(obs_scale_init, transform=lambda s: s):
    def model(x):
        s = pyro.param("s", torch.tensor(obs_scale_init))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, transform(s)), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, 1.0))

    return model, guide


def test_a_non_finite_loss_names_the_site_and_term():
    model, guide = _one_site_model(1e-30)  # a Normal likelihood this narrow: log density -inf in float32
    trainer = Trainer(model, guide, Trace_ELBO(), optimizer_options={"lr": 0.1})
    before = {name: p.detach().clone() for name, p in [("loc", pyro.param("loc", torch.tensor(0.0)))]}
    with pytest.raises(FloatingPointError, match=r"model site 'x' \(observed\): its log-likelihood is"):
        trainer.step(torch.tensor([0.5, 1.0]))
    assert torch.equal(pyro.param("loc").detach(), before["loc"])  # refused before any step


def test_a_non_finite_gradient_is_caught_before_the_parameters_move():
    model, guide = _one_site_model(0.0, transform=lambda s: torch.sqrt(s) + 1.0)  # d sqrt(s)/ds = inf at 0
    trainer = Trainer(model, guide, Trace_ELBO(), optimizer_options={"lr": 0.1})
    with pytest.raises(FloatingPointError, match="non-finite gradient at epoch 1 in s"):
        trainer.step(torch.tensor([0.5, 1.0]))
    assert pyro.param("s").item() == 0.0


def test_rollback_returns_to_the_epochs_start_with_half_the_learning_rate(digits):
    x, x_val = digits
    pyro.set_rng_seed(0)
    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=len(x))
    data = batches(x, 50, shuffle=True, generator=torch.Generator().manual_seed(0), dynamic_binarization=True)
    # call 1 finds the parameters; calls 2-9 are epoch 1; call 12 is inside epoch 2
    trainer = Trainer(vae.model, vae.guide, FlakyLoss(12), module=vae, on_non_finite="rollback")
    metrics = trainer.fit(data, epochs=3, progress=False)
    assert "rolled_back" not in metrics[0]
    assert metrics[1]["rolled_back"] == 1 and metrics[1]["lr"] == 5e-4
    assert all(math.isfinite(m["train_objective"]) for m in metrics) and len(metrics) == 3
    with pytest.raises(FloatingPointError):
        Trainer(vae.model, vae.guide, FlakyLoss(3), module=vae).fit(data, epochs=1, progress=False)


def test_steps_without_validation_leave_pyros_checks_out(digits):
    x, _ = digits
    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=len(x))
    grey = x[:20]  # grey levels: outside the Bernoulli likelihood's support {0, 1}
    trainer = Trainer(vae.model, vae.guide, Trace_ELBO(), module=vae, validate_every_step=False)
    trainer.setup(torch.bernoulli(grey))
    assert math.isfinite(trainer.step(grey))  # no check after the trial: the caller vouched for its data
    checked = Trainer(vae.model, vae.guide, Trace_ELBO(), module=vae)
    checked.setup(torch.bernoulli(grey))
    with pytest.raises(ValueError, match="support"):
        checked.step(grey)


def test_a_budget_in_evaluations_over_plain_batches_without_num_data_is_refused_naming_num_data():
    """Batches given as a plain list carry no training set size: fit says to pass num_data (before: an
    AttributeError from the progress bar's length)."""
    from inference.training.budget import Budget

    x = torch.randn(100, 3)
    plain = PlainParamModel(len(x))
    trainer = Trainer(plain.model, plain.guide, estimator("iwae", num_particles=3))
    plain_batches = [(x[i : i + 25],) for i in range(0, 100, 25)]
    with pytest.raises(ValueError, match="pass num_data=N"):
        trainer.fit(plain_batches, budget=Budget("evaluations", 600), progress=False)
    metrics = trainer.fit(plain_batches, budget=Budget("evaluations", 600), progress=False, num_data=len(x))
    assert (metrics[-1]["steps"], metrics[-1]["likelihood_evaluations"]) == (8, 600)


def test_a_callback_that_stops_training_mid_epoch_leaves_the_epochs_objective_as_it_is():
    """Only a budget that stops an epoch part-way rescales its objective to the rows trained on; a callback that
    sets should_stop during the epoch (which ends the fit after it) changes nothing in the epoch's figures."""

    class StopAtFirstStep(Callback):
        def on_step_end(self, trainer):
            trainer.should_stop = True

    def first_epoch(callbacks):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        x = torch.randn(100, 3, generator=torch.Generator().manual_seed(1))
        plain = PlainParamModel(len(x))
        trainer = Trainer(plain.model, plain.guide, estimator("iwae", num_particles=3), callbacks=callbacks)
        half = [(x[i : i + 25],) for i in range(0, 50, 25)]  # half the set per epoch, num_data the whole
        return trainer.fit(half, epochs=1, progress=False, num_data=len(x))[0]["train_objective"]

    assert first_epoch([StopAtFirstStep()]) == first_epoch([])
