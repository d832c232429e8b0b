r"""A multi-armed bandit over decoders: one encoder, K decoders, and a policy that picks which to train.

Each arm is a VAE made of the **shared** prior, encoder and guide family and its own decoder (an MLP, a
transposed-convolution or a pixel-shuffle decoder, ...). At step :math:`t` the policy picks an arm :math:`a_t`;
that arm's :class:`~inference.training.trainer.Trainer` takes one gradient step on the next minibatch (the trainer
is driven step by step, not copied), and the reward is the negative reconstruction loss of the trained arm on
that minibatch, :math:`r_t = \frac1D E_{q(z \mid x)}[\log p_{a_t}(x \mid z)]` averaged over the batch (nats per
dimension, one guide draw per example).

Policies (:data:`POLICIES`, chosen by name):

* ``ucb1`` (Auer et al. 2002): the arm maximizing :math:`\bar r_a + c \sqrt{2 \ln t / n_a}`, each arm once first;
  :math:`c` is ``scale`` or, by default, the range of the rewards seen so far (UCB1 assumes rewards in [0, 1]);
* ``thompson``: Gaussian Thompson sampling, :math:`\mu_a \sim N(\bar r_a, s^2 / n_a)` with :math:`s` the pooled
  standard deviation of the rewards, the largest draw wins (Agrawal & Goyal 2013);
* ``epsilon-greedy``: the best mean with probability :math:`1 - \epsilon`, else a uniform arm;
* ``uniform``: round robin, the "train every decoder for the same budget" reference.

Rewards drift as every arm trains, so these stationary-bandit policies are heuristics here, as in the source
document; :func:`run_bandit` reports the pulls, the reward curves and every arm's final validation ELBO, so a policy
can be judged against ``uniform`` at the same number of steps.
"""

import math

import torch

from inference.registry import Registry

POLICIES = Registry("bandit policy")


class Policy:
    """Chooses an arm from the pull counts and reward sums so far; ``generator`` drives any randomness."""

    def select(self, counts: torch.Tensor, sums: torch.Tensor, rewards: list, generator) -> int:
        raise NotImplementedError


def _unpulled(counts):
    untried = (counts == 0).nonzero()
    return int(untried[0]) if len(untried) else None


@POLICIES.register("ucb1")
class UCB1(Policy):
    """UCB1 (Auer et al. 2002) with the exploration bonus scaled by ``scale`` (default: the observed reward range)."""

    def __init__(self, scale=None):
        self.scale = scale

    def select(self, counts, sums, rewards, generator):
        first = _unpulled(counts)
        if first is not None:
            return first
        scale = self.scale if self.scale is not None else (max(rewards) - min(rewards)) or 1.0
        t = counts.sum()
        index = sums / counts + scale * torch.sqrt(2 * math.log(t) / counts)
        return int(index.argmax())


@POLICIES.register("thompson")
class GaussianThompson(Policy):
    """Gaussian Thompson sampling: draw each arm's mean from N(mean, s^2 / n) and pick the largest draw."""

    def select(self, counts, sums, rewards, generator):
        first = _unpulled(counts)
        if first is not None:
            return first
        spread = torch.tensor(rewards).std().item() if len(rewards) > 1 else 1.0
        draws = sums / counts + spread / counts.sqrt() * torch.randn(len(counts), generator=generator)
        return int(draws.argmax())


@POLICIES.register("epsilon-greedy")
class EpsilonGreedy(Policy):
    """The arm with the best mean reward, or with probability epsilon a uniformly chosen one."""

    def __init__(self, epsilon: float = 0.1):
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = epsilon

    def select(self, counts, sums, rewards, generator):
        first = _unpulled(counts)
        if first is not None:
            return first
        if torch.rand((), generator=generator).item() < self.epsilon:
            return int(torch.randint(len(counts), (), generator=generator))
        return int((sums / counts).argmax())


@POLICIES.register("uniform")
class RoundRobin(Policy):
    """Every arm in turn: each decoder trained for the same budget."""

    def select(self, counts, sums, rewards, generator):
        return int(counts.sum()) % len(counts)


