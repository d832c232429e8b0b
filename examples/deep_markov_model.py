"""A small deep Markov model (Krishnan et al. 2017) on synthetic sequences of unequal lengths, trained with KL
annealing under three estimators and judged by importance sampling and annealed importance sampling.

    python examples/deep_markov_model.py             # about 15 minutes of CPU time (BENCHMARKS.md)
    python examples/deep_markov_model.py --quick     # well under a minute

**Data.** Sequences of 4-dimensional observations from a known linear-Gaussian state-space model with a 2-dimensional
state turning slowly about the origin (``z_t = A z_{t-1} + noise``, ``x_t = C z_t + noise``), of lengths drawn
between ``min_length`` and ``max_length`` and padded to the longest with a mask. The generating model's log p(x) per
sequence is known exactly (a Kalman filter), and printed as the reference a learned model approaches from below.

**Model.** ``z_1 ~ N(f(z_0))``, ``z_t ~ N(f(z_{t-1}))``, ``x_t ~ N(g(z_t), diag(sigma^2))`` with small networks
``f`` (a gated transition: a linear map plus a learned nonlinear correction) and ``g`` (an MLP emitter). Time steps
run in ``pyro.markov``; padded steps are masked out (``Distribution.mask``), so a sequence's density covers only its
own length. The sequences are the data plate.

**Guide.** A GRU read backwards through each sequence summarizes the future ``h_t`` (padded steps carry the state
through unchanged); ``q(z_t | z_{t-1}, h_t)`` combines it with the previous latent. Everything broadcasts, so the
guide takes a leading particle dimension in ``z_{t-1}``: the vectorized IWAE estimators draw all ``K`` particles in
one pass, and AIS runs its chains the same way.

**KL annealing.** Model and guide put their latent sites under ``poutine.scale(scale=annealing)``, a model argument
raised linearly from ``--min-annealing`` to 1 over the first half of training; evaluation passes 1, so log p(x) is
that of the true joint. (The IWAE estimators weigh each site's log density by its scale, so their K = 1 loss is
the annealed ELBO; see :mod:`inference.importance`.)
"""

import argparse
import contextlib
import math
import sys
import time
import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

import inference

ESTIMATORS = [
    ("elbo", {"max_plate_nesting": 1}),
    ("iwae", {"num_particles": 5, "max_plate_nesting": 1}),
    ("iwae-dreg", {"num_particles": 5, "max_plate_nesting": 1}),
]
LATENT_DIM, DATA_DIM = 2, 4


# ---------------------------------------------------------------------------------------------------------------
# Data: a linear-Gaussian state-space model, and its exact log p(x) by a Kalman filter


class StateSpace:
    """``z_1 ~ N(0, I)``, ``z_t = A z_{t-1} + N(0, q^2 I)``, ``x_t = C z_t + N(0, r^2 I)``."""

    def __init__(self, generator, q=0.3, r=0.3):
        angle = 0.3
        rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        self.A = 0.95 * rotation
        self.C = torch.randn(DATA_DIM, LATENT_DIM, generator=generator)
        self.q, self.r = q, r

    def sample(self, num_sequences, min_length, max_length, generator):
        """``(x [N, T, D], mask [N, T])``, ``T = max_length``; ``mask[n, t]`` is True inside sequence ``n``."""
        lengths = torch.randint(min_length, max_length + 1, (num_sequences,), generator=generator)
        mask = torch.arange(max_length) < lengths[:, None]
        z = torch.randn(num_sequences, LATENT_DIM, generator=generator)
        xs = []
        for t in range(max_length):
            if t > 0:
                z = z @ self.A.T + self.q * torch.randn(num_sequences, LATENT_DIM, generator=generator)
            xs.append(z @ self.C.T + self.r * torch.randn(num_sequences, DATA_DIM, generator=generator))
        x = torch.stack(xs, 1) * mask[..., None]  # padded steps hold zeros
        return x, mask

    def log_px(self, x, mask):
        """The exact log p(x_n) of each sequence under this model, over its own length (Kalman filter)."""
        x, mask = x.double(), mask
        A, C = self.A.double(), self.C.double()
        n = x.shape[0]
        mean = torch.zeros(n, LATENT_DIM, dtype=torch.float64)
        cov = torch.eye(LATENT_DIM, dtype=torch.float64).expand(n, -1, -1)
        total = torch.zeros(n, dtype=torch.float64)
        for t in range(x.shape[1]):
            if t > 0:  # predict
                mean = mean @ A.T
                cov = A @ cov @ A.T + self.q**2 * torch.eye(LATENT_DIM, dtype=torch.float64)
            y_cov = C @ cov @ C.T + self.r**2 * torch.eye(DATA_DIM, dtype=torch.float64)
            y_mean = mean @ C.T
            step = dist.MultivariateNormal(y_mean, covariance_matrix=y_cov).log_prob(x[:, t])
            total = total + torch.where(mask[:, t], step, torch.zeros_like(step))
            gain = cov @ C.T @ torch.linalg.inv(y_cov)  # update
            new_mean = mean + (gain @ (x[:, t] - y_mean)[..., None])[..., 0]
            new_cov = cov - gain @ C @ cov
            keep = mask[:, t]
            mean = torch.where(keep[:, None], new_mean, mean)
            cov = torch.where(keep[:, None, None], new_cov, cov)
        return total.float()


