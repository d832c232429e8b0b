"""The SVI training loop: epochs over minibatches, per-example objectives, checkpoints and exact resume.

Works with any Pyro model/guide pair and any :class:`pyro.infer.ELBO`-style loss whose value estimates the negative
objective of the **whole training set** (the convention of Pyro's subsampling plates: a data plate with
``size=N`` and the minibatch as subsample scales each minibatch term by ``N / B``). The loop reports

* ``train_objective``: the minibatch estimates of the objective averaged over the epoch, divided by ``N``
  (nats per example; an ELBO-style objective, higher is better),
* ``val_elbo`` and ``val_log_px_K``: the validation set's ELBO and ``K``-sample importance-weighted bound per example,
  from :func:`inference.importance_log_weights`, which ignore any plate scaling,
* ``seconds``: the epoch's wall-clock time.

At the end of each epoch it writes one atomic checkpoint holding the parameters of ``module``, the optimizer state,
the metrics so far, the caller's ``config``, and the states of every random number generator involved, so that
training resumed from epoch ``e`` continues exactly as an uninterrupted run would have (the loss object's own state,
e.g. a score-function baseline's running average, is kept only if it lives in ``module`` or the param store).
"""

import math
import os
import time
from typing import Callable, Optional

import pyro
import pyro.optim
import torch
from pyro.infer import SVI
from torch import nn
from tqdm.auto import tqdm

from inference.evaluation.log_marginal_likelihood import importance_log_weights, summarize_log_weights
from inference.training.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state


@torch.no_grad()
def evaluate_objectives(model, guide, batches, num_samples=1, data_plate="data", max_plate_nesting=None):
    """Mean per-example ELBO and ``num_samples``-sample importance-weighted bound over ``batches``."""
    elbo_sum, log_px_sum, count = 0.0, 0.0, 0
    for batch in batches:
        log_w = importance_log_weights(
            model, guide, *batch, num_samples=num_samples, data_plate=data_plate, max_plate_nesting=max_plate_nesting
        )
        log_px, elbo, _, _ = summarize_log_weights(log_w)
        elbo_sum += elbo.sum().item()
        log_px_sum += log_px.sum().item()
        count += elbo.numel()
    return {"elbo": elbo_sum / count, f"log_px_{num_samples}": log_px_sum / count}


def linear_warmup(epochs: int, start: float = 0.0):
    """``epoch -> beta`` rising linearly from ``start`` at epoch 0 to 1 at epoch ``epochs`` and staying there."""
    if epochs < 1:
        raise ValueError(f"a KL warm-up needs at least one epoch, got {epochs}")
    return lambda epoch: min(1.0, start + (1.0 - start) * epoch / epochs)


def make_optimizer(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, clip_norm=None):
    """Pyro's Adam; with ``clip_norm`` each parameter's gradient norm is clipped to it before the step."""
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr}")
    clip_args = {"clip_norm": float(clip_norm)} if clip_norm else None
    return pyro.optim.Adam({"lr": lr, "betas": tuple(betas), "eps": eps}, clip_args=clip_args)


