"""Training a run into its folder.

A run folder holds

* ``config.json``: the :class:`~pyro_vae.config.RunConfig` tree that built the data, model, estimator and
  evaluation (it rebuilds the run exactly),
* ``metrics.json``: one entry per epoch (objectives in nats per example, training and validation seconds),
* ``checkpoint.pt``: parameters, optimizer, estimator and RNG state with a checksum
  (``torch.load(..., weights_only=True)``),
* ``status.json``: training, finished, interrupted or failed; epochs done; the checkpoint's checksum,

and, after :func:`~pyro_vae.runs.evaluate_run` and :func:`~pyro_vae.runs.sample_run`, evaluations and pictures.
Nothing is written before the whole run (configuration, data, model, estimator) has been built, so a refused
run leaves no folder behind; every file is written atomically, and the command holds the folder's lock
(:mod:`pyro_vae.folder`) while it writes.
"""

import contextlib
import dataclasses
import os
import shutil

import torch

from inference.denormals import flushing_denormals
from inference.training import distributed
from inference.training.budget import Spent, check_budget_fits_the_process_group
from inference.training.callbacks import (
    Checkpoint,
    KLWeightSchedule,
    LearningRateSchedule,
    OnEpochEnd,
    linear_warmup,
)
from inference.training.schedules import LR_SCHEDULES
from inference.training.trainer import Trainer
from pyro_vae.config import ConfigError, RunConfig, config_from, resolve_device, same_but_for_epochs
from pyro_vae.data.mapped import RowChunks
from pyro_vae.folder import (
    RunLock,
    command_line,
    read_status,
    retire_evaluations,
    write_json,
    write_status,
)
from pyro_vae.runs.evaluation import check_evaluation_method
from pyro_vae.runs.loading import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, read_config_tree
from pyro_vae.runs.preparation import (
    check_data_support,
    estimator_for,
    eval_split,
    model_for,
    prepare_data,
    training_batches,
)
from pyro_vae.vae import VAE


@dataclasses.dataclass
class TrainedRun:
    """What :func:`train_run` leaves: the configuration it trained (the one in ``config.json``), the trained VAE
    and ``metrics.json``'s entries, one per epoch."""

    config: RunConfig
    vae: VAE
    metrics: list


def train_run(config, run_dir, *, resume=False, overrides=(), progress=True, callbacks=()) -> TrainedRun:
    """Train the VAE described by ``config`` and write the run folder ``run_dir``: for ``train.epochs`` epochs, or
    until ``train.budget`` (steps, likelihood evaluations or seconds) is spent, refused before anything is written
    when it fits no step.

    With ``resume`` the run continues from its checkpoint; ``config`` may then differ from the saved one only in
    ``train.epochs``. Pass ``config=None`` to take the saved configuration with ``overrides`` (``(path, value)``
    pairs, as :func:`~pyro_vae.config.apply_overrides` takes; again only ``train.epochs`` may change). ``callbacks``
    (:class:`~inference.training.callbacks.Callback`) run after each epoch's checkpoint and records, e.g. a
    search's pruning; one that sets ``trainer.should_stop`` ends training after that epoch.

    Launched by ``torchrun`` (or ``pyro-vae train --nproc N``), every process runs this function: they join one
    process group, each trains on its shard of every minibatch with gradients averaged over processes
    (:mod:`inference.training.distributed`; ``train.batch_size`` stays the global batch), and rank 0 alone writes
    the folder, which must be on a file system every process can read to resume. Every process flushes denormal
    floats as ``config.flush_denormals`` says, for the duration of the call.
    """
    resume = resume and os.path.exists(os.path.join(run_dir, CONFIG_FILE))  # nothing to resume: a fresh run
    config = _config_to_resume(config, overrides, run_dir) if resume else config
    if config is None:
        raise ConfigError("train_run needs a configuration (or resume=True with a run folder that has one)")
    with flushing_denormals(config.flush_denormals):
        return _train(config, run_dir, resume, progress, list(callbacks))


