r"""Training budgets: how much computation a run may spend, counted so that methods can be compared at equal cost.

A run's cost is counted three ways as it trains (:class:`Spent`, cumulative over the run and over resumes):

* **steps**: gradient steps;
* **likelihood evaluations**: ``sum over steps of K x B``, the particles per example times the examples in the
  minibatch, i.e. the number of times ``log p(x_n, z_nk)`` is computed (Burda et al. 2016 compare IWAE with the
  VAE at equal evaluations as well as at equal epochs);
* **seconds**: wall-clock seconds spent in training steps (not in validation).

A :class:`Budget` of one kind ends training once the next step would exceed it: a budget of ``E`` evaluations gives
IWAE with ``K = 50`` one fiftieth of the steps of the ELBO with ``K = 1`` at the same batch size. The last epoch then
stops part-way. Steps and evaluations are counted on the host from the batch sizes, so a budget reads nothing back
from the device, and a run resumed from a checkpoint ends where an uninterrupted one does; seconds count the epochs
that reached a checkpoint (an epoch cut short by a kill is trained, and timed, again).
"""

import dataclasses
import math
from typing import Optional

#: What a budget may count, and the key of ``metrics.json`` (and ``status.json``'s ``spent``) that counts it.
METRICS_KEYS = {"steps": "steps", "evaluations": "likelihood_evaluations", "seconds": "elapsed_seconds"}
KINDS = tuple(METRICS_KEYS)


@dataclasses.dataclass(frozen=True)
class Spent:
    """What a run has spent so far: gradient ``steps``, likelihood ``evaluations`` and training ``seconds``."""

    steps: int = 0
    evaluations: int = 0
    seconds: float = 0.0

    def after_step(self, evaluations: int) -> "Spent":
        return dataclasses.replace(self, steps=self.steps + 1, evaluations=self.evaluations + evaluations)

    def with_seconds(self, seconds: float) -> "Spent":
        return dataclasses.replace(self, seconds=seconds)

    def amount(self, kind: str) -> float:
        return getattr(self, kind)

    def as_metrics(self) -> dict:
        """The cumulative figures as ``metrics.json`` records them for each epoch."""
        return {METRICS_KEYS[kind]: self.amount(kind) for kind in KINDS}

    @classmethod
    def from_metrics(cls, entry: Optional[dict]) -> "Spent":
        """What was spent up to the end of the epoch ``entry`` records (nothing before the first epoch)."""
        if not entry:
            return cls()
        return cls(**{kind: entry.get(METRICS_KEYS[kind], getattr(cls, kind)) for kind in KINDS})


@dataclasses.dataclass(frozen=True)
class Budget:
    """At most ``amount`` of ``kind`` (one of :data:`KINDS`) spent in training."""

    kind: str
    amount: float

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"a budget counts one of {', '.join(KINDS)}, not {self.kind!r}")
        if not (isinstance(self.amount, (int, float)) and math.isfinite(self.amount) and self.amount > 0):
            raise ValueError(f"a budget's amount must be a positive number, got {self.amount!r}")

    def allows(self, spent: Spent, evaluations: int) -> bool:
        """Whether a step of ``evaluations`` likelihood evaluations fits after ``spent`` (seconds: whether any
        remain, and always for a run's first step: a step's time is known only once it is taken)."""
        if self.kind == "seconds":
            return spent.steps == 0 or spent.seconds < self.amount
        return spent.after_step(evaluations).amount(self.kind) <= self.amount

    def is_spent(self, spent: Spent, evaluations_per_step: int) -> bool:
        """Whether no further step of ``evaluations_per_step`` evaluations (a full minibatch) fits."""
        return not self.allows(spent, evaluations_per_step)

    def describe(self) -> str:
        return f"{self.amount:g} {self.kind}"


def check_budget_fits_the_process_group(budget: Optional[Budget]) -> None:
    """Refuse a budget in seconds in a process group: each rank's clock would end it at a different step."""
    from inference.training import distributed

    if budget is not None and budget.kind == "seconds" and distributed.is_distributed():
        raise ValueError(
            "a budget in seconds would end the ranks of a process group at different steps: give the budget in "
            "steps or evaluations, or train in one process"
        )
