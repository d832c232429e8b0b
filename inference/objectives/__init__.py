"""Gradient estimators: each a :class:`pyro.infer.ELBO` chosen by name from :data:`ESTIMATORS`.

Importing this package registers every estimator module below.
"""

from inference.objectives import (  # noqa: F401  (registration)
    divergences,
    elbo,
    iwae,
    kl,
    renyi,
    rws,
    score,
    tighter_bounds,
    vimco,
)
from inference.objectives.estimators import ESTIMATORS, estimator, estimator_names
from inference.objectives.objective import ImportanceWeightedObjective

__all__ = ["ESTIMATORS", "ImportanceWeightedObjective", "estimator", "estimator_names"]
