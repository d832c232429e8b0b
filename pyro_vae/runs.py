"""Runs on disk: train a VAE into a folder, then evaluate it and draw pictures from it.

A run folder holds

* ``config.json``: the :class:`~pyro_vae.config.RunConfig` tree that built the data, model, estimator and
  evaluation (it rebuilds the run exactly),
* ``metrics.json``: one entry per epoch (objectives in nats per example, training and validation seconds),
* ``checkpoint.pt``: parameters, optimizer, estimator and RNG state with a checksum
  (``torch.load(..., weights_only=True)``),
* ``status.json``: training, finished or failed; epochs done; the checkpoint's checksum,
* ``eval/<method>-<split>.json`` and ``.nc`` after :func:`evaluate_run` (one pair per method and split, each
  naming the checkpoint it scored), ``samples.png`` / ``reconstructions.png`` after :func:`sample_run`,
* ``stale/epoch-<E>/``: evaluations and pictures of an earlier checkpoint, moved there when training resumed.

Nothing is written before the whole run (configuration, data, model, estimator) has been built, so a refused
run leaves no folder behind; every file is written atomically, and each command holds the folder's lock
(:mod:`pyro_vae.folder`) while it writes. The command line (:mod:`pyro_vae.cli`) is a thin layer over these
functions.
"""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
import warnings

import pyro
import torch

from inference import UnreliableEstimateWarning, estimator, log_marginal_likelihood, log_px_method
from inference.atomic import atomic_write
from inference.denormals import flushing_denormals
from inference.evaluation.diagnostics import (
    importance_resampled_latents,
    kl_from_prior,
    kl_per_dimension,
    posterior_means,
    save_inference_data,
)
from inference.importance import forked_rng
from inference.training import distributed
from inference.training.callbacks import (
    Checkpoint,
    KLWeightSchedule,
    LearningRateSchedule,
    OnEpochEnd,
    linear_warmup,
)
from inference.training.checkpoint import load_checkpoint
from inference.training.schedules import LR_SCHEDULES
from inference.training.trainer import Trainer
from pyro_vae.components import LIKELIHOODS
from pyro_vae.config import ConfigError, RunConfig, apply_overrides, resolve_device
from pyro_vae.data import batches, fixed_binarization, fixed_dequantization, load_dataset
from pyro_vae.data.mapped import RowChunks, first_rows, is_lazy
from pyro_vae.folder import (
    RunLock,
    command_line,
    evaluation_paths,
    read_json,
    read_status,
    require_finished,
    retire_evaluations,
    write_json,
    write_status,
)
from pyro_vae.vae import VAE, build_model

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
#: Burda et al. (2016): latent unit u is active when Cov_x(E_q[z_u | x]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01
SPLITS = ("train", "val", "test")


def load_config(run_dir) -> RunConfig:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"'{run_dir}' is not a run folder (no {CONFIG_FILE}); create one with `pyro-vae train`")
    return RunConfig.from_dict(read_json(path))


def trains_the_elbo_by_another_name(config: RunConfig) -> bool:
    """Whether the estimator is an importance-weighted bound averaging one weight per log-mean-exp (``K = 1``, the
    default ``num_particles``), which is the ELBO: an ``iwae`` run that trains what an ``elbo`` run trains. An
    estimator whose options do not build is left to the run to refuse."""
    try:
        chosen = estimator(config.train.estimator.name, **config.train.estimator.options)
    except (TypeError, ValueError):
        return False
    return getattr(chosen, "is_the_elbo", lambda: False)()


def binary_data(config: RunConfig) -> bool:
    """Whether the likelihood reads 0/1 data, so grey levels are binarized."""
    return getattr(LIKELIHOODS.get(config.model.likelihood.name), "binary_data", False)


