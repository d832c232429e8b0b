"""Model-agnostic inference for Pyro: gradient estimators, the training loop and log p(x) estimators."""

from .checkpoint import load_checkpoint, save_checkpoint
from .estimators import ESTIMATORS, estimator, estimator_names
from .importance import per_example_log_weights, vectorized_traces
from .log_marginal_likelihood import LogMarginalLikelihood, importance_log_weights, log_marginal_likelihood
from .registry import Registry
from .training import evaluate_objectives, make_optimizer, train

# Importing the estimator modules registers them in ESTIMATORS.
from . import elbo, iwae, renyi, rws, score, tighter_bounds, vimco  # noqa: E402,F401  isort: skip

__all__ = [
    "ESTIMATORS",
    "LogMarginalLikelihood",
    "Registry",
    "estimator",
    "estimator_names",
    "evaluate_objectives",
    "importance_log_weights",
    "load_checkpoint",
    "log_marginal_likelihood",
    "make_optimizer",
    "per_example_log_weights",
    "save_checkpoint",
    "train",
    "vectorized_traces",
]
