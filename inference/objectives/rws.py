"""Reweighted wake-sleep, per data point and with minibatches."""

import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites

from inference.importance import GradientNeeds, auxiliary_sites, data_plate_scale, per_example_log_prob
from inference.objectives.estimators import ESTIMATORS
from inference.objectives.objective import (
    ImportanceWeightedObjective,
    check_num_particles,
    log_mean_exp,
    normalized_weights,
)


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


def check_scores_given_latents(guide_trace):
    """Refuse a guide that draws at auxiliary sites (an autoguide): replayed on the model's latents it draws its
    auxiliary values afresh, so its density at those latents is not what the sleep phase scores."""
    auxiliary = auxiliary_sites(guide_trace)
    if auxiliary:
        raise ValueError(
            f"the sleep phase scores log q at latents drawn from the model, but the guide draws at auxiliary site(s) "
            f"{auxiliary} (an autoguide), whose density at given latents it cannot give: use insomnia=1 (wake-phi "
            "only), or a guide written with the model's latent sites."
        )


@ESTIMATORS.register("rws")
class ReweightedWakeSleep(ImportanceWeightedObjective):
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

    name = "rws"
    needs = GradientNeeds(require_rsample=False, detach_samples=True)  # every gradient a weighted log density

    def __init__(self, num_particles=5, insomnia=1.0, sleep_args=None, **options):
        check_num_particles(num_particles, 2, "the weights are self-normalized")
        if not 0 <= insomnia <= 1:
            raise ValueError(f"insomnia (the weight of wake-phi against sleep-phi) must be in [0, 1]; got {insomnia}")
        super().__init__(num_particles=num_particles, **options)
        self.insomnia = insomnia
        self.sleep_args = sleep_args or observations_replaced

    def per_example_objective(self, parts):
        return log_mean_exp(parts.log_weights)

    def _sleep_loss(self, model, guide, args, kwargs):
        """Scaled sleep-phi loss ``-(N / B) sum_n log q(z_n | x_n)`` with ``(z_n, x_n) ~ p(z, x)``."""
        max_plate_nesting = self._max_plate_nesting(model, guide, args, kwargs)
        with torch.no_grad():
            model_trace = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
        guide_args, guide_kwargs = self.sleep_args(model_trace, args, kwargs)
        guide_trace = poutine.trace(poutine.replay(guide, trace=model_trace)).get_trace(*guide_args, **guide_kwargs)
        guide_trace = prune_subsample_sites(guide_trace)
        check_scores_given_latents(guide_trace)
        log_q = per_example_log_prob(guide_trace, -(max_plate_nesting + 1), 1, self.data_plate)
        return -data_plate_scale(guide_trace, self.data_plate) * log_q.sum()

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """Value: the scaled negative bound; gradient: wake-theta for the model plus the guide's wake/sleep mix."""
        parts = self.log_weight_parts(model, guide, args, kwargs)
        # weights for the model: q held fixed
        log_w = parts.log_likelihood + self.kl_weight * (parts.log_prior - parts.log_guide.detach())
        wake_theta = log_mean_exp(log_w)
        surrogate = wake_theta
        if self.insomnia > 0:
            wake_phi = (normalized_weights(log_w) * parts.log_guide_score).sum(0)
            surrogate = surrogate + self.insomnia * wake_phi
        sleep_loss = 0.0
        if self.insomnia < 1:
            sleep_loss = (1 - self.insomnia) * self._sleep_loss(model, guide, args, kwargs)
        return self.minibatch_loss(parts, wake_theta, surrogate, sleep_loss)
