"""Score-function (REINFORCE) gradients of the ELBO, per data point, with baselines."""

import itertools

import pyro
import torch

from inference.importance import GradientNeeds
from inference.objectives.estimators import ESTIMATORS
from inference.objectives.objective import ImportanceWeightedObjective, check_num_particles

BASELINES = ("none", "average", "leave-one-out", "learned")


_instance_ids = itertools.count()


class ConstantBaseline(torch.nn.Module):
    """The learned baseline without a network: one number ``b``, the same for every data point."""

    def __init__(self, device=None):
        super().__init__()
        self.value = torch.nn.Parameter(torch.zeros((), device=device))


def leave_one_out_mean(values: torch.Tensor) -> torch.Tensor:
    """``(sum_j values_j - values_k) / (K - 1)`` along dim 0, for every ``k``."""
    num_particles = values.shape[0]
    return (values.sum(0, keepdim=True) - values) / (num_particles - 1)


@ESTIMATORS.register("score")
class ScoreFunctionELBO(ImportanceWeightedObjective):
    r"""The ELBO with score-function (REINFORCE) gradients for *every* guide site, reparameterizable or not, so
    their variance can be compared with the pathwise estimator's.

    For data point ``n`` and ``K`` particles ``z_nk ~ q_phi(z | x_n)`` the objective is the (beta-weighted) ELBO

    .. math::

        \mathcal{L}_n = \mathbb{E}_{q}[f_n(z)], \qquad
        f_n(z) = \log p_\theta(x_n | z) + \beta \,(\log p_\theta(z) - \log q_\phi(z | x_n)),

    estimated by :math:`\frac1K \sum_k f_n(z_{nk})`, with gradients

    .. math::

        \nabla_\theta \mathcal{L}_n \approx \frac1K \sum_k \nabla_\theta f_n(z_{nk}), \qquad
        \nabla_\phi \mathcal{L}_n \approx \frac1K \sum_k \big(f_n(z_{nk}) - b_{nk}\big)
            \nabla_\phi \log q_\phi(z_{nk} | x_n)

    where ``z`` is held fixed (no pathwise term), ``log q`` in the score is the density ``z`` was drawn from (without
    the site's ``poutine.scale``, which scales only its term in ``f``), and the direct ``-beta * grad log q`` term
    is dropped because
    :math:`\mathbb{E}_q[\nabla_\phi \log q_\phi] = 0`. Any baseline ``b`` that does not depend on ``z_nk`` keeps the
    estimator unbiased:

    * ``"none"``: ``b = 0``.
    * ``"average"``: a decaying average of the batch-mean learning signal over past steps,
      ``b <- decay * b + (1 - decay) * mean_nk f_n(z_nk)``, kept on the estimator object (Williams 1992).
    * ``"leave-one-out"``: ``b_nk = mean_{j != k} f_n(z_nj)`` (needs ``K >= 2``; Kool et al. 2019).
    * ``"learned"``: ``b_n = baseline_net(x_n)`` when a ``baseline_net`` (a ``torch.nn.Module`` mapping the first
      positional argument, the data batch, to one value per data point) is given, otherwise one learned scalar
      (:class:`ConstantBaseline`). The estimator owns these parameters (:meth:`parameters`, :meth:`state_dict`)
      and registers them with Pyro under a name of its own (``pyro.module``), so :class:`~pyro.infer.SVI` and
      :class:`~inference.training.trainer.Trainer` update them in the same step, by the gradient of the added
      squared error ``mean_nk (f_n(z_nk) - b_n)^2``, which touches only the baseline (Mnih & Gregor 2014).

    The loss is :math:`-\frac{N}{B} \sum_{n \in \text{batch}} \hat{\mathcal{L}}_n` (the data plate's subsample
    scale applied outside any per-example computation); :meth:`differentiable_loss` has that value and the
    gradient above.

    :param int num_particles: ``K``, particles per data point.
    :param bool vectorize_particles: draw all particles in one batched pass (default) or in a Python loop.
    :param float kl_weight: weight of the KL term (``log p(z) - log q``); 1 is the ELBO, < 1 for annealing.
    :param str baseline: one of ``"none"``, ``"average"``, ``"leave-one-out"``, ``"learned"``.
    :param float baseline_decay: decay of the ``"average"`` baseline.
    :param torch.nn.Module baseline_net: network of the ``"learned"`` baseline (optional).
    :param int max_plate_nesting: the model's plate nesting (guessed if not given); particles go one dim left.
    :param str data_plate: name of the plate over independent data points.

    References:
        [1] R. J. Williams. Simple statistical gradient-following algorithms for connectionist reinforcement
            learning. Machine Learning 8, 1992.
        [2] R. Ranganath, S. Gerrish, D. M. Blei. Black Box Variational Inference. AISTATS 2014.
        [3] A. Mnih, K. Gregor. Neural Variational Inference and Learning in Belief Networks. ICML 2014.
        [4] W. Kool, H. van Hoof, M. Welling. Buy 4 REINFORCE Samples, Get a Baseline for Free! ICLR workshop 2019.
    """

    name = "score"
    needs = GradientNeeds(require_rsample=False, detach_samples=True)  # log p, log q: parameters' gradients only

    def __init__(self, num_particles=1, baseline="average", baseline_decay=0.9, baseline_net=None, **options):
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline '{baseline}'; choose one of {', '.join(BASELINES)}")
        check_num_particles(num_particles, 2 if baseline == "leave-one-out" else 1, f"baseline='{baseline}'")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1); got {baseline_decay}")
        if baseline_net is not None and baseline != "learned":
            raise ValueError("baseline_net is only used with baseline='learned'; pass both or neither")
        super().__init__(num_particles=num_particles, **options)
        self.baseline = baseline
        self.baseline_decay = baseline_decay
        self.baseline_net = baseline_net  # the "learned" baseline's parameters; a constant one is made on first use
        self.average_learning_signal = None  # state of the "average" baseline
        # Each estimator registers its own baseline with Pyro under its own name, so two never share one.
        self._baseline_name = f"score_baseline_{next(_instance_ids)}"

    def per_example_objective(self, parts):
        return parts.log_weights.mean(0)

    def parameters(self):
        """The learned baseline's parameters (none before the first step or for other baselines)."""
        return list(self.baseline_net.parameters()) if self.baseline == "learned" and self.baseline_net else []

    def state_dict(self) -> dict:
        """The baselines' state, for checkpoints: the running average and the learned baseline's parameters."""
        state = {"average_learning_signal": self.average_learning_signal}
        if self.baseline == "learned" and self.baseline_net is not None:
            state["baseline_net"] = self.baseline_net.state_dict()
        return state

    def load_state_dict(self, state: dict):
        self.average_learning_signal = state["average_learning_signal"]
        if "baseline_net" in state:
            if self.baseline_net is None:
                self.baseline_net = ConstantBaseline(next(iter(state["baseline_net"].values())).device)
            self.baseline_net.load_state_dict(state["baseline_net"])

    def _learned_baseline(self, args, batch_size, device) -> torch.Tensor:
        if self.baseline_net is None:
            self.baseline_net = ConstantBaseline(device)
        net = pyro.module(self._baseline_name, self.baseline_net)
        if isinstance(net, ConstantBaseline):
            return net.value.expand(batch_size)
        value = net(args[0]).reshape(-1)
        if value.shape != (batch_size,):
            raise ValueError(
                f"baseline_net must return one value per data point ({batch_size}), got shape "
                f"{tuple(value.shape)}; it is called on the first positional argument of the model."
            )
        return value

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The scaled negative ELBO estimate, with the score-function gradient (plus the learned baseline's
        squared-error gradient)."""
        parts = self.log_weight_parts(model, guide, args, kwargs)
        # f_n(z_nk) with gradients to the model only: the direct -beta * grad log q term has expectation zero
        signal = parts.log_likelihood + self.kl_weight * (parts.log_prior - parts.log_guide.detach())
        baseline_loss = 0.0
        if self.baseline == "none":
            baseline = 0.0
        elif self.baseline == "leave-one-out":
            baseline = leave_one_out_mean(signal.detach())
        elif self.baseline == "average":
            baseline = 0.0 if self.average_learning_signal is None else self.average_learning_signal
            mean_signal = signal.detach().mean()  # kept on the device: no wait for it
            if self.average_learning_signal is None:
                self.average_learning_signal = mean_signal
            else:
                decay = self.baseline_decay
                self.average_learning_signal = decay * self.average_learning_signal + (1 - decay) * mean_signal
        else:
            baseline = self._learned_baseline(args, signal.shape[1], signal.device)
            baseline_loss = (signal.detach() - baseline).pow(2).mean()
            baseline = baseline.detach()
        surrogate = signal + (signal.detach() - baseline) * parts.log_guide_score
        return self.minibatch_loss(parts, signal.mean(0), surrogate.mean(0), baseline_loss)