def train(
    model,
    guide,
    loss,
    train_batches,
    *,
    epochs: int,
    module: Optional[nn.Module] = None,
    optimizer=None,
    val_batches=None,
    val_num_samples: int = 10,
    num_data: Optional[int] = None,
    checkpoint_path=None,
    resume: bool = False,
    config: Optional[dict] = None,
    generator: Optional[torch.Generator] = None,
    data_plate: str = "data",
    progress: bool = True,
    on_epoch: Optional[Callable[[list], None]] = None,
    kl_weight_schedule: Optional[Callable[[int], float]] = None,
):
    """Run SVI for ``epochs`` epochs and return the list of per-epoch metrics.

    :param loss: an ELBO-style object (e.g. ``pyro.infer.Trace_ELBO()`` or ``inference.estimator(name)``).
    :param train_batches: a re-iterable of argument tuples for ``model``/``guide``, one per minibatch, with a
        ``num_data`` attribute (or pass ``num_data``): the training set size.
    :param module: the ``nn.Module`` (e.g. a ``PyroModule``) holding every trained parameter; checkpointed.
    :param optimizer: a ``pyro.optim`` optimizer; default :func:`make_optimizer`.
    :param val_batches: optional re-iterable of validation argument tuples.
    :param checkpoint_path: where to write a checkpoint after every epoch (atomically).
    :param resume: continue from ``checkpoint_path`` if it exists.
    :param config: a JSON-like dict stored in the checkpoint (how to rebuild the model).
    :param generator: the ``torch.Generator`` driving ``train_batches``' shuffling; checkpointed for exact resume.
    :param on_epoch: called after each epoch with the list of metrics so far (resumed epochs included).
    :param kl_weight_schedule: ``epoch -> beta`` (epochs counted from 0), set as ``loss.kl_weight`` before each
        epoch: KL annealing / warm-up (Bowman et al. 2016; Sonderby et al. 2016). Needs a loss with ``kl_weight``.
    """
    num_data = num_data or getattr(train_batches, "num_data", None)
    if not num_data:
        raise ValueError("train() needs the training set size: pass num_data=N or batches with a num_data attribute")
    if epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {epochs}")
    if kl_weight_schedule is not None and not hasattr(loss, "kl_weight"):
        raise ValueError(
            f"a KL weight schedule needs a loss with a kl_weight attribute; {type(loss).__name__} has none "
            "(the estimators from inference.estimator() have one)"
        )
    optimizer = optimizer or make_optimizer()
    svi = SVI(model, guide, optimizer, loss)
    metrics = []
    if resume and checkpoint_path is not None and os.path.exists(checkpoint_path):
        metrics = _restore(load_checkpoint(checkpoint_path), module, optimizer, generator)
    start_epoch = len(metrics)
    steps_per_epoch = len(train_batches)
    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=min(start_epoch, epochs) * steps_per_epoch,
        disable=not progress,
        desc="train",
        unit="step",
    )
    with bar:
        for epoch in range(start_epoch, epochs):
            start = time.perf_counter()
            if kl_weight_schedule is not None:
                loss.kl_weight = float(kl_weight_schedule(epoch))
            weighted_loss = 0.0
            for batch in train_batches:
                batch_loss = svi.step(*batch)
                if not math.isfinite(batch_loss):
                    raise FloatingPointError(
                        f"non-finite loss ({batch_loss}) at epoch {epoch + 1}: lower the learning rate, set "
                        "clip_norm, or check the data against the likelihood; the last checkpoint is unchanged"
                    )
                weighted_loss += batch_loss * _batch_size(batch) / num_data
                bar.update()
            entry = {"epoch": epoch + 1, "train_objective": -weighted_loss / num_data}
            if kl_weight_schedule is not None:
                entry["kl_weight"] = loss.kl_weight
            if val_batches is not None:
                val = evaluate_objectives(model, guide, val_batches, val_num_samples, data_plate)
                entry.update({f"val_{k}": v for k, v in val.items()})
            entry["seconds"] = time.perf_counter() - start
            metrics.append(entry)
            bar.set_postfix({k: f"{v:.2f}" for k, v in entry.items() if k not in ("epoch", "seconds")})
            if checkpoint_path is not None:
                save_checkpoint(_state(metrics, module, optimizer, generator, config), checkpoint_path)
            if on_epoch is not None:
                on_epoch(metrics)
    return metrics


def _batch_size(batch):
    for arg in batch:
        if torch.is_tensor(arg) and arg.dim() > 0:
            return arg.shape[0]
    raise ValueError("a training batch must contain at least one tensor whose first dimension indexes data points")


def _state(metrics, module, optimizer, generator, config):
    return {
        "format": "pyro-vae-checkpoint-1",
        "epoch": len(metrics),
        "metrics": metrics,
        "module": module.state_dict() if module is not None else {},
        "optimizer": optimizer.get_state(),
        "rng": get_rng_state(),
        "generator": generator.get_state() if generator is not None else None,
        "config": config or {},
    }


def _restore(state, module, optimizer, generator):
    if module is not None:
        module.load_state_dict(state["module"])
    optimizer.set_state(state["optimizer"])
    set_rng_state(state["rng"])
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    return list(state["metrics"])
