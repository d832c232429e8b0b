"""Model-agnostic inference for Pyro: gradient estimators, the training loop, log p(x) estimators and diagnostics.

Nothing here imports :mod:`pyro_vae`: every tool takes a Pyro ``model`` and ``guide`` whose data points sit in a
plate (named ``"data"`` unless told otherwise).
"""

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
from inference.evaluation.gradient_snr import GradientSNR, gradient_snr, parameter_groups
from inference.evaluation.log_marginal_likelihood import (
    METHODS,
    LogMarginalLikelihood,
    importance_log_weights,
    log_marginal_likelihood,
)
from inference.importance import per_example_log_weights, vectorized_traces
from inference.objectives.elbo import AnalyticKLELBO, StickingTheLandingELBO, TraceELBO
from inference.objectives.estimators import ESTIMATORS, estimator, estimator_names
from inference.objectives.iwae import IWAE, DReGIWAE, ImportanceWeightedObjective, StickingTheLandingIWAE
from inference.objectives.renyi import RenyiBound
from inference.objectives.rws import ReweightedWakeSleep
from inference.objectives.score import ScoreFunctionELBO
from inference.objectives.tighter_bounds import CIWAE, MIWAE, PIWAE
from inference.objectives.vimco import VIMCO
from inference.registry import Registry
from inference.training.checkpoint import load_checkpoint, save_checkpoint
from inference.training.trainer import evaluate_objectives, linear_warmup, make_optimizer, train

__all__ = [
    "AISResult",
    "AnalyticKLELBO",
    "BDMCResult",
    "CIWAE",
    "DReGIWAE",
    "ESTIMATORS",
    "GradientSNR",
    "IWAE",
    "ImportanceWeightedObjective",
    "LogMarginalLikelihood",
    "METHODS",
    "MIWAE",
    "PIWAE",
    "Registry",
    "RenyiBound",
    "ReweightedWakeSleep",
    "ScoreFunctionELBO",
    "StickingTheLandingELBO",
    "StickingTheLandingIWAE",
    "TraceELBO",
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
    "importance_log_weights",
    "importance_resampled_latents",
    "kl_per_dimension",
    "latent_activity",
    "linear_warmup",
    "load_checkpoint",
    "log_marginal_likelihood",
    "make_optimizer",
    "parameter_groups",
    "pareto_khat",
    "per_example_log_weights",
    "save_checkpoint",
    "save_inference_data",
    "simulate_from_model",
    "to_inference_data",
    "train",
    "vectorized_traces",
]
