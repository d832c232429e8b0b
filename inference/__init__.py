"""Model-agnostic inference for Pyro: gradient estimators, training, log p(x) estimators and diagnostics.

Nothing here imports :mod:`pyro_vae`: every tool takes a Pyro ``model`` and ``guide`` whose data points sit in a
plate (named ``"data"`` unless told otherwise). The sub-packages are by role: :mod:`inference.objectives` (the
gradient estimators), :mod:`inference.evaluation` (log p(x) and diagnostics), :mod:`inference.training` (the
trainer, callbacks, checkpoints).
"""

from inference.data_rows import register_rows
from inference.evaluation.ais import AISResult, annealed_importance_sampling
from inference.evaluation.bdmc import BDMCResult, bdmc, simulate_from_model
from inference.evaluation.diagnostics import (
    active_units,
    effective_sample_size,
    importance_resampled_latents,
    kl_per_dimension,
    latent_activity,
    pareto_khat,
    save_inference_data,
    to_inference_data,
)
from inference.evaluation.exact import exact_log_marginal
from inference.evaluation.gradient_snr import GradientSNR, gradient_snr
from inference.evaluation.log_marginal_likelihood import (
    LOG_PX_METHODS,
    LogMarginalLikelihood,
    LogPxMethod,
    UnreliableEstimateWarning,
    log_marginal_likelihood,
    log_px_method,
)
from inference.importance import per_example_log_weights
from inference.objectives import ESTIMATORS, estimator, estimator_names
from inference.objectives.elbo import AnalyticKLELBO, StickingTheLandingELBO, TraceELBO
from inference.objectives.iwae import IWAE, DReGIWAE, StickingTheLandingIWAE
from inference.objectives.objective import ImportanceWeightedObjective
from inference.objectives.renyi import RenyiBound
from inference.objectives.rws import ReweightedWakeSleep
from inference.objectives.score import ScoreFunctionELBO
from inference.objectives.tighter_bounds import CIWAE, MIWAE, PIWAE
from inference.objectives.vimco import VIMCO
from inference.training.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    KLWeightSchedule,
    LearningRateSchedule,
    linear_warmup,
)
from inference.training.checkpoint import load_checkpoint, save_checkpoint
from inference.training.trainer import OPTIMIZERS, Trainer, evaluate_objectives, train

__all__ = [
    "AISResult",
    "AnalyticKLELBO",
    "BDMCResult",
    "CIWAE",
    "Callback",
    "Checkpoint",
    "DReGIWAE",
    "ESTIMATORS",
    "EarlyStopping",
    "GradientSNR",
    "IWAE",
    "ImportanceWeightedObjective",
    "KLWeightSchedule",
    "LOG_PX_METHODS",
    "LearningRateSchedule",
    "LogMarginalLikelihood",
    "LogPxMethod",
    "MIWAE",
    "OPTIMIZERS",
    "PIWAE",
    "RenyiBound",
    "ReweightedWakeSleep",
    "ScoreFunctionELBO",
    "StickingTheLandingELBO",
    "StickingTheLandingIWAE",
    "TraceELBO",
    "Trainer",
    "UnreliableEstimateWarning",
    "VIMCO",
    "active_units",
    "annealed_importance_sampling",
    "bdmc",
    "effective_sample_size",
    "estimator",
    "estimator_names",
    "evaluate_objectives",
    "exact_log_marginal",
    "gradient_snr",
    "importance_resampled_latents",
    "kl_per_dimension",
    "latent_activity",
    "linear_warmup",
    "load_checkpoint",
    "log_marginal_likelihood",
    "log_px_method",
    "pareto_khat",
    "per_example_log_weights",
    "register_rows",
    "save_checkpoint",
    "save_inference_data",
    "simulate_from_model",
    "to_inference_data",
    "train",
]
