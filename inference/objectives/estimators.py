"""The table of gradient estimators, chosen by name: ``inference.estimator("iwae", num_particles=5)``.

Each estimator is a :class:`pyro.infer.ELBO` subclass, so it drops into :class:`pyro.infer.SVI` on any
model/guide pair. Estimator modules register themselves with ``@ESTIMATORS.register(name)``.
"""

from inference.registry import Registry

ESTIMATORS = Registry("estimator")


def estimator(name: str, **options):
    """Build the estimator registered under ``name`` (see :func:`estimator_names`) with ``options``."""
    return ESTIMATORS.build(name, **options)


def estimator_names():
    return ESTIMATORS.names()
