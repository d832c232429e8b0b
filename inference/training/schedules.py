r"""Learning-rate schedules by name: ``torch.optim.lr_scheduler`` objects stepped once per epoch.

Each entry of :data:`LR_SCHEDULES` builds a scheduler from the optimizer and its options; the trainer steps it
after every epoch through :class:`~inference.training.callbacks.LearningRateSchedule`, which also checkpoints it.

* ``constant``: the optimizer's learning rate throughout.
* ``burda``: the schedule of Burda, Grosse & Salakhutdinov (2016, section 5): stage :math:`i = 0, \dots,
  S - 1` runs :math:`3^i` epochs at learning rate :math:`\text{lr}_0 \cdot 10^{-i/7}`, so 8 stages take
  :math:`\sum_i 3^i = 3280` epochs; after the last stage the rate stays at the last stage's value.
* ``exponential`` and ``step``: ``torch.optim.lr_scheduler.ExponentialLR`` and ``StepLR``.
"""

import torch

from inference.registry import Registry

LR_SCHEDULES = Registry("learning-rate schedule")


@LR_SCHEDULES.register("constant")
def constant(optimizer):
    """The optimizer's own learning rate in every epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Constant())


class _Constant:
    def __call__(self, epoch: int) -> float:
        return 1.0


class BurdaFactor:
    r"""The factor :math:`10^{-i/7}` of the epoch's stage :math:`i`, where stage :math:`i` lasts :math:`3^i`
    epochs (Burda et al. 2016); a callable object, so that ``LambdaLR`` checkpoints it."""

    def __init__(self, stages: int = 8, decay_per_stage: float = 10 ** (-1 / 7)):
        self.stages = stages
        self.decay_per_stage = decay_per_stage

    def stage(self, epoch: int) -> int:
        """The stage that 0-based ``epoch`` belongs to (the last stage for epochs past the schedule)."""
        end = 0
        for i in range(self.stages):
            end += 3**i
            if epoch < end:
                return i
        return self.stages - 1

    def __call__(self, epoch: int) -> float:
        return self.decay_per_stage ** self.stage(epoch)


def burda_epochs(stages: int = 8) -> int:
    """The epochs of a whole ``burda`` schedule of ``stages`` stages: :math:`\\sum_{i<S} 3^i = (3^S - 1) / 2`."""
    return (3**stages - 1) // 2


@LR_SCHEDULES.register("burda")
def burda(optimizer, stages: int = 8, decay_per_stage: float = 10 ** (-1 / 7)):
    """Burda et al. (2016): stage i runs 3^i epochs at lr * decay_per_stage^i (8 stages: 3280 epochs)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, BurdaFactor(stages, decay_per_stage))


@LR_SCHEDULES.register("exponential")
def exponential(optimizer, gamma: float = 0.99):
    """Multiply the learning rate by gamma after every epoch."""
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


@LR_SCHEDULES.register("step")
def step(optimizer, step_size: int = 30, gamma: float = 0.1):
    """Multiply the learning rate by gamma every step_size epochs."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
