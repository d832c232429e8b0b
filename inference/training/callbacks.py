"""Hooks into :class:`~inference.training.trainer.Trainer`'s loop: checkpoints, schedules, early stopping.

A callback overrides any of ``on_train_begin(trainer)``, ``on_epoch_begin(trainer, epoch)`` (epochs counted from
0), ``on_step_end(trainer)``, ``on_epoch_end(trainer, entry)`` (``entry`` is the epoch's metrics, already
appended to ``trainer.metrics``; a callback may add to it) and ``on_train_end(trainer)``. A callback with state
(a best value, a scheduler) returns it from ``state_dict`` so that the checkpoint carries it. Callbacks run in
the order given, so a :class:`Checkpoint` goes last.
"""

import math
import os
from typing import Callable

from inference.training import distributed
from inference.training.checkpoint import load_checkpoint, save_checkpoint


class Callback:
    def on_train_begin(self, trainer):
        pass

    def on_epoch_begin(self, trainer, epoch: int):
        pass

    def on_step_end(self, trainer):
        pass

    def on_epoch_end(self, trainer, entry: dict):
        pass

    def on_train_end(self, trainer):
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict):
        pass


class Checkpoint(Callback):
    """Write :meth:`Trainer.state_dict` (plus ``extra``, e.g. the run's configuration) to ``path`` atomically after
    every epoch; with ``resume``, restore it before training when the file exists.

    In a process group every rank gathers the state (each rank's random generators are part of it) and rank 0
    alone writes; every rank restores from ``path``, which must therefore be on a file system they share."""

    def __init__(self, path, resume: bool = False, extra: dict = None):
        self.path = os.fspath(path)
        self.resume = resume
        self.extra = dict(extra or {})
        self.digest = None  # of the last checkpoint written or restored
        self._saved = None

    def saved_state(self):
        """The verified checkpoint to resume from (read once), or ``None`` when there is none to resume. Call it
        before writing anything that depends on it: a damaged checkpoint is then refused with nothing changed."""
        if self._saved is None and self.resume and os.path.exists(self.path):
            self._saved = load_checkpoint(self.path)
        return self._saved

    def on_train_begin(self, trainer):
        state = self.saved_state()
        if state is not None:
            trainer.load_state_dict(state)
            self.digest = state["sha256"]
            self._saved = None  # restored: the trainer holds it now

    def on_epoch_end(self, trainer, entry):
        state = trainer.state_dict()
        if distributed.is_main_process():
            self.digest = save_checkpoint({**self.extra, **state}, self.path)


class OnEpochEnd(Callback):
    """Call ``fn(metrics)`` with the metrics so far after every epoch (e.g. to write ``metrics.json``)."""

    def __init__(self, fn: Callable[[list], None]):
        self.fn = fn

    def on_epoch_end(self, trainer, entry):
        self.fn(trainer.metrics)


class KLWeightSchedule(Callback):
    """Set the estimator's ``kl_weight`` to ``schedule(epoch)`` before each epoch (KL annealing or warm-up:
    Bowman et al. 2016; Sonderby et al. 2016), and record it in the epoch's metrics."""

    def __init__(self, schedule: Callable[[int], float]):
        self.schedule = schedule

    def on_train_begin(self, trainer):
        if not hasattr(trainer.loss, "kl_weight"):
            raise ValueError(
                f"a KL weight schedule needs an estimator with a kl_weight; {type(trainer.loss).__name__} has none "
                "(every estimator from inference.estimator() has one)"
            )

    def on_epoch_begin(self, trainer, epoch):
        trainer.loss.kl_weight = float(self.schedule(epoch))

    def on_epoch_end(self, trainer, entry):
        entry["kl_weight"] = trainer.loss.kl_weight


def linear_warmup(epochs: int, start: float = 0.0):
    """``epoch -> beta`` rising linearly from ``start`` at epoch 0 to 1 at epoch ``epochs`` and staying there."""
    if epochs < 1:
        raise ValueError(f"a KL warm-up needs at least one epoch, got {epochs}")
    return lambda epoch: min(1.0, start + (1.0 - start) * epoch / epochs)


class LearningRateSchedule(Callback):
    """Step a ``torch.optim.lr_scheduler`` built by ``make(optimizer)`` after every epoch; its state is
    checkpointed. The epoch's learning rate is recorded in its metrics as ``lr``."""

    def __init__(self, make: Callable):
        self.make = make
        self.scheduler = None
        self._pending_state = None

    def on_train_begin(self, trainer):
        if self.scheduler is None:
            self.scheduler = self.make(trainer.optimizer)
        if self._pending_state is not None:
            self.scheduler.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_epoch_end(self, trainer, entry):
        entry["lr"] = trainer.optimizer.param_groups[0]["lr"]
        self.scheduler.step()

    def state_dict(self):
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state):
        if state:
            if self.scheduler is None:
                self._pending_state = state
            else:
                self.scheduler.load_state_dict(state)


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a metric of the epoch's entry) has not improved by ``min_delta`` for ``patience``
    epochs; ``mode`` is ``"max"`` for objectives (default) or ``"min"``. The stopping epoch's entry gets
    ``"stopped_early": True``."""

    def __init__(self, monitor: str = "val_log_px", patience: int = 10, mode: str = "max", min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.monitor = monitor
        self.patience = patience
        self.sign = 1.0 if mode == "max" else -1.0
        self.min_delta = min_delta
        self.best = -math.inf
        self.epochs_without_improvement = 0

    def on_epoch_end(self, trainer, entry):
        if self.monitor not in entry:
            raise ValueError(
                f"early stopping monitors '{self.monitor}', which the epoch's metrics lack (they have "
                f"{sorted(entry)}); give validation data or monitor another metric"
            )
        value = self.sign * entry[self.monitor]
        if value > self.best + self.min_delta:
            self.best, self.epochs_without_improvement = value, 0
        else:
            self.epochs_without_improvement += 1
        if self.epochs_without_improvement >= self.patience:
            entry["stopped_early"] = True
            trainer.should_stop = True

    def state_dict(self):
        return {"best": self.best, "epochs_without_improvement": self.epochs_without_improvement}

    def load_state_dict(self, state):
        self.best = state["best"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
