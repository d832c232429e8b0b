"""Gradient estimators: each a :class:`pyro.infer.ELBO` chosen by name from :data:`ESTIMATORS`.

Importing this package registers every estimator module below.
"""

from inference.objectives import elbo, iwae, kl, renyi, rws, score, tighter_bounds, vimco  # noqa: F401  (registration)
from inference.objectives.estimators import ESTIMATORS, estimator, estimator_names
from inference.objectives.objective import ImportanceWeightedObjective

__all__ = ["ESTIMATORS", "ImportanceWeightedObjective", "estimator", "estimator_names"]
