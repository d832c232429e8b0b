"""A run folder read back: its configuration, metrics and trained model."""

import json
import os
from dataclasses import dataclass
from typing import Optional

from inference.training.checkpoint import load_checkpoint
from pyro_vae.config import ConfigError, RunConfig, resolve_device
from pyro_vae.data.splits import Splits
from pyro_vae.folder import read_json
from pyro_vae.runs.preparation import model_for, prepare_data
from pyro_vae.vae import VAE

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"


def read_config_tree(run_dir) -> dict:
    """The tree of the run's ``config.json``, as saved (not yet built or checked); a message that says how to make
    a run when ``run_dir`` is not one."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"'{run_dir}' is not a run folder (no {CONFIG_FILE}); create one with `pyro-vae train`")
    return read_json(path)


def load_config(run_dir) -> RunConfig:
    """The run's configuration, checked."""
    return RunConfig.from_dict(read_config_tree(run_dir))


def read_metrics(run_dir) -> list:
    """``metrics.json``: one entry per epoch."""
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        return json.load(f)


@dataclass
class LoadedRun:
    """A trained run rebuilt from its folder: the configuration, the data as the model reads them, and the VAE
    with the checkpoint's parameters, in evaluation mode."""

    config: RunConfig
    splits: Splits
    vae: VAE
    #: ``{"epoch", "sha256"}`` of the checkpoint the parameters came from.
    checkpoint: dict


def load_run(run_dir, device="auto", config: Optional[RunConfig] = None) -> LoadedRun:
    """Rebuild the trained VAE of a run folder on ``device``. ``config`` is the run's configuration when the caller
    has read it already (as :func:`~pyro_vae.runs.evaluate_run` has, with its ``eval`` section updated)."""
    config = load_config(run_dir) if config is None else config
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
    return LoadedRun(config, splits, vae, {"epoch": state["epoch"], "sha256": state["sha256"]})