def data_representation(config: RunConfig) -> str:
    """How the likelihood reads the data: ``"binarized"`` (0/1 draws of grey levels, a mass), ``"8-bit"`` (grey
    levels 0..255, a mass), ``"dequantized"`` (a density on uniformly dequantized 8-bit levels, reported as a bound
    on their mass) or ``"continuous"`` (a density on the values as given). Log-likelihoods of different
    representations are different quantities and are never compared (the dequantized bound stands beside
    8-bit masses)."""
    if binary_data(config):
        return "binarized"
    representation = getattr(LIKELIHOODS.get(config.model.likelihood.name), "data_representation", "continuous")
    return "dequantized" if representation == "continuous" and config.data.dequantize else representation


def dequantization_correction(config: RunConfig, data_dim: int) -> float:
    """``-D log 256`` for dequantized data, else 0. For 8-bit levels ``k`` and ``y = (k + u) / 256``, Jensen's
    inequality gives ``log P(k) = log E_u[p(y) / 256^D] >= E_u[log p(y)] - D log 256``, so the density's
    log p(y) plus this correction is a (stochastic) lower bound on the 8-bit log-mass (Theis et al. 2016)."""
    return -data_dim * math.log(256) if data_representation(config) == "dequantized" else 0.0


def prepare_data(config: RunConfig):
    """The run's splits, drawn by the data seed (the same for every training seed)."""
    data = config.data
    splits = load_dataset(
        data.name,
        root=data.root,
        download=data.download,
        seed=data.seed,
        num_train=data.num_train,
        num_val=data.num_val,
        num_test=data.num_test,
        memory_map=data.memory_map,
    )
    representation = data_representation(config)
    if config.data.dequantize and representation != "dequantized":
        raise ConfigError(
            f"data.dequantize gives a density on dequantized 8-bit levels, but the '{config.model.likelihood.name}' "
            f"likelihood reads {representation} data: choose a density on [0, 1] (gaussian, laplace, beta, "
            "continuous-bernoulli) or drop data.dequantize"
        )
    if representation == "binarized" and splits.eight_bit:
        raise ConfigError(
            f"the '{config.model.likelihood.name}' likelihood reads 0/1 data made from grey levels in [0, 1], but "
            f"'{data.name}' holds 8-bit levels 0..255: choose an 8-bit likelihood (--likelihood discretized-logistic "
            "or categorical-256), or save the data divided by 255"
        )
    if representation in ("8-bit", "dequantized") and splits.eight_bit:
        return _checked_batch_size(config, splits)  # already the levels 0..255 that 8-bit likelihoods read
    if representation == "dequantized" and not splits.binary_ok:
        raise ConfigError(
            f"data.dequantize needs pixel data in [0, 1] made of 8-bit levels, but '{data.name}' is real-valued: "
            "drop data.dequantize"
        )
    if representation != "continuous" and not splits.binary_ok:
        raise ConfigError(
            f"the '{config.model.likelihood.name}' likelihood reads {representation} grey levels made from data in "
            f"[0, 1], but '{data.name}' is real-valued: choose --likelihood gaussian"
        )
    if representation in ("8-bit", "dequantized"):
        splits = to_eight_bit(splits)
    return _checked_batch_size(config, splits)


def _checked_batch_size(config: RunConfig, splits):
    if config.train.batch_size > len(splits.train):
        raise ConfigError(
            f"train.batch_size {config.train.batch_size} is larger than the {len(splits.train)} training examples: "
            "choose a smaller --batch-size"
        )
    return splits


def to_eight_bit(splits):
    """Grey levels in [0, 1] as the integers 0..255 (stored as floats) that 8-bit likelihoods read."""
    scaled = {split: _scaled_to_levels(getattr(splits, split)) for split in ("train", "val", "test")}
    return dataclasses.replace(splits, **scaled, binary_ok=False)


def _scaled_to_levels(x):
    """``round(255 x)``, of a tensor at once or of rows on disk as they are read."""
    return x.transformed(_to_levels) if is_lazy(x) else _to_levels(x)


