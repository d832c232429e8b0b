"""Evaluating a trained run: log p(x) of a split by a registered method, with the diagnostics a reader of the
estimate needs, written as ``eval/<method>-<split>.json`` (the summary) and ``.nc`` (per-example estimates and
posterior draws, for arviz), each naming the checkpoint it scored."""

import contextlib
import dataclasses
import math
import os
import time
import warnings

import pyro
import torch

from inference import UnreliableEstimateWarning, log_marginal_likelihood, log_px_method
from inference.denormals import flushing_denormals
from inference.evaluation.diagnostics import (
    importance_resampled_latents,
    kl_from_prior,
    kl_per_dimension,
    posterior_means,
    save_inference_data,
)
from inference.training import distributed
from pyro_vae.config import ConfigError, RunConfig, config_from, resolve_device
from pyro_vae.data.mapped import RowChunks, first_rows
from pyro_vae.data.splits import Splits
from pyro_vae.folder import RunLock, command_line, evaluation_paths, require_finished, write_json
from pyro_vae.runs.loading import load_run, read_config_tree
from pyro_vae.runs.preparation import dequantization_correction, eval_split
from pyro_vae.vae import VAE

#: Burda et al. (2016): latent unit u is active when Cov_x(E_q[z_u | x]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01


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
    # Read once and checked once, before the lock: a folder that is not a run, or a method it cannot take, gets
    # its own message and leaves no lock file.
    config = config_from(
        read_config_tree(run_dir), evaluation_overrides(method, method_options, split, data_batch_size, seed)
    )
    evaluation = config.eval
    device = distributed.init_from_environment(resolve_device(device))
    main_process = distributed.is_main_process()
    lock = RunLock(run_dir, command_line()) if main_process else contextlib.nullcontext()
    with lock, flushing_denormals(config.flush_denormals):
        status = require_finished(run_dir, allow_unfinished)
        run = load_run(run_dir, device, config=config)
        splits, vae = run.splits, run.vae
        check_evaluation_method(config, vae)
        x = eval_split(splits, evaluation.split).to(device)
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
        correction = dequantization_correction(splits, x[0].numel())
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
            **units(splits, result, x),
            **({"dequantization_correction": correction, "log_px_density": density} if correction else {}),
            "dataset": config.data.name,
            "split": evaluation.split,
            "split_source": splits.split_source,
            "data_seed": config.data.seed,
            "train_seed": config.train.seed,
            "seed": evaluation.seed,
            "seconds": seconds,
            "checkpoint": run.checkpoint,
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
    if vae.guide_family.point_mass and method.needs_guide_density:
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
    if vae.guide_family.point_mass:
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


def evaluation_overrides(method, method_options, split, data_batch_size, seed) -> list:
    """The updates of a run's ``eval`` section that the arguments given ask for, as ``(path, value)`` pairs; a
    method named keeps the saved options only when it is the saved method (as ``--set eval.method=NAME`` does)."""
    overrides = [
        (f"eval.{key}", value)
        for key, value in (("split", split), ("data_batch_size", data_batch_size), ("seed", seed))
        if value is not None
    ]
    if method is not None:
        overrides.append(("eval.method", method))
    for key, value in (method_options or {}).items():
        overrides.append((f"eval.method.options.{key}", value))
    return overrides


def units(splits: Splits, result, x) -> dict:
    """The data representation the numbers refer to, and for masses (binarized or 8-bit data, and the bound on
    the 8-bit mass of dequantized data) bits per dimension: ``-log p(x) / (D log 2)``."""
    representation = splits.representation
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
