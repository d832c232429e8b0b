r"""Training a Pyro model/guide pair with a gradient estimator and a ``torch.optim`` optimizer.

The trainer minimizes an estimator's loss (any :class:`pyro.infer.ELBO`-style object with
``differentiable_loss(model, guide, *args)``; every estimator of :mod:`inference.objectives` is one) over the
parameters the model, the guide and the estimator read, as Pyro advises for plain PyTorch optimizers (the
docstring of :meth:`pyro.infer.ELBO.__call__`)::

    loss = estimator.differentiable_loss(model, guide, *batch)
    optimizer.zero_grad(); loss.backward(); optimizer.step()

The loss estimates the negative objective of the **whole training set** (a data plate with ``size=N`` and the
minibatch as subsample scales each minibatch term by ``N / B``), so the reported objectives are divided by ``N``:

* ``train_objective``: the epoch's minibatch estimates averaged, in nats per example (higher is better),
* ``val_elbo`` and ``val_log_px``: the validation set's ELBO and ``val_num_samples``-sample importance-weighted
  bound per example (:func:`evaluate_objectives`; plate scales ignored),
* ``train_seconds``, ``val_seconds`` and ``seconds``: wall-clock time of the epoch's parts and of the whole,
* ``steps``, ``likelihood_evaluations`` and ``elapsed_seconds``: what the run has spent up to the epoch's end,
  counted over resumes (:mod:`inference.training.budget`); a :class:`~inference.training.budget.Budget` passed to
  :meth:`Trainer.fit` ends training when the next step would exceed it, and the last epoch records
  ``budget_spent``.

:meth:`Trainer.train_epoch` queues its steps on the device: with a fused optimizer nothing is read back between
checks every ``check_every`` steps, and a step whose loss or gradient is not finite changes nothing (the optimizer
skips it on the device) and is named at the next check, as :meth:`Trainer.step` names it at once.

The parameters are found once, by running the loss under a parameter-only trace on the first batch: the
``nn.Parameter`` of a module-local PyroModule, the leaves of plain ``pyro.param`` sites (kept in Pyro's global
param store), and those of the estimator itself (a learned baseline). :meth:`Trainer.state_dict` holds all of
them, the optimizer's and the estimator's state and every random generator, so training resumed from a
checkpoint continues exactly as an uninterrupted run would have.

Inside a ``torch.distributed`` process group (``torchrun``) the same loop trains data-parallel: every rank passes
the same global batches, steps on its shard of each, and DistributedDataParallel averages the gradients, so the
full-data scale holds (:mod:`inference.training.distributed`).

Callbacks (:mod:`inference.training.callbacks`) hook into the loop for checkpoints, metrics files, KL and
learning-rate schedules and early stopping; a bandit or a search drives :meth:`Trainer.step` and
:meth:`Trainer.train_epoch` itself.
"""

import contextlib
import copy
import math
import time
from typing import NamedTuple, Optional, Sequence

import pyro
import pyro.poutine as poutine
import torch
from torch import nn
from tqdm.auto import tqdm

from inference.data_rows import rows_in
from inference.importance import guess_max_plate_nesting
from inference.objectives.estimators import Estimator
from inference.parameters import params_read_by
from inference.training import distributed
from inference.training.budget import Budget, Spent, check_budget_fits_the_process_group
from inference.training.checkpoint import get_rng_state, set_rng_state
from inference.training.optimizers import OPTIMIZERS, build_optimizer, skips_on_device


@torch.no_grad()
def evaluate_objectives(model, guide, batches, num_samples=1, data_plate="data", max_plate_nesting=None):
    """Mean per-example ELBO and ``num_samples``-sample importance-weighted bound over ``batches``; in a process
    group each rank scores its shard of every batch and the sums are added over ranks."""
    from inference.evaluation.log_marginal_likelihood import importance_log_weights, summarize_log_weights

    elbo_sum, log_px_sum, count = 0.0, 0.0, 0
    for batch in batches:
        batch = distributed.shard(batch, distributed.rank(), distributed.world_size())
        if batch_size_of(batch) == 0:
            continue
        log_w = importance_log_weights(
            model, guide, *batch, num_samples=num_samples, data_plate=data_plate, max_plate_nesting=max_plate_nesting
        )
        log_px, elbo, _, _ = summarize_log_weights(log_w)
        elbo_sum = elbo_sum + elbo.sum(dtype=torch.float64)  # on the device: one read at the end
        log_px_sum = log_px_sum + log_px.sum(dtype=torch.float64)
        count += elbo.numel()
    elbo_sum, log_px_sum, count = distributed.all_reduce_sum([float(elbo_sum), float(log_px_sum), count])
    return {"elbo": elbo_sum / count, "log_px": log_px_sum / count}