def _train(config: RunConfig, run_dir, resume, progress, extra_callbacks) -> TrainedRun:
    device = distributed.init_from_environment(resolve_device(config.device))
    main_process = distributed.is_main_process()
    splits = prepare_data(config)
    vae = model_for(config, splits).to(device)
    loss = estimator_for(config, vae)
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    train_batches = training_batches(splits, config.train.batch_size, generator, device)
    val_x = eval_split(splits, "val").to(device)
    check_data_support(config, vae, val_x, "validation")
    if not splits.binarized:  # 0/1 likelihoods see binarized draws of the grey levels, checked above
        check_data_support(config, vae, eval_split(splits, "train").to(device), "training")
    val_batches = RowChunks(val_x, 500)
    checkpoint_path = os.path.join(run_dir, CHECKPOINT_FILE)
    checkpoint = Checkpoint(checkpoint_path, resume=resume)
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
        write_status(
            run_dir,
            epochs_done=len(metrics),
            checkpoint={"epoch": len(metrics), "sha256": checkpoint.digest},
            spent=Spent.from_metrics(metrics[-1]).as_metrics(),
        )

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
    budget = config.train.budget.budget()  # None: train.epochs epochs
    check_budget_fits_the_process_group(budget)  # before the folder is touched
    check_budget_fits_a_step(budget, trainer)
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
                    epochs=None if budget else config.train.epochs,
                    budget=dataclasses.asdict(config.train.budget),
                    started=command_line(),
                    device=device.type,
                    processes=distributed.world_size(),
                )
            trainer.fit(
                train_batches,
                epochs=None if budget else config.train.epochs,
                budget=budget,
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
    return TrainedRun(config, vae, trainer.metrics)


def check_budget_fits_a_step(budget, trainer: Trainer) -> None:
    """Refuse a budget smaller than one step on a full minibatch (after ``trainer.prepare``): it would train
    nothing."""
    step = trainer.full_step_evaluations()
    if budget is not None and budget.is_spent(Spent(), step):
        needed = {"steps": 1, "evaluations": step}[budget.kind]
        raise ConfigError(
            f"a budget of {budget.describe()} fits no step of this run (one step computes {step:,} likelihood "
            f"evaluations: {trainer.evaluations_per_example()} per example of a minibatch): give --budget "
            f"{budget.kind}={needed} or more"
        )


def _remove_run_files(run_dir, remove_folder):
    if remove_folder:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in (CONFIG_FILE, METRICS_FILE, "status.json", ".lock"):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)


def _config_to_resume(config, overrides, run_dir) -> RunConfig:
    """The configuration a resumed run trains: ``config``, or the saved one with ``overrides``, checked once and
    refused where it differs from the saved one in more than ``train.epochs`` or asks for fewer epochs than done."""
    tree = read_config_tree(run_dir)
    if config is None:
        config = config_from(tree, overrides)
    saved = RunConfig.from_dict(tree, checked=False)  # compared with the checked one, so not checked again
    done = read_status(run_dir).get("epochs_done", 0)
    if saved.train.budget.kind == "epochs" and config.train.epochs < done:
        raise ConfigError(
            f"'{run_dir}' has trained {done} epochs, more than the {config.train.epochs} asked for; a run cannot "
            f"go back: resume with --epochs {done} (as it is) or more, or train a new run into another --out folder"
        )
    if saved.train.budget != config.train.budget:
        budget = saved.train.budget
        raise ConfigError(
            f"'{run_dir}' trains to a budget of {budget.describe(saved.train.epochs)}, and --resume continues it to "
            "that budget only: its last epoch stops part-way, so a run continued to another budget would not be the "
            "run that budget trains from the start. Resume without --budget, or train a new run with the other "
            "budget into another --out folder"
        )
    if not same_but_for_epochs(saved, config):
        raise ConfigError(
            f"--resume with a configuration that differs from {os.path.join(run_dir, CONFIG_FILE)} in more than "
            "train.epochs; resume with `pyro-vae train --resume --out DIR [--epochs N]` alone, or train into a "
            "new --out folder"
        )
    return config
