import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from inference import evaluate_objectives, load_checkpoint, train
from pyro_vae import build_vae
from pyro_vae.data.datasets import batches, fixed_binarization, load_dataset


@pytest.fixture(scope="module")
def digits():
    splits = load_dataset("digits", seed=0)
    return splits.train[:400], fixed_binarization(splits.val, seed=1)


def _fit(x, x_val, epochs, path, resume=False, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=len(x))
    data = batches(x, 50, shuffle=True, generator=generator, dynamic_binarization=True)
    metrics = train(
        vae.model,
        vae.guide,
        Trace_ELBO(),
        data,
        epochs=epochs,
        module=vae,
        val_batches=[(x_val,)],
        checkpoint_path=path,
        resume=resume,
        generator=generator,
        progress=False,
    )
    return vae, metrics


def test_resume_is_exact(digits, tmp_path):
    x, x_val = digits
    straight, straight_metrics = _fit(x, x_val, 4, tmp_path / "a.pt")
    _fit(x, x_val, 2, tmp_path / "b.pt", seed=0)
    # A different seed now must not matter: resuming restores every generator from the checkpoint.
    resumed, resumed_metrics = _fit(x, x_val, 4, tmp_path / "b.pt", resume=True, seed=123)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]  # noqa: E731
    assert strip(straight_metrics) == strip(resumed_metrics)


def test_checkpoint_is_code_free_and_complete(digits, tmp_path):
    x, x_val = digits
    path = tmp_path / "c.pt"
    vae, metrics = _fit(x, x_val, 1, path)
    state = torch.load(path, weights_only=True)  # raises if anything but plain data were pickled
    assert state["epoch"] == 1 and state["metrics"] == metrics
    assert set(state["module"]) == set(vae.state_dict())
    assert set(state["optimizer"]) == {name for name, _ in vae.named_parameters()}
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
    assert metrics[-1]["val_log_px_10"] >= metrics[-1]["val_elbo"]
    assert [m["epoch"] for m in metrics] == list(range(1, 16))
    assert all(m["seconds"] > 0 for m in metrics)


def test_train_objective_is_per_example(digits):
    """With the data plate scaled to N, loss / N is the per-example ELBO: compare with the validation estimate
    on the same (training) data before any step has changed the parameters much."""
    x, _ = digits
    x_bin = fixed_binarization(x, seed=3)
    pyro.set_rng_seed(0)
    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=len(x))
    reference = evaluate_objectives(vae.model, vae.guide, [(x_bin,)], num_samples=50)["elbo"]
    data = [(x_bin[i : i + 50],) for i in range(0, len(x_bin), 50)]
    optimizer = pyro.optim.Adam({"lr": 1e-9})
    metrics = train(
        vae.model, vae.guide, Trace_ELBO(), data, epochs=1, num_data=len(x), optimizer=optimizer, progress=False
    )
    assert metrics[0]["train_objective"] == pytest.approx(reference, abs=0.3)


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(digits, tmp_path):
    x, x_val = digits
    path = tmp_path / "n.pt"
    _fit(x, x_val, 1, path)
    before = torch.load(path, weights_only=True)

    class BrokenLoss(Trace_ELBO):
        def loss_and_grads(self, model, guide, *args, **kwargs):
            return math.nan

    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=len(x))
    data = batches(x, 50, shuffle=True, generator=torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(
            vae.model,
            vae.guide,
            BrokenLoss(),
            data,
            epochs=2,
            module=vae,
            checkpoint_path=path,
            resume=True,
            progress=False,
        )
    after = torch.load(path, weights_only=True)
    assert after["epoch"] == before["epoch"] == 1


def test_kl_warmup_sets_the_estimators_kl_weight_each_epoch(digits):
    from inference import estimator
    from inference.training.trainer import linear_warmup

    x, x_val = digits
    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=len(x))
    data = batches(x, 100, shuffle=True, generator=torch.Generator().manual_seed(0), dynamic_binarization=True)
    metrics = train(
        vae.model,
        vae.guide,
        estimator("iwae", num_particles=2),
        data,
        epochs=4,
        module=vae,
        kl_weight_schedule=linear_warmup(2),
        progress=False,
    )
    assert [m["kl_weight"] for m in metrics] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="kl_weight attribute"):
        train(vae.model, vae.guide, Trace_ELBO(), data, epochs=1, kl_weight_schedule=linear_warmup(2))
