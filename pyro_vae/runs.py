"""Runs on disk: train a VAE into a folder, then evaluate it and draw pictures from it.

A run folder holds

* ``config.json``: the :class:`RunConfig` that built the data, model and estimator,
* ``metrics.json``: one entry per epoch (objectives in nats per example, wall-clock seconds),
* ``checkpoint.pt``: model, optimizer and RNG state (loads with ``torch.load(..., weights_only=True)``),
* ``eval.json`` after :func:`evaluate_run`, and ``samples.png`` / ``reconstructions.png`` after :func:`sample_run`.

The command line (:mod:`pyro_vae.cli`) is a thin layer over these functions.
"""

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pyro
import torch

from inference import estimator, log_marginal_likelihood
from inference.evaluation.diagnostics import (
    importance_resampled_latents,
    kl_per_dimension,
    latent_activity,
    save_inference_data,
)
from inference.training.checkpoint import load_checkpoint
from inference.training.trainer import linear_warmup, make_optimizer, train
from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.data.datasets import batches, fixed_binarization, load_dataset
from pyro_vae.vae import VAE, build_vae

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
EVAL_FILE = "eval.json"
INFERENCE_DATA_FILE = "eval.nc"
#: Burda et al. (2016): latent unit u is active when Cov_x(E_q[z_u | x]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01


@dataclass
class RunConfig:
    """Everything that defines a training run; stored as ``config.json``."""

    dataset: str = "digits"
    data_root: Optional[str] = None
    download: bool = False
    num_train: Optional[int] = None
    num_val: Optional[int] = None
    num_test: Optional[int] = None
    latent_dim: int = 10
    hidden_sizes: Sequence[int] = (200, 200)
    activation: str = "tanh"
    network: str = "mlp"
    prior: str = "normal"
    prior_options: dict = field(default_factory=dict)
    likelihood: str = "bernoulli"
    likelihood_scale: str = "learned"
    guide: str = "diagonal-normal"
    guide_options: dict = field(default_factory=dict)
    estimator: str = "elbo"
    num_particles: int = 1
    estimator_options: dict = field(default_factory=dict)
    kl_warmup_epochs: int = 0
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    clip_norm: Optional[float] = None
    val_num_samples: int = 10
    seed: int = 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known keys are {sorted(known)}")
        return cls(**d)


def load_config(run_dir) -> RunConfig:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"'{run_dir}' is not a run folder (no {CONFIG_FILE}); create one with `pyro-vae train`")
    with open(path) as f:
        return RunConfig.from_dict(json.load(f))


def json_safe(obj):
    """Non-finite floats (a k-hat of inf, a standard error of one example) become null: strict JSON has no inf."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj


def _write_json(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(json_safe(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def _likelihood_options(config: RunConfig) -> dict:
    return {"scale": config.likelihood_scale} if config.likelihood == "gaussian" else {}


def _binary_data(config: RunConfig) -> bool:
    return getattr(LIKELIHOODS.get(config.likelihood), "binary_data", False)


def prepare_data(config: RunConfig):
    """The run's splits; evaluation splits are binarized once (seeded) for a Bernoulli likelihood."""
    splits = load_dataset(
        config.dataset,
        root=config.data_root,
        download=config.download,
        seed=config.seed,
        num_train=config.num_train,
        num_val=config.num_val,
        num_test=config.num_test,
    )
    if _binary_data(config) and not splits.binary_ok:
        raise ValueError(
            f"the '{config.likelihood}' likelihood needs data in [0, 1] to binarize, but '{config.dataset}' is "
            "real-valued: choose --likelihood gaussian"
        )
    return splits


def eval_split(config: RunConfig, splits, split: str) -> torch.Tensor:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be one of train, val, test; got '{split}'")
    x = getattr(splits, split)
    if _binary_data(config):
        # A different fixed seed per split, so validation and test binarizations are independent.
        x = fixed_binarization(x, seed=config.seed * 3 + ("train", "val", "test").index(split) + 1)
    return x