# ---------------------------------------------------------------------------------------------------------------
# The deep Markov model and its guide


class DeepMarkovModel(PyroModule):
    def __init__(self, hidden=32, num_data=None):
        super().__init__()
        self.num_data = num_data  # the training set's size, so a minibatch is scaled up to it
        # transition f(z): loc = W z + gate * MLP(z), scale = softplus(...)
        self.trans_linear = nn.Linear(LATENT_DIM, LATENT_DIM)
        self.trans_hidden = nn.Sequential(nn.Linear(LATENT_DIM, hidden), nn.ReLU())
        self.trans_correction = nn.Linear(hidden, LATENT_DIM)
        self.trans_gate = nn.Linear(hidden, LATENT_DIM)
        self.trans_scale = nn.Linear(hidden, LATENT_DIM)
        self.z_0 = nn.Parameter(torch.zeros(LATENT_DIM))
        # emitter g(z)
        self.emitter = nn.Sequential(nn.Linear(LATENT_DIM, hidden), nn.ReLU(), nn.Linear(hidden, DATA_DIM))
        self.log_sigma = nn.Parameter(torch.zeros(DATA_DIM))
        # guide: a GRU read backwards, and a combiner of its state with z_{t-1}
        self.rnn = nn.GRUCell(DATA_DIM, hidden)
        self.combine_z = nn.Linear(LATENT_DIM, hidden)
        self.guide_loc = nn.Linear(hidden, LATENT_DIM)
        self.guide_scale = nn.Linear(hidden, LATENT_DIM)
        self.q_z_0 = nn.Parameter(torch.zeros(LATENT_DIM))

    def plate(self, x):
        size = len(x) if self.num_data is None else self.num_data
        return pyro.plate("data", size=size, subsample=torch.arange(len(x)))

    def transition(self, z):
        hidden = self.trans_hidden(z)
        gate = torch.sigmoid(self.trans_gate(hidden))
        loc = self.trans_linear(z) + gate * self.trans_correction(hidden)
        return loc, nn.functional.softplus(self.trans_scale(hidden)) + 1e-3

    @pyro_method
    def model(self, x, mask, annealing=1.0):
        """``x [B, T, D]``, ``mask [B, T]``; ``annealing`` scales the latent sites' log densities."""
        z = self.z_0
        with self.plate(x):
            for t in pyro.markov(range(x.shape[1])):
                loc, scale = self.transition(z)
                with poutine.scale(scale=annealing):
                    z = pyro.sample(f"z_{t + 1}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t]))
                emission = dist.Normal(self.emitter(z), self.log_sigma.exp()).to_event(1).mask(mask[:, t])
                pyro.sample(f"x_{t + 1}", emission, obs=x[:, t])

    @pyro_method
    def guide(self, x, mask, annealing=1.0):
        # h_t summarizes x_t..x_T of each sequence; past its end the state stays at zero
        h = x.new_zeros(x.shape[0], self.rnn.hidden_size)
        summaries = [None] * x.shape[1]
        for t in reversed(range(x.shape[1])):
            h = torch.where(mask[:, t, None], self.rnn(x[:, t], h), h)
            summaries[t] = h
        z = self.q_z_0
        with self.plate(x):
            for t in pyro.markov(range(x.shape[1])):
                # z may carry particle (or AIS chain) dimensions on the left: everything broadcasts
                combined = 0.5 * (torch.tanh(self.combine_z(z)) + summaries[t])
                loc = self.guide_loc(combined)
                scale = nn.functional.softplus(self.guide_scale(combined)) + 1e-3
                with poutine.scale(scale=annealing):
                    z = pyro.sample(f"z_{t + 1}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t]))


# ---------------------------------------------------------------------------------------------------------------
# Training and evaluation


def annealing_at(step, steps, minimum):
    """Linear from ``minimum`` to 1 over the first half of training, then 1."""
    return min(1.0, minimum + (1.0 - minimum) * step / max(1, steps // 2))


def train(name, options, x, mask, args, sizes):
    pyro.set_rng_seed(args.seed)
    dmm = DeepMarkovModel(num_data=len(x))
    objective = inference.estimator(name, **options)
    optimizer = torch.optim.Adam(dmm.parameters(), lr=sizes["lr"])
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(sizes["steps"]):
        idx = torch.randperm(len(x), generator=generator)[: sizes["batch_size"]]
        optimizer.zero_grad()
        loss = objective.differentiable_loss(
            dmm.model, dmm.guide, x[idx], mask[idx], annealing_at(step, sizes["steps"], args.min_annealing)
        )
        loss.backward()
        optimizer.step()
    return dmm


def evaluate(dmm, x, mask, args, sizes):
    """IS and AIS estimates of test log p(x) per sequence (``annealing=1``: the true joint)."""
    dmm.num_data = None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", inference.UnreliableEstimateWarning)  # the table says it
        is_result = inference.log_marginal_likelihood(
            dmm.model, dmm.guide, x, mask, 1.0, method="is", num_samples=sizes["num_samples"], seed=args.seed
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", inference.UnreliableEstimateWarning)
        ais_result = inference.log_marginal_likelihood(
            dmm.model,
            dmm.guide,
            x,
            mask,
            1.0,
            method="ais",
            num_steps=sizes["ais_steps"],
            num_chains=sizes["ais_chains"],
            num_leapfrog_steps=5,
            seed=args.seed,
        )
    return is_result, ais_result


@contextlib.contextmanager
def torch_threads(num_threads):
    """Run with ``num_threads`` torch threads, then restore the count. The tensors here are tiny: on 2 CPU cores
    shared with other work, two threads made a training step and an AIS run many times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and few steps (well under a minute)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--min-annealing", type=float, default=0.2, help="the KL annealing factor at step 0")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see torch_threads)")
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args):
    if args.quick:
        sizes = dict(train=200, test=30, min_length=3, max_length=8, steps=150, batch_size=20, lr=1e-2)
        sizes.update(num_samples=200, ais_steps=20, ais_chains=8)
    else:
        sizes = dict(train=1000, test=200, min_length=5, max_length=20, steps=800, batch_size=50, lr=5e-3)
        sizes.update(num_samples=2000, ais_steps=200, ais_chains=16)
    generator = torch.Generator().manual_seed(args.seed)
    source = StateSpace(generator)
    x_train, mask_train = source.sample(sizes["train"], sizes["min_length"], sizes["max_length"], generator)
    x_test, mask_test = source.sample(sizes["test"], sizes["min_length"], sizes["max_length"], generator)
    reference = source.log_px(x_test, mask_test).mean().item()
    print(
        f"{sizes['train']} training and {sizes['test']} test sequences of lengths {sizes['min_length']} to "
        f"{sizes['max_length']}; {sizes['steps']} steps, KL annealing from {args.min_annealing} to 1"
    )
    results = {"reference": reference}
    for name, options in ESTIMATORS:
        start = time.perf_counter()
        dmm = train(name, options, x_train, mask_train, args, sizes)
        seconds = time.perf_counter() - start
        is_result, ais_result = evaluate(dmm, x_test, mask_test, args, sizes)
        results[name] = {"is": is_result, "ais": ais_result, "seconds": seconds}

    print(f"\nTest log p(x) per sequence (nats); the generating model's exact log p(x): {reference:.3f}")
    print(
        f"{'estimator':<10} {'IS, K=' + str(sizes['num_samples']):>17} {'AIS':>9} {'AIS - IS':>9} {'ELBO':>9} "
        f"{'IS reliable':>12} {'train s':>8}"
    )
    for name, _ in ESTIMATORS:
        r = results[name]
        print(
            f"{name:<10} {r['is'].mean:>9.3f} +-{r['is'].stderr:.2f} {r['ais'].mean:>9.3f} "
            f"{r['ais'].mean - r['is'].mean:>9.3f} {r['is'].elbo_mean:>9.3f} {str(r['is'].mc_stderr_reliable):>12} "
            f"{r['seconds']:>8.1f}"
        )
    for name, _ in ESTIMATORS:
        if not all(math.isfinite(v) for v in (results[name]["is"].mean, results[name]["ais"].mean)):
            raise RuntimeError(f"{name}: a non-finite log p(x)")
    return results


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # exit non-zero with the reason on one line
        print(f"deep_markov_model failed: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
