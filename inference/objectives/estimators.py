"""The table of gradient estimators, chosen by name: ``inference.estimator("iwae", num_particles=5)``.

Each estimator is a :class:`pyro.infer.ELBO` subclass, so it drops into :class:`pyro.infer.SVI` on any
model/guide pair. Estimator modules register themselves with ``@ESTIMATORS.register(name)``.
"""

from inference.registry import Registry


class Estimator:
    """What a registered estimator declares, besides being a :class:`pyro.infer.ELBO` (``loss`` and
    ``loss_and_grads``, so it drops into :class:`pyro.infer.SVI` and :class:`~inference.training.Trainer`).

    ``bound_on_log_px``
        whether its objective is a lower bound on log p(x), so that it may be reported as one (the aggregate-posterior
        divergences of :mod:`~inference.objectives.divergences` are not);
    ``is_the_elbo()``
        whether, with its options, it trains the ELBO by another name (an importance-weighted bound with one weight
        per log-mean-exp), which the command line points out;
    ``parameters()``
        parameters it learns itself (a learned baseline), trained alongside model and guide;
    ``evaluations_per_example()``
        how many times a step computes ``log p(x_n, z)`` per example of its minibatch (its particles ``K``), which a
        training budget in likelihood evaluations counts (:mod:`inference.training.budget`).

    Importance-weighted estimators declare what their gradient needs of the log weights through
    :class:`~inference.importance.GradientNeeds` (:class:`~inference.objectives.ImportanceWeightedObjective`).
    """

    bound_on_log_px = True

    def is_the_elbo(self) -> bool:
        return False

    def parameters(self) -> list:
        return []

    def evaluations_per_example(self) -> int:
        return self.num_particles


ESTIMATORS = Registry("estimator", base=Estimator)


def estimator(name: str, **options):
    """Build the estimator registered under ``name`` (see :func:`estimator_names`) with ``options``."""
    return ESTIMATORS.build(name, **options)


def estimator_names():
    return ESTIMATORS.names()