def build_model(config: RunConfig, data_dim: int, num_data: int) -> VAE:
    return build_vae(
        data_dim=data_dim,
        latent_dim=config.latent_dim,
        hidden_sizes=config.hidden_sizes,
        activation=config.activation,
        network=config.network,
        prior=config.prior,
        likelihood=config.likelihood,
        guide=config.guide,
        num_data=num_data,
        prior_options=config.prior_options,
        likelihood_options=_likelihood_options(config),
        guide_options=config.guide_options,
    )


def train_run(config: RunConfig, run_dir, *, resume=False, progress=True) -> VAE:
    """Train the VAE described by ``config`` and write the run folder ``run_dir``."""
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, CONFIG_FILE)
    if resume and os.path.exists(config_path):
        saved = load_config(run_dir)
        if saved.to_dict() | {"epochs": config.epochs} != config.to_dict():
            raise ValueError(
                f"--resume with a config that differs from {config_path} in more than the number of epochs; "
                "resume with the same options, or train into a new --out folder"
            )
    elif os.path.exists(os.path.join(run_dir, CHECKPOINT_FILE)) and not resume:
        raise FileExistsError(
            f"'{run_dir}' already holds a trained run: pass --resume to continue it, or choose another --out folder"
        )
    _write_json(config.to_dict(), config_path)

    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    splits = prepare_data(config)
    generator = torch.Generator().manual_seed(config.seed)
    train_batches = batches(
        splits.train,
        config.batch_size,
        shuffle=True,
        generator=generator,
        dynamic_binarization=_binary_data(config),
    )
    val_x = eval_split(config, splits, "val")
    val_batches = [(val_x[i : i + 500],) for i in range(0, len(val_x), 500)]
    vae = build_model(config, splits.train.shape[1], len(splits.train))
    options = {"max_plate_nesting": vae.max_plate_nesting, **config.estimator_options}
    loss = estimator(config.estimator, num_particles=config.num_particles, **options)

    metrics_path = os.path.join(run_dir, METRICS_FILE)
    train(
        vae.model,
        vae.guide,
        loss,
        train_batches,
        epochs=config.epochs,
        module=vae,
        optimizer=make_optimizer(lr=config.lr, clip_norm=config.clip_norm),
        val_batches=val_batches,
        val_num_samples=config.val_num_samples,
        checkpoint_path=os.path.join(run_dir, CHECKPOINT_FILE),
        resume=resume,
        config=config.to_dict(),
        generator=generator,
        progress=progress,
        on_epoch=lambda metrics: _write_json(metrics, metrics_path),
        kl_weight_schedule=linear_warmup(config.kl_warmup_epochs) if config.kl_warmup_epochs else None,
    )
    return vae


def load_run(run_dir):
    """Rebuild the trained VAE of a run folder: ``(config, splits, vae)``."""
    config = load_config(run_dir)
    splits = prepare_data(config)
    vae = build_model(config, splits.train.shape[1], len(splits.train))
    state = load_checkpoint(os.path.join(run_dir, CHECKPOINT_FILE))
    vae.load_state_dict(state["module"])
    vae.eval()
    return config, splits, vae


