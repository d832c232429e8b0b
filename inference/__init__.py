"""Model-agnostic inference for Pyro: gradient estimators, the training loop, log p(x) estimators and diagnostics.

Nothing here imports :mod:`pyro_vae`: every tool takes a Pyro ``model`` and ``guide`` whose data points sit in a
plate (named ``"data"`` unless told otherwise).
"""

from .ais import AISResult, annealed_importance_sampling
from .bdmc import BDMCResult, bdmc, simulate_from_model
from .checkpoint import load_checkpoint, save_checkpoint
from .diagnostics import (
    active_units,
    effective_sample_size,
    importance_resampled_latents,
    kl_per_dimension,
    latent_activity,
    pareto_khat,
    save_inference_data,
    to_inference_data,
)
from .elbo import AnalyticKLELBO, StickingTheLandingELBO, TraceELBO
from .estimators import ESTIMATORS, estimator, estimator_names
from .exact import exact_log_marginal
from .gradient_snr import GradientSNR, gradient_snr, parameter_groups
from .importance import per_example_log_weights, vectorized_traces
from .iwae import IWAE, DReGIWAE, ImportanceWeightedObjective, StickingTheLandingIWAE
from .log_marginal_likelihood import METHODS, LogMarginalLikelihood, importance_log_weights, log_marginal_likelihood
from .registry import Registry
from .renyi import RenyiBound
from .rws import ReweightedWakeSleep
from .score import ScoreFunctionELBO
from .tighter_bounds import CIWAE, MIWAE, PIWAE
from .training import evaluate_objectives, linear_warmup, make_optimizer, train
from .vimco import VIMCO

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
