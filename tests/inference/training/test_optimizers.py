import pyro
import pytest
import torch

from inference import Trainer, estimator
from inference.training.optimizers import build_optimizer, can_fuse, implementation_options
from pyro_vae import build_vae


def _params(dtype=torch.float32):
    return [torch.nn.Parameter(torch.randn(3, 2, dtype=dtype)), torch.nn.Parameter(torch.randn(2, dtype=dtype))]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_with_a_fused_kernel_get_it_by_default(name):
    optimizer = build_optimizer(name, _params(), {"lr": 1e-2})
    assert optimizer.param_groups[0]["fused"] is True


def test_rmsprop_has_no_fused_kernel_and_is_built_as_asked():
    assert not can_fuse(torch.optim.RMSprop, _params())
    assert not build_optimizer("rmsprop", _params(), {"lr": 1e-2}).param_groups[0]["foreach"]


@pytest.mark.parametrize("options", [{"fused": False}, {"foreach": True}, {"foreach": False}])
def test_options_that_choose_an_implementation_are_kept(options):
    assert implementation_options(torch.optim.Adam, _params(), {"lr": 1.0, **options}) == {"lr": 1.0, **options}
    assert not build_optimizer("adam", _params(), options).param_groups[0]["fused"]


def test_parameters_on_two_device_types_or_not_floating_are_not_fused():
    meta = torch.nn.Parameter(torch.empty(2, device="meta"))
    assert not can_fuse(torch.optim.Adam, [*_params(), meta])
    assert not can_fuse(torch.optim.Adam, [torch.zeros(2, dtype=torch.int64)])
    assert can_fuse(torch.optim.Adam, _params(torch.float64))


def _trained_vae(optimizer_options, x, steps=5):
    pyro.set_rng_seed(0)
    vae = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=1000)
    trainer = Trainer(vae.model, vae.guide, estimator("iwae", num_particles=3), module=vae,
                      optimizer_options=optimizer_options)  # fmt: skip
    losses = [trainer.step(x) for _ in range(steps)]
    return vae, trainer, losses


def test_the_fused_kernel_trains_as_the_python_loop_does():
    """Same draws, same data: Adam's fused kernel and its loop over parameters differ only in rounding (float32
    ulps of the parameters, which move by about lr = 1e-2 a step), so five steps agree to 1e-5."""
    x = torch.bernoulli(torch.full((20, 64), 0.3), generator=torch.Generator().manual_seed(0))
    fused, fused_trainer, fused_losses = _trained_vae({"lr": 1e-2}, x)
    loop, loop_trainer, loop_losses = _trained_vae({"lr": 1e-2, "fused": False}, x)
    assert fused_trainer.optimizer.param_groups[0]["fused"] and not loop_trainer.optimizer.param_groups[0]["fused"]
    pyro.set_rng_seed(0)
    start = build_vae(64, latent_dim=4, hidden_sizes=(32,), num_data=1000)
    moved = 0.0
    for (name, a), b, s in zip(fused.named_parameters(), loop.parameters(), start.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), name
        moved = max(moved, (a - s).abs().max().item())
    assert moved > 1e-2  # the comparison is between parameters that trained, not between two copies of the start
    assert fused_losses == pytest.approx(loop_losses, rel=1e-5)


def test_only_a_fused_kernel_skips_a_step_on_the_device():
    """The fused kernel reads ``found_inf`` and leaves parameter and step count alone; the loop has no such flag."""
    from inference.training.optimizers import skips_on_device

    assert skips_on_device(build_optimizer("adam", _params(), {"lr": 1.0}))
    assert not skips_on_device(build_optimizer("adam", _params(), {"lr": 1.0, "fused": False}))
    assert not skips_on_device(build_optimizer("rmsprop", _params(), {"lr": 1.0}))
    params = _params()
    optimizer = build_optimizer("adam", params, {"lr": 1.0})
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.found_inf = torch.ones(())
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    assert all(state["step"].item() == 0 for state in optimizer.state.values())