def evaluate_run(
    run_dir,
    *,
    num_samples=5000,
    split="test",
    method="is",
    data_batch_size=100,
    particle_batch_size=500,
    seed=0,
    progress=True,
    posterior_examples=(0, 1, 2, 3),
    num_posterior_draws=200,
    **method_options,
) -> dict:
    """Estimate log p(x) on a split of a trained run; write ``eval.json`` and ``eval.nc``; return the report.

    The report holds the estimate's summary (:meth:`~inference.LogMarginalLikelihood.summary`), the per-model
    diagnostics (KL(q(z|x) || p(z)) per latent dimension, latent activity and active units) and where it came from.
    ``eval.nc`` holds the per-example estimates, ESS and Pareto k-hat, and sampling-importance-resampled posterior
    draws of ``z`` for ``posterior_examples``, as an arviz InferenceData (``arviz.from_netcdf``).
    ``method_options`` go to :func:`inference.log_marginal_likelihood` (e.g. AIS's ``num_steps``).
    """
    config, splits, vae = load_run(run_dir)
    x = eval_split(config, splits, split)
    bad = [i for i in posterior_examples if not 0 <= i < len(x)]
    if bad:
        raise ValueError(f"posterior examples {bad} are out of range: the {split} split has {len(x)} examples")
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    result = log_marginal_likelihood(
        vae.model,
        vae.guide,
        x,
        num_samples=num_samples,
        method=method,
        data_batch_size=data_batch_size,
        particle_batch_size=particle_batch_size,
        max_plate_nesting=vae.max_plate_nesting,
        progress=progress,
        **method_options,
    )
    seconds = time.perf_counter() - start
    with torch.no_grad():
        kl = kl_per_dimension(vae.model, vae.guide, x)
        activity = latent_activity(vae.guide, x)
    report = {
        **result.summary(),
        **{f"ais_{key}": value for key, value in method_options.items() if method == "ais"},
        "kl": kl.sum().item(),
        "kl_per_dimension": kl.tolist(),
        "active_units": int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_activity": activity.tolist(),
        "dataset": config.dataset,
        "split": split,
        "seed": seed,
        "seconds": seconds,
        **_generating_model_reference(splits, x),
        "inference_data": INFERENCE_DATA_FILE,
    }
    draws = {}
    if posterior_examples:
        chosen = list(posterior_examples)
        resampled = importance_resampled_latents(
            vae.model, vae.guide, x[chosen], num_draws=num_posterior_draws, num_samples=max(num_posterior_draws, 1000)
        )
        draws = {i: resampled[:, j] for j, i in enumerate(chosen)}
    save_inference_data(result, os.path.join(run_dir, INFERENCE_DATA_FILE), latent_draws=draws, attrs=report)
    _write_json(report, os.path.join(run_dir, EVAL_FILE))
    return report


def _generating_model_reference(splits, x) -> dict:
    """For synthetic data, the exact log p(x) under the model that generated it: the mark a fit aims at."""
    if splits.source is None:
        return {}
    return {"generating_model_log_px": splits.source.log_marginal(x.to(splits.source.weight)).mean().item()}


def _image_grid(flat: torch.Tensor, image_shape, nrow: int, upscale: int):
    import torchvision.utils

    images = flat.reshape(-1, *image_shape).clamp(0, 1)
    if upscale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=upscale, mode="nearest")
    return torchvision.utils.make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


def sample_run(run_dir, *, num_samples=64, nrow=8, split="test", seed=0, upscale=None) -> dict:
    """Write ``samples.png`` (likelihood means of ``z ~ p(z)``) and ``reconstructions.png`` (data rows alternating
    with their reconstructions) into the run folder; returns the two paths."""
    import torchvision.utils

    config, splits, vae = load_run(run_dir)
    if splits.image_shape is None:
        raise ValueError(f"dataset '{config.dataset}' has no image shape, so there is nothing to draw as images")
    upscale = upscale or max(1, 112 // splits.image_shape[-1])
    pyro.set_rng_seed(seed)
    samples = vae.sample_means(num_samples)
    x = eval_split(config, splits, split)[: nrow * max(1, num_samples // (2 * nrow))]
    rows = []
    for start in range(0, len(x), nrow):
        chunk = x[start : start + nrow]
        rows += [chunk, vae.reconstruct(chunk)]
    paths = {
        "samples": os.path.join(run_dir, "samples.png"),
        "reconstructions": os.path.join(run_dir, "reconstructions.png"),
    }
    torchvision.utils.save_image(_image_grid(samples, splits.image_shape, nrow, upscale), paths["samples"])
    torchvision.utils.save_image(
        _image_grid(torch.cat(rows), splits.image_shape, nrow, upscale), paths["reconstructions"]
    )
    return paths


def read_metrics(run_dir) -> list:
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        return json.load(f)