def decoder_arms(config, decoders, splits):
    """One VAE per decoder component, all sharing the first arm's prior, encoder and guide family."""
    import dataclasses

    from pyro_vae.config import Component
    from pyro_vae.runs import model_for
    from pyro_vae.vae import VAE

    if config.model.top_latent_dim is not None:
        raise ValueError("the decoder bandit shares one latent layer between its arms; unset model.top_latent_dim")
    arms = []
    for decoder in decoders:
        component = decoder if isinstance(decoder, Component) else Component(decoder)
        arm_config = dataclasses.replace(config, model=dataclasses.replace(config.model, decoder=component))
        vae = model_for(arm_config, splits)
        if arms:
            first = arms[0]
            vae = VAE(first.prior, vae.likelihood, first.guide_family, first.encoder, vae.decoder,
                      num_data=len(splits.train))  # fmt: skip
        arms.append(vae)
    return arms


@torch.no_grad()
def reconstruction_reward(vae, x) -> float:
    """``(1/D) E_q[log p(x | z)]`` averaged over the rows of ``x``, from one guide draw each."""
    z = vae.posterior(x).sample()
    return (vae.decode(z).log_prob(x) / x[0].numel()).mean().item()


def run_bandit(config, decoders, policy="ucb1", policy_options=None, steps=1000, names=None, progress=True) -> dict:
    """Train the decoder arms for ``steps`` minibatch steps in all, the policy choosing which arm takes each.

    :param config: a :class:`~pyro_vae.config.RunConfig` (data, model except the decoder, estimator, optimizer,
        batch size); its decoder is replaced by each of ``decoders`` (component names or
        :class:`~pyro_vae.config.Component`); ``names`` label them in the result (default: their names and
        options). The policy's randomness and the minibatch order follow ``config.train.seed``.
    :returns: ``{"policy", "steps", "decoders", "pulls", "mean_reward", "choices", "rewards", "val_elbo",
        "chosen"}``, where ``chosen`` is the arm with the best mean reward over its last pulls. Denormal floats
        are flushed as ``config.flush_denormals`` says.
    """
    from inference.denormals import flushing_denormals

    with flushing_denormals(config.flush_denormals):
        return _run_bandit(config, decoders, policy, policy_options, steps, names, progress)


def _run_bandit(config, decoders, policy, policy_options, steps, names, progress) -> dict:
    from tqdm.auto import tqdm

    from inference.training.trainer import Trainer, evaluate_objectives
    from pyro_vae.runs import estimator_for, eval_split, prepare_data, training_batches

    if len(decoders) < 2:
        raise ValueError(f"a bandit needs at least two decoders to choose between, got {len(decoders)}")
    chooser = POLICIES.build(policy, **(policy_options or {}))
    torch.manual_seed(config.train.seed)
    splits = prepare_data(config)
    arms = decoder_arms(config, decoders, splits)
    trainers = [
        Trainer(vae.model, vae.guide, estimator_for(config, vae), module=vae, optimizer=config.train.optimizer.name,
                optimizer_options=config.train.optimizer.options, clip_norm=config.train.clip_norm)
        for vae in arms
    ]  # fmt: skip
    generator = torch.Generator().manual_seed(config.train.seed)
    train = training_batches(splits, config.train.batch_size, generator)
    counts, sums = torch.zeros(len(arms)), torch.zeros(len(arms))
    rewards, choices = [], []
    stream = _forever(train)
    for _ in tqdm(range(steps), disable=not progress, desc=f"bandit ({policy})", unit="step"):
        arm = chooser.select(counts, sums, rewards, generator)
        (x,) = next(stream)
        trainers[arm].step(x)
        reward = reconstruction_reward(arms[arm], x)
        counts[arm] += 1
        sums[arm] += reward
        rewards.append(reward)
        choices.append(arm)
    val_x = eval_split(splits, "val")
    val = [evaluate_objectives(vae.model, vae.guide, [(val_x,)], max_plate_nesting=1)["elbo"] for vae in arms]
    names = list(names or [d if isinstance(d, str) else f"{d.name}{d.options or ''}" for d in decoders])
    recent = [[r for a, r in zip(choices, rewards) if a == i][-20:] for i in range(len(arms))]
    recent_means = [sum(r) / len(r) if r else -math.inf for r in recent]
    return {
        "policy": policy,
        "steps": steps,
        "decoders": names,
        "pulls": counts.int().tolist(),
        "mean_reward": (sums / counts.clamp(min=1)).tolist(),
        "choices": choices,
        "rewards": rewards,
        "val_elbo": val,
        "chosen": names[max(range(len(arms)), key=lambda i: recent_means[i])],
    }


def _forever(batch_source):
    while True:
        yield from batch_source