def _to_levels(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round()


def eval_split(config: RunConfig, splits, split: str) -> torch.Tensor:
    """A split as the model sees it at evaluation: binarized once, by the data seed, for a 0/1 likelihood;
    dequantized once, by the data seed, for dequantized data."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got '{split}'")
    x = getattr(splits, split)
    # A different fixed seed per split, so validation and test binarizations (or dequantizations) are independent.
    seed = config.data.seed * 3 + SPLITS.index(split) + 1
    if binary_data(config):
        x = fixed_binarization(x, seed=seed)
    elif data_representation(config) == "dequantized":
        x = fixed_dequantization(x, seed=seed)
    return x


def model_for(config: RunConfig, splits) -> VAE:
    """The VAE of ``config.model`` for these data, initialised by the training seed."""
    pyro.set_rng_seed(config.train.seed)
    vae = build_model(
        config.model, data_dim=splits.data_dim, num_data=len(splits.train), image_shape=splits.image_shape
    )
    if hasattr(vae.prior, "initialize_from_data"):  # a VampPrior whose pseudo-inputs start as training examples
        vae.prior.initialize_from_data(splits.train, torch.Generator().manual_seed(config.train.seed))
    return vae


@torch.no_grad()
def check_data_support(config: RunConfig, vae: VAE, x: torch.Tensor, split: str) -> None:
    """Refuse data outside the support of the likelihood (e.g. values outside (0, 1) for a Beta), before training."""
    for start in range(0, len(x), 1000):
        chunk = x[start : start + 1000]
        with forked_rng():  # leave the training draws unchanged
            likelihood = vae.decode(vae.posterior(chunk).sample())
        outside = (~likelihood.support.check(chunk)).reshape(len(chunk), -1).any(1).nonzero().reshape(-1)
        if len(outside):
            row = chunk[outside[0]]
            raise ConfigError(
                f"the {split} data lie outside the support of the '{config.model.likelihood.name}' likelihood "
                f"({likelihood.support}), e.g. {split} example {start + outside[0].item()} with values from "
                f"{row.min().item():.4g} to {row.max().item():.4g}: choose a likelihood for these values, or "
                "rescale the data"
            )


def estimator_for(config: RunConfig, vae: VAE):
    options = {"max_plate_nesting": vae.max_plate_nesting, **config.train.estimator.options}
    return estimator(config.train.estimator.name, **options)


def train_run(config: RunConfig, run_dir, *, resume=False, progress=True, callbacks=()) -> VAE:
    """Train the VAE described by ``config`` and write the run folder ``run_dir``.

    With ``resume`` the run continues from its checkpoint; ``config`` may then differ from the saved one only in
    ``train.epochs`` (pass ``None`` to take the saved configuration as it is). ``callbacks``
    (:class:`~inference.training.callbacks.Callback`) run after each epoch's checkpoint and records, e.g. a
    search's pruning; one that sets ``trainer.should_stop`` ends training after that epoch.

    Launched by ``torchrun`` (or ``pyro-vae train --nproc N``), every process runs this function: they join one
    process group, each trains on its shard of every minibatch with gradients averaged over processes
    (:mod:`inference.training.distributed`; ``train.batch_size`` stays the global batch), and rank 0 alone writes
    the folder, which must be on a file system every process can read to resume. Every process flushes denormal
    floats as ``config.flush_denormals`` says, for the duration of the call.
    """
    resume = resume and os.path.exists(os.path.join(run_dir, CONFIG_FILE))  # nothing to resume: a fresh run
    config = _config_to_resume(config, run_dir) if resume else config
    if config is None:
        raise ConfigError("train_run needs a configuration (or resume=True with a run folder that has one)")
    with flushing_denormals(config.flush_denormals):
        return _train(config, run_dir, resume, progress, list(callbacks))


def _train(config: RunConfig, run_dir, resume, progress, extra_callbacks) -> VAE:
    device = distributed.init_from_environment(resolve_device(config.device))
    main_process = distributed.is_main_process()
    splits = prepare_data(config)
    vae = model_for(config, splits).to(device)
    loss = estimator_for(config, vae)
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    train_batches = batches(
        splits.train.to(device),
        config.train.batch_size,
        shuffle=True,
        generator=generator,
        dynamic_binarization=binary_data(config),
        dequantization=data_representation(config) == "dequantized",
    )
    val_x = eval_split(config, splits, "val").to(device)
    check_data_support(config, vae, val_x, "validation")
    if not binary_data(config):  # 0/1 likelihoods see binarized draws of the grey levels, checked above
        check_data_support(config, vae, eval_split(config, splits, "train").to(device), "training")
    val_batches = RowChunks(val_x, 500)
    checkpoint_path = os.path.join(run_dir, CHECKPOINT_FILE)
    checkpoint = Checkpoint(checkpoint_path, resume=resume, extra={"config": config.to_dict()})
    callbacks = []
    if config.train.kl_warmup_epochs:
        callbacks.append(KLWeightSchedule(linear_warmup(config.train.kl_warmup_epochs)))
    schedule = config.train.lr_schedule
    if schedule.name != "constant":
        callbacks.append(
            LearningRateSchedule(
                lambda optimizer: LR_SCHEDULES.build(schedule.name, optimizer=optimizer, **schedule.options)
            )
        )

    previous_epochs = read_status(run_dir).get("epochs_done", 0) if resume else 0

    def record_epoch(metrics):
        if not main_process:
            return
        if resume and len(metrics) == previous_epochs + 1:  # the first new checkpoint replaces the one evaluated
            retire_evaluations(run_dir, previous_epochs)
        write_json(metrics, os.path.join(run_dir, METRICS_FILE))
        write_status(run_dir, epochs_done=len(metrics), checkpoint={"epoch": len(metrics), "sha256": checkpoint.digest})

    callbacks += [checkpoint, OnEpochEnd(record_epoch)]  # the checkpoint first, then the records that name it
    callbacks += extra_callbacks
    trainer = Trainer(
        vae.model,
        vae.guide,
        loss,
        module=vae,
        optimizer=config.train.optimizer.name,
        optimizer_options=config.train.optimizer.options,
        clip_norm=config.train.clip_norm,
        on_non_finite=config.train.on_non_finite,
        callbacks=callbacks,
        generator=generator,
        validate_every_step=False,  # the data were checked against the likelihood's support above
    )
    # One trial of the loss before anything is written: combinations the estimator refuses on sight (DReG with a
    # flow guide, a non-reparameterizable guide for IWAE, analytic KL without a closed form) leave no folder.
    trainer.prepare(train_batches)
    check_evaluation_method(config, vae)
    created = not os.path.exists(run_dir)
    with RunLock(run_dir, command_line()) if main_process else contextlib.nullcontext():
        if not resume and os.path.exists(checkpoint_path):
            raise FileExistsError(
                f"'{run_dir}' already holds a trained run: pass --resume to continue it, or choose another --out folder"
            )
        checkpoint.saved_state()  # a damaged checkpoint is refused here, before any file changes
        trained_on = read_status(run_dir).get("device") if resume else None
        if trained_on not in (None, device.type):
            raise ConfigError(
                f"'{run_dir}' was trained on {trained_on}; resume it with --device {trained_on}, so that it continues "
                "exactly (its random generators belong to that device). Evaluate and sample run on any device."
            )
        try:
            if main_process:
                write_json(config.to_dict(), os.path.join(run_dir, CONFIG_FILE))
                write_status(
                    run_dir,
                    state="training",
                    epochs=config.train.epochs,
                    started=command_line(),
                    device=device.type,
                    processes=distributed.world_size(),
                )
            trainer.fit(
                train_batches,
                epochs=config.train.epochs,
                val_batches=val_batches,
                val_num_samples=config.train.val_num_samples,
                progress=progress,
            )
        except BaseException as error:
            if not main_process:
                raise
            if not os.path.exists(checkpoint_path):  # nothing trained: leave nothing behind
                _remove_run_files(run_dir, remove_folder=created)
            else:
                stopped = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"  # Ctrl-C, SIGTERM
                write_status(run_dir, state=stopped, error=f"{type(error).__name__}: {error}")
            raise
        if main_process:
            write_status(run_dir, state="finished", epochs_done=len(trainer.metrics))
    return vae


def _remove_run_files(run_dir, remove_folder):
    if remove_folder:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in (CONFIG_FILE, METRICS_FILE, "status.json", ".lock"):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)


def _config_to_resume(config, run_dir):
    saved = load_config(run_dir)
    if config is None:
        return saved
    done = read_status(run_dir).get("epochs_done", 0)
    if config.train.epochs < done:
        raise ConfigError(
            f"'{run_dir}' has trained {done} epochs, more than the {config.train.epochs} asked for; a run cannot "
            f"go back: resume with --epochs {done} (as it is) or more, or train a new run into another --out folder"
        )
    if apply_overrides(saved, [("train.epochs", config.train.epochs)]) != config:
        raise ConfigError(
            f"--resume with a configuration that differs from {os.path.join(run_dir, CONFIG_FILE)} in more than "
            "train.epochs; resume with `pyro-vae train --resume --out DIR [--epochs N]` alone, or train into a "
            "new --out folder"
        )
    return config


def load_run(run_dir, device="auto", with_checkpoint=False):
    """Rebuild the trained VAE of a run folder: ``(config, splits, vae)``, the VAE on ``device``; with
    ``with_checkpoint`` also ``{"epoch", "sha256"}`` of the checkpoint it was loaded from."""
    config = load_config(run_dir)
    splits = prepare_data(config)
    vae = model_for(config, splits)
    state = load_checkpoint(os.path.join(run_dir, CHECKPOINT_FILE))
    try:
        vae.load_state_dict(state["module"])
    except RuntimeError as e:
        raise ConfigError(
            f"the checkpoint of '{run_dir}' does not fit the model that its config.json builds now (the data or a "
            f"component changed since training): {str(e).splitlines()[0]}"
        ) from None
    vae.to(resolve_device(device))
    vae.eval()
    if with_checkpoint:
        return config, splits, vae, {"epoch": state["epoch"], "sha256": state["sha256"]}
    return config, splits, vae


def evaluate_run(
    run_dir,
    *,
    method=None,
    method_options=None,
    split=None,
    data_batch_size=None,
    seed=None,
    device="auto",
    progress=True,
    posterior_examples=(0, 1, 2, 3),
    num_posterior_draws=200,
    allow_unfinished=False,
    num_examples=None,
) -> dict:
    """Estimate log p(x) on a split of a trained run; write ``eval/<method>-<split>.json`` and ``.nc``; return
    the report.

    Every argument left ``None`` takes the run's ``eval`` section (itself defaulting to ``is`` on the test split
    with the method's own defaults, e.g. ``K = 5000``); ``method_options`` update the method's options. A run
    whose training has not finished is refused unless ``allow_unfinished``. ``num_examples`` scores only the
    first that many examples of the split (the report's ``num_examples`` says how many).

    The report holds the estimate's summary (:meth:`~inference.LogMarginalLikelihood.summary`), the per-model
    diagnostics (KL(q(z|x) || p(z)) per latent dimension, latent activity and active units), the seeds, the
    checkpoint it scored (epoch and checksum), and ``warnings`` when the importance weights are not to be trusted.
    The ``.nc`` file holds the per-example estimates, ESS and Pareto k-hat, and sampling-importance-resampled
    posterior draws of ``z`` for ``posterior_examples``, as an arviz InferenceData.

    Each chunk of ``data_batch_size`` examples draws from a generator seeded by the evaluation seed and its
    first index, so the estimates do not depend on the number of processes: launched by ``torchrun`` (or
    ``pyro-vae evaluate --nproc N``), the processes share out the chunks and rank 0 gathers, writes and returns
    the report (the other ranks return the estimate's summary alone). Every process flushes denormal floats as the
    run's ``flush_denormals`` says.
    """
    saved = load_config(run_dir)  # a folder that is not a run gets its own message, and no lock file
    device = distributed.init_from_environment(resolve_device(device))
    main_process = distributed.is_main_process()
    lock = RunLock(run_dir, command_line()) if main_process else contextlib.nullcontext()
    with lock, flushing_denormals(saved.flush_denormals):
        status = require_finished(run_dir, allow_unfinished)
        config, splits, vae, checkpoint = load_run(run_dir, device, with_checkpoint=True)
        config = _evaluation_config(config, method, method_options, split, data_batch_size, seed)
        evaluation = config.eval
        check_evaluation_method(config, vae)
        x = eval_split(config, splits, evaluation.split).to(device)
        if num_examples is not None:
            if not 1 <= num_examples <= len(x):
                raise ValueError(
                    f"num_examples={num_examples}: the {evaluation.split} split has {len(x)} examples; ask for 1 to "
                    f"{len(x)}"
                )
            x = first_rows(x, num_examples)  # the first N, in the split's fixed order: the same N for every run
        bad = [i for i in posterior_examples if not 0 <= i < len(x)]
        if bad:
            raise ValueError(
                f"posterior examples {bad} are out of range: the {evaluation.split} split has {len(x)} examples"
            )
        pyro.set_rng_seed(evaluation.seed)
        start = time.perf_counter()
        with warnings.catch_warnings():  # the report carries them, and the command prints them once
            warnings.simplefilter("ignore", UnreliableEstimateWarning)
            result = log_marginal_likelihood(
                vae.model,
                vae.guide,
                x,
                method=log_px_method(evaluation.method.name, **evaluation.method.options),
                data_batch_size=evaluation.data_batch_size,
                max_plate_nesting=vae.max_plate_nesting,
                progress=progress,
                seed=evaluation.seed,
            )
        seconds = time.perf_counter() - start
        correction = dequantization_correction(config, x[0].numel())
        density = result.mean
        if correction:  # from the density on dequantized values to the bound on the 8-bit mass
            result = dataclasses.replace(result, log_px=result.log_px + correction, elbo=result.elbo + correction)
        if not main_process:  # rank 0 reports and writes
            return result.summary()
        with torch.no_grad():
            kl, kl_dims = _kl_diagnostics(vae, x, evaluation.data_batch_size)
            distortion = reconstruction_error(vae, x, evaluation.data_batch_size)
            activity = _latent_activity(vae, x, evaluation.data_batch_size)
        paths = evaluation_paths(run_dir, evaluation.method.name, evaluation.split)
        report = {
            **result.summary(),
            "method_options": evaluation.method.options,
            "kl": kl,
            "kl_per_dimension": kl_dims,
            **distortion,
            "active_units": int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
            "latent_activity": activity.tolist(),
            **units(config, result, x),
            **({"dequantization_correction": correction, "log_px_density": density} if correction else {}),
            "dataset": config.data.name,
            "split": evaluation.split,
            "split_source": splits.split_source,
            "data_seed": config.data.seed,
            "train_seed": config.train.seed,
            "seed": evaluation.seed,
            "seconds": seconds,
            "checkpoint": checkpoint,
            "training_finished": status.get("state") == "finished",
            **_generating_model_reference(splits, x),
            "warnings": weight_warnings(result),
            "inference_data": os.path.relpath(paths["netcdf"], run_dir),
        }
        draws = {}
        if posterior_examples:
            chosen = list(posterior_examples)
            resampled = importance_resampled_latents(
                vae.model,
                vae.guide,
                x[chosen],
                site=vae.latent_site,
                num_draws=num_posterior_draws,
                num_samples=max(num_posterior_draws, 1000),
            )
            draws = {i: resampled[:, j].cpu() for j, i in enumerate(chosen)}
        os.makedirs(os.path.dirname(paths["json"]), exist_ok=True)
        save_inference_data(result, paths["netcdf"], latent_draws=draws, attrs=report)
        write_json(report, paths["json"])
    return report


def check_evaluation_method(config: RunConfig, vae: VAE) -> None:
    """A point-mass guide (``delta``) has no density to divide by: refuse a method that needs one."""
    method = log_px_method(config.eval.method.name, **config.eval.method.options)
    if getattr(vae.guide_family, "point_mass", False) and method.needs_guide_density:
        raise ConfigError(
            f"the '{config.model.guide.name}' guide is a point mass, so importance sampling with it as proposal "
            "estimates nothing: use the prior as proposal, --set eval.method=is-prior (or evaluate --method "
            "is-prior, or --method ais --ais-proposal prior)"
        )


@torch.no_grad()
def reconstruction_error(vae: VAE, x: torch.Tensor, chunk: int, num_draws: int = 10) -> dict:
    """The distortion side of the rate-distortion view (Alemi et al. 2018): ``distortion = E_q[-log p(x | z)]``
    in nats per example, and ``reconstruction_mse = E_q[mean_d (x_d - E[x_d | z])^2]``, both over ``num_draws``
    guide draws per example (of ``z1`` in a two-layer model); with ``kl`` (the rate) they trace the curve a KL
    weight sweeps."""
    nll, mse = 0.0, 0.0
    for start in range(0, len(x), chunk):
        piece = x[start : start + chunk]
        z = vae.posterior(piece).sample((num_draws,))
        likelihood = vae.decode(z)
        nll -= likelihood.log_prob(piece).mean(0).sum().item()
        mse += (piece - likelihood.mean).pow(2).mean(-1).mean(0).sum().item()
    return {"distortion": nll / len(x), "reconstruction_mse": mse / len(x)}


def _kl_diagnostics(vae, x, chunk):
    """Mean ``KL(q(z | x) || p(z))`` over ``x`` and, where prior and guide factor over dimensions, its split into
    dimensions (else ``None``); computed ``chunk`` examples at a time. A point-mass guide has no KL (``None``)."""
    if getattr(vae.guide_family, "point_mass", False):
        return None, None
    site = vae.latent_site
    pieces = RowChunks(x, chunk)  # read as they are used: rows on disk stay there
    total = sum(kl_from_prior(vae.model, vae.guide, piece, site=site).sum().item() for (piece,) in pieces) / len(x)
    try:
        per_dim = sum(kl_per_dimension(vae.model, vae.guide, p, site=site) * len(p) for (p,) in pieces) / len(x)
    except ValueError:  # a mixture or flow prior, a correlated guide: no per-dimension split
        return total, None
    return total, per_dim.tolist()


def _latent_activity(vae, x, chunk):
    """:func:`~inference.evaluation.diagnostics.latent_activity` over ``x``, its posterior means computed
    ``chunk`` examples at a time."""
    means = torch.cat([posterior_means(vae.guide, piece, site=vae.latent_site) for (piece,) in RowChunks(x, chunk)])
    if len(means) < 2:
        raise ValueError("latent activity is a variance over data points; evaluate at least two data points")
    return means.var(0, unbiased=True)


def _evaluation_config(config, method, method_options, split, data_batch_size, seed):
    """The run's configuration with the ``eval`` section updated by the arguments that were given."""
    overrides = [
        (f"eval.{key}", value)
        for key, value in (("split", split), ("data_batch_size", data_batch_size), ("seed", seed))
        if value is not None
    ]
    if method is not None and method != config.eval.method.name:
        overrides.append(("eval.method", {"name": method, "options": {}}))
    for key, value in (method_options or {}).items():
        overrides.append((f"eval.method.options.{key}", value))
    return apply_overrides(config, overrides)


def units(config: RunConfig, result, x) -> dict:
    """The data representation the numbers refer to, and for masses (binarized or 8-bit data, and the bound on
    the 8-bit mass of dequantized data) bits per dimension: ``-log p(x) / (D log 2)``."""
    representation = data_representation(config)
    report = {"data_representation": representation, "units": "nats per example"}
    if representation != "continuous":
        report["bits_per_dim"] = -result.mean / (x[0].numel() * math.log(2))
    return report


def weight_warnings(result) -> list:
    """What a reader of the estimate must know when its importance weights are heavy-tailed or degenerate."""
    return result.reliability_warnings(fix="Try more samples (--num-samples), AIS (--method ais), or a richer guide.")


def _generating_model_reference(splits, x) -> dict:
    """For synthetic data, the exact log p(x) under the model that generated it: the mark a fit aims at."""
    if splits.source is None:
        return {}
    return {"generating_model_log_px": splits.source.log_marginal(x.to(splits.source.weight)).mean().item()}


def image_grid(flat: torch.Tensor, image_shape, nrow: int, upscale: int):
    import torchvision.utils

    images = flat.reshape(-1, *image_shape).clamp(0, 1)
    if upscale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=upscale, mode="nearest")
    return torchvision.utils.make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


def sample_run(run_dir, *, num_samples=64, nrow=8, split="test", seed=0, upscale=None, device="auto") -> dict:
    """Write ``samples.png`` (likelihood means of ``z ~ p(z)``) and ``reconstructions.png`` (data rows alternating
    with their reconstructions) into the run folder; returns the two paths."""
    config, splits, vae = load_run(run_dir, device)
    grids = picture_grids(config, splits, vae, num_samples=num_samples, nrow=nrow, split=split, seed=seed,
                          upscale=upscale)  # fmt: skip
    return write_pictures(run_dir, grids)


@torch.no_grad()
def picture_grids(config, splits, vae, *, num_samples=64, nrow=8, split="test", seed=0, upscale=None) -> dict:
    """``{"samples", "reconstructions"}``: image grids ``(3, H, W)`` in [0, 1] of a loaded run's samples and of
    ``split`` rows alternating with their reconstructions."""
    if splits.image_shape is None:
        raise ValueError(f"dataset '{config.data.name}' has no image shape, so there is nothing to draw as images")
    upscale = upscale or max(1, 112 // splits.image_shape[-1])
    device = next(vae.parameters()).device
    pyro.set_rng_seed(seed)
    samples = vae.sample_means(num_samples).cpu()
    x = eval_split(config, splits, split)[: nrow * max(1, num_samples // (2 * nrow))]
    rows = []
    for start in range(0, len(x), nrow):
        chunk = x[start : start + nrow]
        rows += [chunk, vae.reconstruct(chunk.to(device)).cpu()]
    brightness = 255.0 if data_representation(config) == "8-bit" else 1.0  # pictures show [0, 1]
    return {
        "samples": image_grid(samples / brightness, splits.image_shape, nrow, upscale),
        "reconstructions": image_grid(torch.cat(rows) / brightness, splits.image_shape, nrow, upscale),
    }


def write_pictures(run_dir, grids: dict) -> dict:
    """Write each of :func:`picture_grids` as ``<name>.png`` into the run folder, under its lock; returns the
    paths."""
    import torchvision.utils

    paths = {name: os.path.join(run_dir, f"{name}.png") for name in grids}
    with RunLock(run_dir, command_line()):
        for name, grid in grids.items():
            atomic_write(paths[name], lambda f, grid=grid: torchvision.utils.save_image(grid, f, format="png"))
    return paths


def read_metrics(run_dir) -> list:
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        return json.load(f)
