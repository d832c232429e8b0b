"""Reweighted wake-sleep, per data point and with minibatches."""

import math

import torch

import pyro.poutine as poutine
from pyro.infer.elbo import ELBO
from pyro.poutine.util import prune_subsample_sites
from pyro.util import warn_if_nan

from .estimators import ESTIMATORS
from .importance import (
    data_plate_scale,
    guess_max_plate_nesting,
    per_example_log_prob,
    per_example_log_weight_parts,
    vectorized_traces,
)
from .score import check_kl_weight, check_num_particles, value_with_gradient_of


def observations_replaced(model_trace, args, kwargs):
    """The model's arguments with every tensor that was an observed site's value replaced by the value the
    unconditioned model sampled there: the guide's inputs for a sleep-phase draw ``(z, x) ~ p(z, x)``."""
    replacements = [
        (site["infer"]["obs"], site["value"])
        for site in model_trace.nodes.values()
        if site["type"] == "sample" and site["infer"].get("was_observed")
    ]

    def replace(arg):
        if not torch.is_tensor(arg):
            return arg
        for observed, sampled in replacements:
            if arg is observed or (arg.shape == observed.shape and torch.equal(arg, observed)):
                return sampled.reshape(arg.shape)
        return arg

    new_args = tuple(replace(arg) for arg in args)
    new_kwargs = {key: replace(value) for key, value in kwargs.items()}
    if all(a is b for a, b in zip(new_args + tuple(new_kwargs.values()), args + tuple(kwargs.values()))):
        raise ValueError(
            "sleep-phi needs the guide's input to be the model's observations, but no argument of the model equals "
            "the value of an observed site. Pass sleep_args=<callable(model_trace, args, kwargs) -> (args, kwargs)> "
            "that builds the guide's arguments from a trace of the unconditioned model, or use insomnia=1.0."
        )
    return new_args, new_kwargs


