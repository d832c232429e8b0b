"""Runs on disk: train a VAE into a folder, then evaluate it and draw pictures from it.

One module per role:

* :mod:`~pyro_vae.runs.preparation`: from a configuration to the data as the model reads them (their
  representation decided once and carried on the :class:`~pyro_vae.data.splits.Splits`), the model and the
  estimator;
* :mod:`~pyro_vae.runs.training`: :func:`train_run` writes the run folder (``config.json``, ``metrics.json``,
  ``checkpoint.pt``, ``status.json``);
* :mod:`~pyro_vae.runs.loading`: a folder read back (:func:`load_run`);
* :mod:`~pyro_vae.runs.evaluation`: :func:`evaluate_run` writes ``eval/<method>-<split>.json`` and ``.nc``;
* :mod:`~pyro_vae.runs.pictures`: :func:`sample_run` writes ``samples.png`` and ``reconstructions.png``.

Each command reads ``config.json`` once and checks its configuration once. The command line (:mod:`pyro_vae.cli`)
is a thin layer over these functions.
"""

from pyro_vae.runs.evaluation import ACTIVE_UNIT_THRESHOLD, evaluate_run, reconstruction_error
from pyro_vae.runs.loading import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    LoadedRun,
    load_config,
    load_run,
    read_config_tree,
    read_metrics,
)
from pyro_vae.runs.pictures import brightness_of, image_grid, picture_grids, sample_run, write_pictures
from pyro_vae.runs.preparation import (
    data_representation,
    dequantization_correction,
    estimator_for,
    eval_split,
    model_for,
    prepare_data,
    training_batches,
    trains_the_elbo_by_another_name,
)
from pyro_vae.runs.training import TrainedRun, train_run

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "METRICS_FILE",
    "LoadedRun",
    "TrainedRun",
    "brightness_of",
    "data_representation",
    "dequantization_correction",
    "estimator_for",
    "eval_split",
    "evaluate_run",
    "image_grid",
    "load_config",
    "load_run",
    "model_for",
    "picture_grids",
    "prepare_data",
    "read_config_tree",
    "read_metrics",
    "reconstruction_error",
    "sample_run",
    "train_run",
    "trains_the_elbo_by_another_name",
    "training_batches",
    "write_pictures",
]