def training_set_size(batches, num_data=None) -> int:
    """``num_data`` if given, else the size the ``batches`` carry (:func:`batches` sets ``num_data``)."""
    num_data = num_data or getattr(batches, "num_data", None)
    if not num_data:
        raise ValueError("training needs the training set size: pass num_data=N or batches with num_data")
    return num_data


def batch_size_of(batch) -> int:
    """The number of data points in a batch: the rows of its first batched argument (:mod:`inference.data_rows`)."""
    size = rows_in(batch, default=None)
    if size is None:
        raise ValueError("a training batch must contain at least one tensor whose first dimension indexes data points")
    return size


class Trainer:
    """Trains ``model``/``guide`` under the estimator ``loss`` with a ``torch.optim`` optimizer.

    :param model, guide: a Pyro model/guide pair whose data points sit in the plate ``data_plate``.
    :param loss: an estimator (``inference.estimator(name, ...)``) or any object with ``differentiable_loss``.
    :param torch.nn.Module module: the module holding the model's and guide's parameters (checkpointed by its
        ``state_dict``, buffers included). Parameters read through plain ``pyro.param`` are found and
        checkpointed by name.
    :param str optimizer: a name from :data:`OPTIMIZERS` (``torch.optim`` classes).
    :param dict optimizer_options: keyword options of the optimizer, e.g. ``{"lr": 1e-3}``. The fused kernel is
        used where the optimizer has one (:mod:`inference.training.optimizers`); ``{"fused": False}`` turns it off.
    :param float clip_norm: clip the global gradient norm to this value before every step.
    :param callbacks: :class:`~inference.training.callbacks.Callback` objects, called in order.
    :param torch.Generator generator: the generator driving the training batches (shuffling, binarization);
        checkpointed for exact resume.
    :param int max_plate_nesting: the model's plate nesting; read from ``module.max_plate_nesting`` or guessed
        once from the first batch.
    :param str on_non_finite: ``"stop"`` (raise :class:`FloatingPointError`) or ``"rollback"``: return to the state
        at the start of the epoch, halve the learning rate and train the epoch again (at most ``max_rollbacks``
        times in a run); the epoch's metrics then record ``rolled_back`` and the new ``lr``.
    :param bool validate_every_step: run Pyro's checks of distribution arguments and sample values on every step
        (the default). ``False`` leaves them out of the steps, for data the caller has checked against the
        model's supports (:func:`pyro_vae.runs.train_run` does, before training): they cost about a tenth of a
        small step, and a non-finite loss or gradient still stops training and names its site.
    :param int check_every: in :meth:`train_epoch` with a fused optimizer, the steps between reads of the losses
        back from the device (each read waits for the queued work; a non-finite step is caught either way, before
        it changes the parameters).
    """

    def __init__(
        self,
        model,
        guide,
        loss,
        *,
        module: Optional[nn.Module] = None,
        optimizer: str = "adam",
        optimizer_options: Optional[dict] = None,
        clip_norm: Optional[float] = None,
        callbacks: Sequence = (),
        generator: Optional[torch.Generator] = None,
        data_plate: str = "data",
        max_plate_nesting: Optional[int] = None,
        on_non_finite: str = "stop",
        max_rollbacks: int = 3,
        validate_every_step: bool = True,
        check_every: int = 32,
    ):
        if on_non_finite not in ("stop", "rollback"):
            raise ValueError(f"on_non_finite must be 'stop' or 'rollback', got {on_non_finite!r}")
        if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
            raise ValueError(f"clip_norm must be a positive finite number or None, got {clip_norm}")
        self.model = model
        self.guide = guide
        self.loss = loss
        self.module = module
        self.optimizer_name = optimizer
        self.optimizer_options = dict(optimizer_options or {})
        _check_learning_rate(self.optimizer_options)
        OPTIMIZERS.get(optimizer)  # an unknown name fails here, not at the first step
        self.clip_norm = clip_norm
        self.callbacks = list(callbacks)
        self.generator = generator
        self.data_plate = data_plate
        self.max_plate_nesting = (
            max_plate_nesting if max_plate_nesting is not None else getattr(module, "max_plate_nesting", None)
        )
        self.on_non_finite = on_non_finite
        self.max_rollbacks = max_rollbacks
        self.validate_every_step = validate_every_step
        if not (isinstance(check_every, int) and check_every >= 1):
            raise ValueError(f"check_every must be a positive number of steps, got {check_every!r}")
        self.check_every = check_every
        self.rollbacks = 0
        self.metrics = []
        self.should_stop = False
        self.budget: Optional[Budget] = None  # set by fit()
        self.budget_exhausted = False  # the budget stopped an epoch part-way
        self.spent = Spent()  # up to the last step; restored from the metrics on resume
        self._full_batch_rows = None  # rows of a full minibatch, seen by prepare()
        self.optimizer = None
        self.store_params = {}  # plain pyro.param leaves, by name
        self.loss_fn = None  # differentiable_loss, or its DistributedDataParallel wrapper in a process group
        self._trained = []  # parameters(), fixed once setup() has built the optimizer over them

    # -- parameters and optimizer ------------------------------------------------------------------------------

    def setup(self, *args, **kwargs):
        """Find the parameters by one run of the loss on ``args`` (a batch) and build the optimizer (once)."""
        if self.optimizer is not None:
            return
        if self.max_plate_nesting is None:
            self.max_plate_nesting = guess_max_plate_nesting(self.model, self.guide, *args, **kwargs)
        estimator_state = _estimator_state(self.loss)
        read = params_read_by(self.loss.differentiable_loss, self.model, self.guide, *args, **kwargs)
        _load_estimator_state(self.loss, estimator_state)  # the trial run must not move a running baseline
        owned = {id(p) for p in self._owned_parameters()}
        self.store_params = {name: leaf for name, leaf in read.items() if id(leaf) not in owned}
        params = self._trained = self.parameters()
        if not params:
            raise ValueError(
                "model, guide and estimator read no parameters (nn.Module, PyroModule or pyro.param), so there is "
                "nothing to train"
            )
        self.optimizer = build_optimizer(self.optimizer_name, params, self.optimizer_options)
        self.loss_fn = self._data_parallel(args, kwargs) if distributed.is_distributed() else self._loss
        if distributed.rank() > 0:  # every rank draws its own latent noise; rank 0 keeps the one-process stream
            torch.manual_seed((torch.initial_seed() + 7919 * distributed.rank()) % 2**63)

    def _loss(self, *args, **kwargs):
        return self.loss.differentiable_loss(self.model, self.guide, *args, **kwargs)

    def _data_parallel(self, args, kwargs):
        """The loss wrapped in DistributedDataParallel, which averages gradients over ranks in the backward pass
        (and broadcasts rank 0's parameters at the start, so every rank begins from the same model). A trial
        gradient on the first batch tells it whether some parameter gets no gradient (then it looks for such
        parameters every step)."""
        from torch.nn.parallel import DistributedDataParallel

        from inference.importance import forked_rng

        if self.store_params:
            raise ValueError(
                f"parameters {sorted(self.store_params)[:5]} live in Pyro's global param store, which data-parallel "
                "training cannot synchronize: keep them in a PyroModule passed as module= (pyro.settings "
                "module_local_params), or train in one process"
            )
        wrapper = _LossModule(self)
        trained = [p for p in wrapper.parameters() if p.requires_grad]
        estimator_state = _estimator_state(self.loss)
        with forked_rng():
            grads = torch.autograd.grad(self._loss(*args, **kwargs), trained, allow_unused=True)
        _load_estimator_state(self.loss, estimator_state)
        unused = any(g is None for g in grads)
        device_ids = [next(wrapper.parameters()).device.index] if next(wrapper.parameters()).is_cuda else None
        return DistributedDataParallel(wrapper, device_ids=device_ids, find_unused_parameters=unused)

    def _owned_parameters(self):
        module_params = list(self.module.parameters()) if self.module is not None else []
        return module_params + list(getattr(self.loss, "parameters", list)())

    def parameters(self) -> list:
        """Every trained tensor: the module's, the estimator's, then plain ``pyro.param`` leaves."""
        return self._owned_parameters() + list(self.store_params.values())

    # -- one step, one epoch -----------------------------------------------------------------------------------

    def step(self, *args, **kwargs) -> float:
        """One gradient step on a batch; returns the loss (the negative full-data objective estimate).

        It reads the loss back to test it, so each call waits for the device; :meth:`train_epoch` steps without.

        :raises FloatingPointError: before the parameters change, when the loss or a gradient is not finite,
            naming the sample site and term (or the parameter) where it happened.
        """
        if self.optimizer is None:
            self.setup(*args, **kwargs)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._run_loss(args, kwargs)
        value = self._global_loss(loss, batch_size_of(args)).item()
        if not math.isfinite(value):
            if distributed.is_distributed() and loss.requires_grad:
                loss.backward()  # the other ranks wait in the gradient all-reduce: finish it, then stop together
            raise self._non_finite_loss(value, args, kwargs)
        total_norm = self._gradients(loss)
        if not torch.isfinite(total_norm):
            raise self._non_finite_gradient(value)
        self.optimizer.step()
        return value

    def _run_loss(self, args, kwargs) -> torch.Tensor:
        with contextlib.nullcontext() if self.validate_every_step else pyro.validation_enabled(False):
            return self.loss_fn(*args, **kwargs)

    def _gradients(self, loss) -> torch.Tensor:
        """Backpropagate ``loss`` and clip; returns the gradients' global norm (one pass over them: their
        finiteness, and the clipping)."""
        if loss.requires_grad:
            loss.backward()
        grads = [p.grad for p in self._trained if p.grad is not None]
        total_norm = nn.utils.get_total_norm(grads)
        if self.clip_norm is not None:
            nn.utils.clip_grads_with_norm_(self._trained, self.clip_norm, total_norm)
        return total_norm

    def _queued_step(self, args, skip: torch.Tensor) -> tuple:
        """One step that reads nothing back from the device: ``(global loss, finite)`` as tensors.

        ``skip`` (a float32 tensor on the device, 0 or 1) is the fused optimizer's ``found_inf``: the kernel leaves the
        parameters and its state alone where it is 1. A step whose loss or gradient is not finite sets it, so that
        the parameters stay as they were before that step until :meth:`_check_queued` reads the flags."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._run_loss(args, {})
        global_loss = self._global_loss(loss, batch_size_of(args))
        finite = torch.isfinite(global_loss) & torch.isfinite(self._gradients(loss))
        skip.masked_fill_(~finite, 1.0)
        self.optimizer.step()
        return global_loss, finite

    def _check_queued(self, queued, skip) -> None:
        """Raise, as :meth:`step` would have, for the first of ``queued`` (each a :class:`QueuedStep`, since the last
        check) whose loss or gradient was not finite; the parameters are those it started from."""
        if not queued or not skip.item():
            return
        first = queued[torch.stack([step.finite for step in queued]).logical_not().nonzero()[0, 0].item()]
        args, value = first.args, first.loss.item()
        if not math.isfinite(value):
            raise self._non_finite_loss(value, args, {})
        self.optimizer.zero_grad(set_to_none=True)  # later steps overwrote that step's gradient: take it again
        self._gradients(self._run_loss(args, {}))
        raise self._non_finite_gradient(value)

    def _non_finite_loss(self, value, args, kwargs) -> FloatingPointError:
        where = non_finite_terms(self.model, self.guide, args, kwargs, self.named_parameters())
        return FloatingPointError(
            f"non-finite loss ({value}) at epoch {len(self.metrics) + 1}: {where}. Lower the learning rate, "
            "set clip_norm, or check the data against the likelihood; the last checkpoint is unchanged"
        )

    def _non_finite_gradient(self, value) -> FloatingPointError:
        """The error for a step whose gradient norm is not finite: the parameters whose gradients hold NaN or inf,
        or, where every entry is finite, the largest one (the norm overflowed)."""
        grads = [(name, p.grad) for name, p in self.named_parameters() if p.grad is not None]
        bad = [name for name, grad in grads if not grad.isfinite().all()]
        if bad or not grads:
            where = f"in {', '.join(bad[:5])}{' and more' if len(bad) > 5 else ''}"
        else:
            name, grad = max(grads, key=lambda named: named[1].abs().max().item())
            largest = f"the largest entry is {grad.abs().max().item():.3g}, in {name}"
            if torch.isfinite(nn.utils.get_total_norm([grad for _, grad in grads])):
                where = f"(a fresh draw of it from the same parameters is finite: {largest})"
            else:
                where = f"(its norm overflows: {largest})"
        return FloatingPointError(
            f"non-finite gradient at epoch {len(self.metrics) + 1} {where} (the loss was {value:.6g}): lower the "
            "learning rate or set clip_norm; the parameters were not changed and the last checkpoint is unchanged"
        )

    @staticmethod
    def _global_loss(loss, batch_size) -> torch.Tensor:
        """The loss, detached; in a process group, of the global batch: ``sum_r b_r loss_r / sum_r b_r``."""
        loss = loss.detach()
        if not distributed.is_distributed():
            return loss
        weighted = torch.stack([loss.double() * batch_size, torch.full_like(loss, batch_size, dtype=torch.float64)])
        weighted = distributed.sum_over_ranks(weighted)
        return (weighted[0] / weighted[1]).to(loss.dtype)

    def named_parameters(self):
        """``(name, tensor)`` for every trained tensor (module names, ``estimator.*``, Pyro param names)."""
        named = list(self.module.named_parameters()) if self.module is not None else []
        named += [(f"estimator.{i}", p) for i, p in enumerate(getattr(self.loss, "parameters", list)())]
        return named + list(self.store_params.items())

    def train_epoch(self, batches, num_data: Optional[int] = None, bar=None) -> float:
        """One pass over ``batches``; returns the mean per-example objective (``-loss / N`` averaged).

        With a fused optimizer (:mod:`inference.training.optimizers`) the steps read nothing back from the device:
        the losses add up on it, and every ``check_every`` steps one read tests them all. A step whose loss or
        gradient is not finite changes nothing (the kernel skips it, and every later one until the check), and the
        check raises :class:`FloatingPointError` for it as :meth:`step` does. Other optimizers check every step.

        In a process group every rank passes the same global ``batches`` and steps on its shard of each
        (:func:`~inference.training.distributed.shard`); a global batch too small to give every rank a row (the
        last one of an epoch, at most ``world_size - 1`` rows) is skipped by all ranks."""
        num_data = training_set_size(batches, num_data)
        rank, world_size = distributed.rank(), distributed.world_size()
        weighted_loss, queued, skip, rows = 0.0, [], None, 0
        start, spent_before = time.perf_counter(), self.spent
        per_example = self.evaluations_per_example()
        try:
            for batch in batches:
                batch_rows = batch_size_of(batch)
                if batch_rows < world_size:
                    continue
                evaluations = per_example * batch_rows
                if self.budget is not None:
                    self.spent = self.spent.with_seconds(spent_before.seconds + time.perf_counter() - start)
                    if not self.budget.allows(self.spent, evaluations):
                        self.budget_exhausted = self.should_stop = True
                        break
                rows += batch_rows
                args = distributed.shard(batch, rank, world_size)
                if self.optimizer is None:
                    self.setup(*args)
                if not skips_on_device(self.optimizer):
                    weighted_loss += self.step(*args) * batch_rows / num_data
                else:
                    if skip is None:  # float32 whatever the default dtype, as the fused kernels require
                        skip = torch.zeros((), dtype=torch.float32, device=self._trained[0].device)
                        self.optimizer.found_inf = skip
                    queued.append(QueuedStep(args, *self._queued_step(args, skip), batch_rows / num_data))
                    if len(queued) == self.check_every:
                        self._check_queued(queued, skip)
                        weighted_loss = weighted_loss + _weighted_sum(queued)
                        queued.clear()
                self.spent = self.spent.after_step(evaluations)
                self._call("on_step_end")
                if bar is not None:
                    bar.update()
            self._check_queued(queued, skip)
            weighted_loss = weighted_loss + _weighted_sum(queued)
        finally:
            if skip is not None:
                del self.optimizer.found_inf  # step() and later epochs start without it
            self.spent = self.spent.with_seconds(spent_before.seconds + time.perf_counter() - start)
        if self.budget_exhausted and rows:  # stopped by the budget part-way: the mean over the rows it trained on
            weighted_loss = weighted_loss * num_data / rows
        return -float(weighted_loss) / num_data

    def evaluations_per_example(self) -> int:
        """Likelihood evaluations a step spends per example of its minibatch: the estimator's particles (a Pyro
        ELBO that is not one of ours: its ``num_particles``)."""
        if isinstance(self.loss, Estimator):
            return self.loss.evaluations_per_example()
        return int(getattr(self.loss, "num_particles", 1))

    def validate(self, batches, num_samples: int = 10) -> dict:
        """``val_elbo`` and ``val_log_px`` (``num_samples``-sample bound), per example, on ``batches``."""
        values = evaluate_objectives(
            self.model, self.guide, batches, num_samples, self.data_plate, self.max_plate_nesting
        )
        return {"val_elbo": values["elbo"], "val_log_px": values["log_px"], "val_num_samples": num_samples}

    # -- the loop ----------------------------------------------------------------------------------------------

    def fit(
        self,
        train_batches,
        *,
        epochs: Optional[int] = None,
        budget: Optional[Budget] = None,
        val_batches=None,
        val_num_samples: int = 10,
        progress=True,
        num_data=None,
    ):
        """Train until ``epochs`` epochs are done (counting resumed ones), the ``budget`` is spent (then ``epochs``
        may be None: as many as it takes) or a callback stops it; returns the per-epoch metrics."""
        if budget is None and epochs is None:
            raise ValueError("fit needs epochs, a budget, or both")
        if epochs is not None and epochs < 0:
            raise ValueError(f"epochs must be non-negative, got {epochs}")
        check_budget_fits_the_process_group(budget)
        num_data = training_set_size(train_batches, num_data)
        self.budget, self.budget_exhausted = budget, False
        self.prepare(train_batches)
        self._call("on_train_begin")
        last = self.metrics[-1] if self.metrics else {}
        self.should_stop = bool(last.get("stopped_early")) or self._budget_spent()
        start_epoch = len(self.metrics)
        steps = len(train_batches)
        bar = tqdm(
            total=self._total_steps(epochs, train_batches, num_data),
            initial=self.spent.steps if budget is not None else min(start_epoch, epochs) * steps,
            disable=not progress or not distributed.is_main_process(),
            desc="train",
            unit="step",
        )
        with bar:
            epoch = start_epoch
            while epochs is None or epoch < epochs:
                if self.should_stop:
                    break
                self._call("on_epoch_begin", epoch)
                start, steps_before = time.perf_counter(), self.spent.steps
                entry = {"epoch": epoch + 1, **self._train_epoch_with_rollback(train_batches, bar, num_data)}
                entry["train_seconds"] = time.perf_counter() - start
                if self.spent.steps == steps_before and self.budget_exhausted:  # no step fitted: no epoch to record
                    break
                entry.update(self.spent.as_metrics())
                if budget is not None and (self.budget_exhausted or self._budget_spent()):
                    entry["budget_spent"] = True
                    self.should_stop = True
                if val_batches is not None:
                    val_start = time.perf_counter()
                    entry.update(self.validate(val_batches, val_num_samples))
                    entry["val_seconds"] = time.perf_counter() - val_start
                entry["seconds"] = time.perf_counter() - start
                self.metrics.append(entry)
                self._call("on_epoch_end", entry)
                bar.set_postfix({k: f"{v:.2f}" for k, v in entry.items() if k.startswith(("train_obj", "val_"))})
                epoch += 1
        self._call("on_train_end")
        return self.metrics

    def full_step_evaluations(self) -> int:
        """Likelihood evaluations of a step on a full minibatch (after :meth:`prepare`)."""
        return self.evaluations_per_example() * self._full_batch_rows

    def _budget_spent(self) -> bool:
        """Whether the budget leaves no room for another full minibatch's step: every epoch starts with one."""
        return self.budget is not None and self.budget.is_spent(self.spent, self.full_step_evaluations())

    def _total_steps(self, epochs, train_batches, num_data: int) -> Optional[int]:
        """The progress bar's length in steps (unknown for a budget in seconds without epochs)."""
        steps_per_epoch = len(train_batches)
        by_epochs = epochs * steps_per_epoch if epochs is not None else None
        budget = self.budget
        if budget is None or budget.kind == "seconds":
            return by_epochs
        if budget.kind == "steps":
            by_budget = int(budget.amount)
        else:  # whole epochs cost K x N; the last one stops after as many full minibatches as fit
            per_epoch = self.evaluations_per_example() * num_data
            whole, left = divmod(int(budget.amount), per_epoch)
            by_budget = whole * steps_per_epoch + min(left // self.full_step_evaluations(), steps_per_epoch)
        return by_budget if by_epochs is None else min(by_budget, by_epochs)

    def _train_epoch_with_rollback(self, train_batches, bar, num_data) -> dict:
        if self.on_non_finite == "stop":
            return {"train_objective": self.train_epoch(train_batches, num_data, bar=bar)}
        start_state = copy.deepcopy(self.state_dict())
        rolled_back = 0
        while True:
            try:
                objective = self.train_epoch(train_batches, num_data, bar=bar)
                break
            except FloatingPointError:
                if self.rollbacks >= self.max_rollbacks:
                    raise
                self.rollbacks += 1
                rolled_back += 1
                seconds = self.spent.seconds  # the attempt's time was spent: a budget in seconds counts it
                self.load_state_dict(start_state)  # restores the learning rates too: halve them from there
                self.spent = self.spent.with_seconds(seconds)
                for group in self.optimizer.param_groups:
                    group["lr"] = group["lr"] * 0.5**rolled_back
        entry = {"train_objective": objective}
        if rolled_back:
            entry.update(rolled_back=rolled_back, lr=self.optimizer.param_groups[0]["lr"])
        return entry

    def prepare(self, train_batches):
        """:meth:`setup` on the first of ``train_batches``, drawn without moving the batches' generator: one trial
        of the loss that finds the parameters and refuses what the estimator cannot handle, before training."""
        if self.optimizer is not None and self._full_batch_rows is not None:
            return
        state = self.generator.get_state() if self.generator is not None else None
        batch = next(iter(train_batches))
        if state is not None:
            self.generator.set_state(state)
        self._full_batch_rows = batch_size_of(batch)  # the first minibatch of an epoch is a full one
        if self.optimizer is None:
            self.setup(*batch)

    def _call(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # -- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: parameters, optimizer, estimator, callbacks, generators."""
        return {
            "epoch": len(self.metrics),
            "metrics": list(self.metrics),
            "module": self.module.state_dict() if self.module is not None else {},
            "params": {name: leaf.detach().clone() for name, leaf in self.store_params.items()},
            "estimator": _estimator_state(self.loss),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "callbacks": [callback.state_dict() for callback in self.callbacks],
            "rng": get_rng_state(),
            "rank_rng": distributed.all_gather_objects(get_rng_state()) if distributed.is_distributed() else None,
            "generator": self.generator.get_state() if self.generator is not None else None,
            "rollbacks": self.rollbacks,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (call after :meth:`setup`, so the parameters exist)."""
        if self.module is not None:
            self.module.load_state_dict(state["module"])
        missing = sorted(set(state["params"]) - set(self.store_params))
        if missing:
            raise ValueError(f"the checkpoint holds parameters {missing} that this model and guide never read")
        with torch.no_grad():
            for name, value in state["params"].items():
                self.store_params[name].copy_(value)
        _load_estimator_state(self.loss, state["estimator"])
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        for callback, callback_state in zip(self.callbacks, state["callbacks"]):
            callback.load_state_dict(callback_state)
        rank_rng = state.get("rank_rng")
        set_rng_state(rank_rng[distributed.rank() % len(rank_rng)] if rank_rng else state["rng"])
        if self.generator is not None and state["generator"] is not None:
            self.generator.set_state(state["generator"])
        self.metrics = list(state["metrics"])
        self.spent = Spent.from_metrics(self.metrics[-1] if self.metrics else None)
        self.rollbacks = state.get("rollbacks", 0)


class QueuedStep(NamedTuple):
    """A step :meth:`Trainer.train_epoch` took without reading back: its batch, its global loss and finiteness
    flag (tensors on the device), and its weight ``batch size / N`` in the epoch's objective."""

    args: tuple
    loss: torch.Tensor
    finite: torch.Tensor
    weight: float


def _weighted_sum(queued) -> torch.Tensor:
    """``sum_i weight_i loss_i`` of queued steps, in double precision, on the losses' device (0 for none)."""
    if not queued:
        return 0.0
    losses = torch.stack([step.loss for step in queued]).double()
    return torch.dot(losses, losses.new_tensor([step.weight for step in queued]))


class _LossModule(nn.Module):
    """The trainer's loss as a module that owns every trained parameter (the model's module and the estimator's
    own), the form DistributedDataParallel wraps."""

    def __init__(self, trainer: "Trainer"):
        super().__init__()
        self.module = trainer.module
        self.estimator_parameters = nn.ParameterList(getattr(trainer.loss, "parameters", list)())
        object.__setattr__(self, "trainer", trainer)  # not a submodule

    def forward(self, *args, **kwargs):
        return self.trainer._loss(*args, **kwargs)


@torch.no_grad()
def non_finite_terms(model, guide, args, kwargs, named_parameters=()) -> str:
    """Where a non-finite loss comes from: parameters holding NaN/inf, or the first sample site whose value or
    log density is not finite, by one draw of the guide and the model replayed on it."""
    bad = [name for name, p in named_parameters if not p.isfinite().all()]
    if bad:
        return f"parameters {', '.join(bad[:5])}{' and more' if len(bad) > 5 else ''} hold NaN or inf"
    from inference.importance import guide_and_model_traces, site_log_prob

    with poutine.block():
        guide_trace, model_trace = guide_and_model_traces(model, guide, *args, **kwargs)
    for where, trace in (("guide", guide_trace), ("model", model_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            role = "observed" if site["is_observed"] else "latent"
            if not torch.as_tensor(site["value"]).isfinite().all():
                return f"{where} site '{name}' ({role}) has a non-finite value"
            log_p = site_log_prob(site)
            if not log_p.isfinite().all():
                term = "log-likelihood" if site["is_observed"] else f"log density in the {where}"
                first, count = log_p[~log_p.isfinite()][0].item(), (~log_p.isfinite()).sum().item()
                return f"{where} site '{name}' ({role}): its {term} is {first} for {count} entries"
    return "no single site or parameter is non-finite on a fresh draw (the estimator's combination of terms is)"


def _check_learning_rate(options):
    lr = options.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"the learning rate must be a positive finite number, got {lr!r}")


def _estimator_state(loss) -> dict:
    return loss.state_dict() if hasattr(loss, "state_dict") else {}


def _load_estimator_state(loss, state):
    if hasattr(loss, "load_state_dict"):
        loss.load_state_dict(state)


def train(
    model,
    guide,
    loss,
    train_batches,
    *,
    epochs,
    val_batches=None,
    val_num_samples=10,
    progress=True,
    num_data=None,
    **options,
):
    """Build a :class:`Trainer` with ``options`` and :meth:`~Trainer.fit` it; returns the per-epoch metrics."""
    trainer = Trainer(model, guide, loss, **options)
    return trainer.fit(
        train_batches,
        epochs=epochs,
        val_batches=val_batches,
        val_num_samples=val_num_samples,
        progress=progress,
        num_data=num_data,
    )