@ESTIMATORS.register("rws")
class ReweightedWakeSleep(ELBO):
    r"""Reweighted wake-sleep (Bornschein & Bengio 2015; Le et al. 2019), with one importance-weighted estimate per
    data point.

    For data point ``n`` and ``K`` particles ``z_nk ~ q_phi(z | x_n)`` with log weights
    ``log w_nk = log p_theta(x_n | z_nk) + beta (log p_theta(z_nk) - log q_phi(z_nk | x_n))`` and normalized weights
    :math:`\tilde w_{nk} = w_{nk} / \sum_j w_{nj}`, each step follows three gradients:

    * **wake-theta** (model): ascend the importance-weighted bound
      :math:`\mathcal{L}_n = \log \frac1K \sum_k w_{nk}`, whose gradient with ``z`` and ``q`` held fixed is
      :math:`\sum_k \tilde w_{nk} \nabla_\theta \log p_\theta(x_n, z_{nk})`, the IWAE gradient for ``theta``.
    * **wake-phi** (guide): descend the self-normalized estimate of :math:`\mathrm{KL}(p(z | x_n) \| q_\phi)`,
      i.e. ascend :math:`\sum_k \tilde w_{nk} \log q_\phi(z_{nk} | x_n)` with the weights held fixed.
    * **sleep-phi** (guide): draw ``(z_n, x_n) ~ p_theta(z, x)`` from the unconditioned model (one draw per data
      point of the batch) and ascend :math:`\log q_\phi(z_n | x_n)`, which descends
      :math:`\mathbb{E}_{p(x)} \mathrm{KL}(p(z | x) \| q_\phi(z | x))`. The guide's inputs are the model's
      arguments with the observed values replaced by the sampled ones (see :func:`observations_replaced`), or
      whatever ``sleep_args`` builds.

    The guide's loss is ``insomnia * wake_phi + (1 - insomnia) * sleep_phi`` (Pyro's convention). Unlike Pyro's
    :class:`~pyro.infer.ReweightedWakeSleep`, which normalizes the weights of the whole batch jointly, weights are
    normalized per data point and the data plate's subsample scale ``N / B`` multiplies each per-example term
    outside the log-sum-exp, so minibatches are supported. ``loss`` and ``loss_and_grads`` return the scaled
    negative bound :math:`-\frac{N}{B} \sum_n \hat{\mathcal{L}}_n` (the guide's loss has no comparable meaning);
    :meth:`differentiable_loss` has that value and the sum of all three gradients.

    :param int num_particles: ``K >= 2`` (self-normalization needs more than one particle).
    :param float insomnia: weight of wake-phi against sleep-phi, in ``[0, 1]``; 1 is wake-phi only.
    :param bool vectorize_particles: draw all particles in one batched pass (default) or in a Python loop.
    :param float kl_weight: weight of ``log p(z) - log q(z | x)`` inside the weights; 1 gives the true weights.
    :param int max_plate_nesting: the model's plate nesting (guessed if not given); particles go one dim left.
    :param str data_plate: name of the plate over independent data points.
    :param callable sleep_args: optional ``(model_trace, args, kwargs) -> (args, kwargs)`` giving the guide's
        inputs for a sleep draw.

    References:
        [1] J. Bornschein, Y. Bengio. Reweighted Wake-Sleep. ICLR 2015.
        [2] T. A. Le, A. R. Kosiorek, N. Siddharth, Y. W. Teh, F. Wood. Revisiting Reweighted Wake-Sleep for
            Models with Stochastic Control Flow. UAI 2019.
    """

    def __init__(
        self,
        num_particles=5,
        insomnia=1.0,
        vectorize_particles=True,
        kl_weight=1.0,
        max_plate_nesting=None,
        data_plate="data",
        sleep_args=None,
    ):
        check_num_particles(num_particles, 2, "the weights are self-normalized")
        check_kl_weight(kl_weight)
        if not 0 <= insomnia <= 1:
            raise ValueError(f"insomnia (the weight of wake-phi against sleep-phi) must be in [0, 1]; got {insomnia}")
        super().__init__(num_particles=num_particles, vectorize_particles=False)
        self.vectorize_particles = vectorize_particles
        self.max_plate_nesting = max_plate_nesting
        self.insomnia = insomnia
        self.kl_weight = kl_weight
        self.data_plate = data_plate
        self.sleep_args = sleep_args or observations_replaced

    def _get_trace(self, model, guide, args, kwargs):
        traces = vectorized_traces(model, guide, *args, max_plate_nesting=self.max_plate_nesting, **kwargs)
        return traces.model_trace, traces.guide_trace

    def _wake_losses(self, model, guide, args, kwargs):
        """Scaled wake-theta loss (minus the bound) and wake-phi loss, from one set of particles."""
        parts = per_example_log_weight_parts(
            model,
            guide,
            args,
            kwargs,
            num_particles=self.num_particles,
            vectorize_particles=self.vectorize_particles,
            max_plate_nesting=self.max_plate_nesting,
            data_plate=self.data_plate,
            kl_weight=self.kl_weight,
            detach_samples=True,
        )
        # weights for the model: q held fixed
        log_w = parts.log_likelihood + self.kl_weight * (parts.log_prior - parts.log_guide.detach())
        log_mean_w = torch.logsumexp(log_w, 0) - math.log(self.num_particles)
        wake_theta = -parts.scale * log_mean_w.sum()
        normalized_weights = torch.softmax(log_w.detach(), 0)
        wake_phi = -parts.scale * (normalized_weights * parts.log_guide).sum()
        return wake_theta, wake_phi

    def _sleep_loss(self, model, guide, args, kwargs):
        """Scaled sleep-phi loss ``-(N / B) sum_n log q(z_n | x_n)`` with ``(z_n, x_n) ~ p(z, x)``."""
        max_plate_nesting = self.max_plate_nesting
        if max_plate_nesting is None:
            max_plate_nesting = guess_max_plate_nesting(model, guide, *args, **kwargs)
        with torch.no_grad():
            model_trace = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
        guide_args, guide_kwargs = self.sleep_args(model_trace, args, kwargs)
        guide_trace = poutine.trace(poutine.replay(guide, trace=model_trace)).get_trace(*guide_args, **guide_kwargs)
        guide_trace = prune_subsample_sites(guide_trace)
        log_q = per_example_log_prob(guide_trace, -(max_plate_nesting + 1), 1, self.data_plate)
        return -data_plate_scale(guide_trace, self.data_plate) * log_q.sum()

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """Value: the scaled negative bound; gradient: wake-theta for the model plus the guide's wake/sleep mix."""
        wake_theta, wake_phi = self._wake_losses(model, guide, args, kwargs)
        guide_loss = self.insomnia * wake_phi if self.insomnia > 0 else 0.0
        if self.insomnia < 1:
            guide_loss = guide_loss + (1 - self.insomnia) * self._sleep_loss(model, guide, args, kwargs)
        loss = value_with_gradient_of(wake_theta, wake_theta + guide_loss)
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model, guide, *args, **kwargs):
        """The scaled negative bound estimate (float, no gradient)."""
        with torch.no_grad():
            wake_theta, _ = self._wake_losses(model, guide, args, kwargs)
        loss = wake_theta.item()
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.item()
