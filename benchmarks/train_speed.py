"""Time per training step through the trainer `pyro-vae train` uses, against a hand-written PyTorch step of the
same objective, architecture and optimizer, side by side in one run (alternating blocks of steps, so that a passing
load on a shared machine falls on all); the ratio is ours / hand-written, the median of the blocks' ratios.

The trainer runs Adam's fused kernel (:mod:`inference.training.optimizers`). The hand-written step runs twice: with
``torch.optim.Adam(params, lr)`` as a script writes it (on a CPU, torch's loop over parameters in Python), and with
``fused=True`` (the trainer's kernel; the difference between the two ratios is the optimizer's alone). For ``elbo``
and ``elbo-analytic-kl`` a third reference is the same VAE as a minimal Pyro program under Pyro's own ELBO
(:class:`PyroMinimal`): its time over the fused hand-written step is the cost of running any Pyro model/guide.

    python benchmarks/train_speed.py                        # batch 128 and 1024, about 30 minutes on 2 cores
    python benchmarks/train_speed.py --quick                # a few steps each: the check the test suite runs
    python benchmarks/train_speed.py --estimators elbo:1 iwae:50 --batch-sizes 128   # some of the cases
    python benchmarks/train_speed.py --device cuda          # on a GPU (the default when one is present)
    python benchmarks/train_speed.py --keep-freed-memory    # with malloc set as `pyro-vae train` sets it
    python benchmarks/train_speed.py --whole-run --seeds 0 1 2   # per-epoch times of whole runs (below)

``--whole-run`` times every epoch of whole training runs (:func:`whole_run`; by default issue 27's: binarized
Fashion-MNIST, 10,000 training examples, 784-400-400-20 ReLU, batch 100, 20 epochs), ours against the hand-written
loop, each with denormal floats flushed and kept (:mod:`inference.denormals`): steps near initialisation never meet
the denormals that late epochs do.

The model is the issue's MLP VAE: 784-400-20 softplus encoder and 20-400-784 decoder, Bernoulli likelihood,
diagonal-normal guide, Adam, on random binary data (time does not depend on the values). Before timing, each
hand-written objective is checked against ours on the same parameters and the same standard-normal draws
(:func:`check_same_objective`): equal to 1e-5 relative, or the script stops.

Hand-written references (plain tensors, autograd and the same weights in plain ``torch.nn`` modules,
:class:`HandWritten`; no Pyro):

* ``elbo``: ``mean_k log w_k``; ``iwae``: ``logsumexp_k log w_k - log K``;
* ``elbo-analytic-kl``: ``E_q[log p(x | z)] - KL(q || N(0, I))`` with the Gaussian KL in closed form;
* ``elbo-stl``: the ELBO with ``q``'s parameters detached in ``log q(z)`` (sticking the landing, Roeder et al. 2017);
* ``iwae-dreg``: the doubly reparameterized gradient (Tucker et al. 2019): one decoder pass, the decoder's gradient
  from ``sum_k wbar_k log w_k`` and the encoder's from ``sum_k wbar_k^2 log w_k`` with ``q``'s parameters stopped,
  by two backward passes through the same graph;
* ``iwae-stl``: IWAE with ``q``'s parameters detached in ``log q(z)``;
* ``renyi``: ``log mean_k w_k^(1 - alpha) / (1 - alpha)`` (Li & Turner 2016), ``alpha = 0.5``;
* ``miwae``: ``mean_m log mean_k w_mk`` over 5 groups of K / 5 draws; ``ciwae``: ``0.5 ELBO_K + 0.5 IWAE_K``
  (Rainforth et al. 2018);
* ``piwae``: the decoder's gradient from IWAE, the encoder's from the ELBO on the same draws (two backward passes);
* ``rws``: reweighted wake-sleep's wake phases (Bornschein & Bengio 2015) at detached ``z``: the decoder ascends
  IWAE, the encoder ``sum_k wbar_k log q(z_k)`` with the weights fixed.

The aggregate-posterior objectives (``mmd``, ``js``) are left out: they do not bound log p(x), and their cost is a
kernel or a mixture density over all ``(K B)^2`` pairs of draws, not the step. ``score`` and ``vimco`` are for
latents without a reparameterized draw.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

#: The issue's estimators: the ELBO's three gradients with one particle and, like the IWAE family, with 5 and 50;
#: then every other estimator of continuous latents that bounds log p(x), with 5 and 50 draws per data point.
ESTIMATORS = [
    *[(name, k) for k in (1, 5, 50) for name in ("elbo", "elbo-analytic-kl", "elbo-stl")],
    *[(name, k) for k in (5, 50) for name in ("iwae", "iwae-dreg")],
    *[(name, k) for k in (5, 50) for name in ("iwae-stl", "renyi", "miwae", "ciwae", "piwae", "rws")],
]

#: The options of those with more than K, as their hand-written references compute them: the Renyi bound's order
#: and CIWAE's ELBO share at their defaults, MIWAE's K draws in 5 groups of K / 5; PIWAE's guide follows the ELBO
#: and RWS's guide wake-phi alone (their defaults, ``num_inner=1`` and ``insomnia=1``).
RENYI_ALPHA, CIWAE_BETA, MIWAE_GROUPS = 0.5, 0.5, 5


def estimator_options(name, k):
    """Our estimator's options for ``k`` draws per data point (see :data:`RENYI_ALPHA`)."""
    if name == "miwae":
        return {"num_particles": k // MIWAE_GROUPS, "num_outer": MIWAE_GROUPS}
    return {"num_particles": k, **{"renyi": {"alpha": RENYI_ALPHA}, "ciwae": {"beta": CIWAE_BETA}}.get(name, {})}


def build(seed=0, num_data=60000, device="cpu", hidden_sizes=(400,), activation="softplus"):
    import pyro

    from pyro_vae import build_vae

    pyro.set_rng_seed(seed)
    return build_vae(784, latent_dim=20, hidden_sizes=hidden_sizes, activation=activation, num_data=num_data).to(device)


def synchronize(device):
    """Wait for the device's queued work, so that a clock reads its time (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class HandWritten(torch.nn.Module):
    """A VAE's encoder and decoder as plain ``torch.nn`` modules with the same weights, as a hand-written script
    holds them (the VAE's own networks are PyroModules, whose every parameter read passes Pyro's handlers)."""

    def __init__(self, vae, hidden_sizes=(400,), activation="softplus"):
        from pyro_vae.components.networks import MLP

        super().__init__()
        with torch.random.fork_rng():  # their initialisation must not move the generator the draws come from
            self.encoder = MLP(784, 40, hidden_sizes=hidden_sizes, activation=activation)
            self.decoder = MLP(20, 784, hidden_sizes=hidden_sizes[::-1], activation=activation)
        self.encoder.load_state_dict(vae.encoder.state_dict())
        self.decoder.load_state_dict(vae.decoder.state_dict())
        self.min_scale = vae.guide_family.min_scale
        self.to(next(vae.encoder.parameters()).device)


def log_weights(hand, x, eps, stop_q=False, detach_z=False):
    """``(K, B)`` log weights ``log p(x | z) + log p(z) - log q(z | x)`` at ``z = mu + sigma eps``, by hand: the
    three terms, ``q``'s location and scale. ``stop_q`` detaches ``q``'s parameters in ``log q`` (the path through
    ``z`` stays); ``detach_z`` detaches ``z`` (only the log densities' own parameters get gradients)."""
    from pyro_vae.components.guides import positive_scale

    loc, raw = hand.encoder(x).split(20, dim=-1)
    scale = positive_scale(raw, hand.min_scale)
    z = loc + scale * eps
    if detach_z:
        z = z.detach()
    logits = hand.decoder(z)
    log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    q_loc, q_scale = (loc.detach(), scale.detach()) if stop_q else (loc, scale)
    log_q = (-0.5 * ((z - q_loc) / q_scale).pow(2) - q_scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    return log_lik, log_prior, log_q, loc, scale


def log_mean_exp(log_w, dim=0):
    """``log mean exp`` of ``log_w`` along ``dim``."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def hand_losses(name, hand, x, eps, num_data):
    """Estimator ``name`` by hand: ``(loss, decoder_loss, encoder_loss)``. ``loss`` is ``-(N / B) sum_b
    objective_b``; the gradient of ``decoder_loss`` in the decoder's parameters and of ``encoder_loss`` in the
    encoder's are the estimator's. Where one backward pass gives both, all three are one tensor."""
    scale_n = num_data / x.shape[0]

    def minibatch(objective):
        return -scale_n * objective.sum()

    stop_q = name in ("elbo-stl", "iwae-stl", "iwae-dreg")
    log_lik, log_prior, log_q, loc, scale = log_weights(hand, x, eps, stop_q=stop_q, detach_z=name == "rws")
    log_w = log_lik + log_prior - log_q
    if name in ("elbo", "elbo-stl"):
        objective = log_w.mean(0)
    elif name == "elbo-analytic-kl":
        kl = (-scale.log() + 0.5 * (scale.pow(2) + loc.pow(2)) - 0.5).sum(-1)
        objective = log_lik.mean(0) - kl
    elif name in ("iwae", "iwae-stl"):
        objective = log_mean_exp(log_w)
    elif name == "renyi":
        objective = log_mean_exp((1 - RENYI_ALPHA) * log_w) / (1 - RENYI_ALPHA)
    elif name == "miwae":
        objective = log_mean_exp(log_w.reshape(MIWAE_GROUPS, -1, x.shape[0]), 1).mean(0)
    elif name == "ciwae":
        objective = CIWAE_BETA * log_w.mean(0) + (1 - CIWAE_BETA) * log_mean_exp(log_w)
    elif name == "iwae-dreg":  # the decoder follows IWAE's weights, the encoder their squares (q stopped)
        wbar = torch.softmax(log_w, 0).detach()
        loss = minibatch(log_mean_exp(log_w))
        return loss, minibatch((wbar * log_w).sum(0)), minibatch((wbar.pow(2) * log_w).sum(0))
    elif name == "piwae":  # the decoder follows IWAE, the encoder the ELBO on the same draws (num_inner = 1)
        loss = minibatch(log_mean_exp(log_w))
        return loss, loss, minibatch(log_w.mean(0))
    elif name == "rws":  # wake-theta (z and q fixed) plus wake-phi: ascend sum_k wbar_k log q(z_k)
        model_log_w = log_lik + log_prior - log_q.detach()
        wake_theta = log_mean_exp(model_log_w)
        wake_phi = (torch.softmax(model_log_w, 0).detach() * log_q).sum(0)
        surrogate = minibatch(wake_theta + wake_phi)
        return minibatch(wake_theta), surrogate, surrogate
    else:
        raise ValueError(name)
    loss = minibatch(objective)
    return loss, loss, loss


def hand_loss(name, hand, x, eps, num_data):
    """The hand-written loss ``-(N / B) sum_b objective_b`` of estimator ``name`` (see :func:`hand_losses`)."""
    return hand_losses(name, hand, x, eps, num_data)[0]


def hand_step(name, hand, x, eps, num_data, optimizer):
    optimizer.zero_grad(set_to_none=True)
    loss, decoder_loss, encoder_loss = hand_losses(name, hand, x, eps, num_data)
    if decoder_loss is encoder_loss:
        decoder_loss.backward()
    else:  # two gradients of one forward pass
        decoder, encoder = list(hand.decoder.parameters()), list(hand.encoder.parameters())
        decoder_grads = torch.autograd.grad(decoder_loss, decoder, retain_graph=True)
        encoder_grads = torch.autograd.grad(encoder_loss, encoder)
        for p, g in zip(decoder + encoder, decoder_grads + encoder_grads):
            p.grad = g
    optimizer.step()
    return loss.detach()


#: Pyro's own implementations of two of the estimators, for :class:`PyroMinimal`.
PYRO_ELBOS = {"elbo": "Trace_ELBO", "elbo-analytic-kl": "TraceMeanField_ELBO"}


class PyroMinimal:
    """The VAE as a minimal Pyro program, as Pyro's examples write one: the hand-written step's plain ``torch.nn``
    networks, ``torch.distributions`` in ``pyro.sample`` statements, Pyro's own ELBO (:data:`PYRO_ELBOS`) and the
    fused Adam, with Pyro's checks off as in our steps. What it costs over the hand-written step is what a Pyro
    model/guide pays per step before any library adds to it."""

    def __init__(self, name, vae, num_data):
        import pyro.infer

        self.hand = HandWritten(vae)
        self.num_data = num_data
        self.elbo = getattr(pyro.infer, PYRO_ELBOS[name])(max_plate_nesting=1)
        self.optimizer = torch.optim.Adam(self.hand.parameters(), lr=1e-3, fused=True)

    def plate(self, x):
        import pyro

        return pyro.plate("data", self.num_data, subsample=torch.arange(x.shape[0], device=x.device))

    def model(self, x):
        import pyro
        import pyro.distributions as dist

        with self.plate(x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(20), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.hand.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        import pyro
        import pyro.distributions as dist

        from pyro_vae.components.guides import positive_scale

        with self.plate(x):
            loc, raw = self.hand.encoder(x).split(20, dim=-1)
            pyro.sample("z", dist.Normal(loc, positive_scale(raw, self.hand.min_scale)).to_event(1))

    def loss(self, x):
        import pyro

        with pyro.validation_enabled(False):
            return self.elbo.differentiable_loss(self.model, self.guide, x)

    def step(self, x):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def our_trainer(name, k, vae):
    from inference import Trainer, estimator

    loss = estimator(name, **estimator_options(name, k), max_plate_nesting=1)
    return Trainer(vae.model, vae.guide, loss, module=vae, validate_every_step=False)  # as pyro-vae train runs it


def our_seeded_loss(name, k, batch_size, seed, num_data):
    """``(vae, x, loss)``: our estimator's loss on a fresh VAE and batch, its draws made after ``manual_seed(seed)``;
    the generator is seeded again on return, so that a reference computed next makes the same draws."""
    vae = build(seed, num_data)
    x = torch.bernoulli(torch.full((batch_size, 784), 0.3), generator=torch.Generator().manual_seed(seed))
    trainer = our_trainer(name, k, vae)
    trainer.setup(x)
    torch.manual_seed(seed)
    ours = trainer.loss.differentiable_loss(vae.model, vae.guide, x).item()
    torch.manual_seed(seed)
    return vae, x, ours


def check_same_objective(name, k, batch_size=16, seed=0, num_data=60000):
    """Our estimator's loss and the hand-written one on the same parameters and draws: ``(ours, hand)``."""
    vae, x, ours = our_seeded_loss(name, k, batch_size, seed, num_data)
    eps = torch.randn(k, batch_size, 20)  # the draws Pyro's rsample made: the same generator, shape (K, B, D)
    with torch.no_grad():
        hand = hand_loss(name, HandWritten(vae), x, eps, num_data).item()
    return ours, hand


def check_pyro_minimal_objective(name, batch_size=16, seed=0, num_data=60000):
    """Our estimator's loss and :class:`PyroMinimal`'s on the same parameters and draws: ``(ours, pyro)``."""
    vae, x, ours = our_seeded_loss(name, 1, batch_size, seed, num_data)
    return ours, PyroMinimal(name, vae, num_data).loss(x).item()


def loop(step):
    """``run(n)``: ``n`` calls of ``step``, whose losses add up on the device and are read once, at the end, as a
    training loop that reports its loss per epoch reads it (a read every step would make a GPU wait every step)."""

    def run(n):
        total = 0.0
        for _ in range(n):
            total = total + step()
        return float(total)

    return run


def repeat(step):
    """``run(n)``: ``n`` calls of ``step``, for steps that return nothing."""

    def run(n):
        for _ in range(n):
            step()

    return run


def time_steps(run, steps, device="cpu"):
    """Seconds per step of ``run(steps)``, which takes ``steps`` steps."""
    synchronize(device)
    start = time.perf_counter()
    run(steps)
    synchronize(device)
    return (time.perf_counter() - start) / steps


def interleaved_times(runs_by_name, steps, rounds=6, warmup=3, device="cpu"):
    """Seconds per step of each of ``runs_by_name`` (``{name: run}``, ``run(n)`` taking ``n`` steps, e.g.
    :func:`loop`), timed in ``rounds`` alternating blocks of ``steps / rounds`` steps so that a load that comes and
    goes on a shared machine falls on all of them: ``{name: [seconds per step in each block]}``."""
    for run in runs_by_name.values():
        run(warmup)
    rounds = max(1, min(rounds, steps))
    block = max(1, steps // rounds)
    times = {name: [] for name in runs_by_name}
    for _ in range(rounds):
        for name, run in runs_by_name.items():
            times[name].append(time_steps(run, block, device))
    return times


def median_ratio(times, numerator, denominator) -> float:
    """The median over blocks of ``numerator``'s time over ``denominator``'s in the same block."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


def benchmark(name, k, batch_size, steps, num_data=60000, device="cpu"):
    """Ours against the hand-written step with torch's default Adam (``hand``: the Python loop over parameters on
    a CPU) and with Adam's fused kernel (``hand_fused``: the kernel the trainer picks, :mod:`inference.training.
    optimizers`); ``ratio`` and ``ratio_fused`` are ours over each."""
    x = torch.bernoulli(torch.full((batch_size, 784), 0.3)).to(device)
    trainer = our_trainer(name, k, build(0, num_data, device))
    hands = {}
    for label, options in (("hand", {}), ("hand_fused", {"fused": True})):
        hand_written = HandWritten(build(0, num_data, device))
        optimizer = torch.optim.Adam(hand_written.parameters(), lr=1e-3, **options)
        hands[label] = loop(
            lambda h=hand_written, o=optimizer: hand_step(
                name, h, x, torch.randn(k, batch_size, 20, device=device), num_data, o
            )
        )
    if name in PYRO_ELBOS and k == 1:
        pyro_minimal = PyroMinimal(name, build(0, num_data, device), num_data)
        hands["pyro"] = loop(lambda: pyro_minimal.step(x))
    ours = lambda n: trainer.train_epoch([(x,)] * n, num_data=num_data)  # noqa: E731 (as `pyro-vae train` steps)
    times = interleaved_times({"ours": ours, **hands}, steps, device=device)
    row = {"estimator": name, "K": k, "batch": batch_size, "pyro_ms": None, "ratio_pyro": None}
    row.update({f"{label}_ms": 1e3 * statistics.median(blocks) for label, blocks in times.items()})
    row.update(ratio=median_ratio(times, "ours", "hand"), ratio_fused=median_ratio(times, "ours", "hand_fused"))
    if "pyro" in times:
        row.update(
            ratio_pyro=median_ratio(times, "ours", "pyro"),
            pyro_over_hand_fused=median_ratio(times, "pyro", "hand_fused"),
        )
    return row


#: The whole run of issue 27, as ``pyro-vae train --dataset fashion-mnist --num-train 10000 --latent-dim 20
#: --hidden-sizes 400 400 --activation relu --batch-size 100`` trains it (dynamic binarization, Adam 1e-3).
WHOLE_RUN_NETWORKS = {"hidden_sizes": (400, 400), "activation": "relu"}
#: Epochs 1 to 8 are "early", the rest "late" (the issue saw the epochs slow down from the 9th).
EARLY_EPOCHS = 8


def whole_run(train, epochs, batch_size=100, seed=0):
    """Training-epoch seconds over a whole run, ours and the hand-written loop (fused Adam), each with denormals
    flushed (``on``) and kept (``off``): four trainings from the same initial weights and data stream, one epoch of
    each in turn, so that a load that comes and goes on a shared machine falls on all four. Returns
    ``{"seconds": {run: [per epoch]}, "objective": {run: last epoch's mean training objective}}``."""
    from inference.denormals import flushing_denormals
    from pyro_vae.data import batches

    steps = {}
    for flush in ("off", "on"):
        with flushing_denormals(flush == "on"):
            vae = build(seed, len(train), **WHOLE_RUN_NETWORKS)
            hand = HandWritten(build(seed, len(train), **WHOLE_RUN_NETWORKS), **WHOLE_RUN_NETWORKS)
        streams = [
            batches(train, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
                    dynamic_binarization=True)
            for _ in range(2)
        ]  # fmt: skip
        trainer = our_trainer("elbo", 1, vae)
        steps[f"ours, {flush}"] = (
            flush,
            lambda t=trainer, b=streams[0]: t.train_epoch(b),
            lambda t=trainer: t.optimizer,
        )
        steps[f"hand-written, {flush}"] = (flush, *_hand_epoch(hand, streams[1], len(train)))
    seconds = {name: [] for name in steps}
    objective, denormal = {}, {name: [] for name in steps}
    rng_states = {name: torch.random.manual_seed(seed).get_state() for name in steps}
    for _ in range(epochs):
        for name, (flush, epoch, optimizer) in steps.items():
            torch.set_rng_state(rng_states[name])  # each run draws its particle noise as if it ran alone
            with flushing_denormals(flush == "on"):
                start = time.perf_counter()
                objective[name] = epoch()
                seconds[name].append(time.perf_counter() - start)
            rng_states[name] = torch.get_rng_state()
            denormal[name].append(denormal_fraction(optimizer()))
    return {"seconds": seconds, "objective": objective, "denormal_fraction": denormal}


def denormal_fraction(optimizer) -> float:
    """The fraction of the values in ``optimizer``'s parameters and state (Adam's moments) that are denormal."""
    tensors = [p for group in optimizer.param_groups for p in group["params"]]
    tensors += [v for state in optimizer.state.values() for v in state.values() if v.dim() > 0]
    tiny = torch.finfo(torch.float32).tiny
    count = sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in tensors)
    return count / sum(t.numel() for t in tensors)


def _hand_epoch(hand, stream, num_data):
    """``(epoch, optimizer)``: one epoch of the hand-written loop, and a getter of its optimizer."""
    optimizer = torch.optim.Adam(hand.parameters(), lr=1e-3, fused=True)

    def epoch():
        total = 0.0
        for (x,) in stream:
            eps = torch.randn(1, x.shape[0], 20)
            total = total + hand_step("elbo", hand, x, eps, num_data, optimizer) * (x.shape[0] / num_data)
        return -float(total) / num_data

    return epoch, lambda: optimizer


def whole_run_summary(seconds) -> dict:
    """Per run: mean seconds of the early and the late epochs, late over early, and the whole run's seconds."""
    summary = {}
    for name, times in seconds.items():
        early, late = statistics.mean(times[:EARLY_EPOCHS]), statistics.mean(times[EARLY_EPOCHS:] or times)
        summary[name] = {"early_s": early, "late_s": late, "late_over_early": late / early, "total_s": sum(times)}
    return summary


def main_whole_run(args) -> list:
    from pyro_vae.data import load_dataset

    train = load_dataset(args.dataset, num_train=args.num_train).train
    results = []
    for seed in args.seeds:
        result = whole_run(train, args.epochs, args.batch_size, seed)
        seconds = result["seconds"]
        print(
            f"seed {seed}: {args.dataset}, {len(train)} training examples, {args.epochs} epochs, "
            f"batch {args.batch_size}"
        )
        header = ["epoch", *[f"{name} (s)" for name in seconds]]
        lines = [[e + 1, *[f"{seconds[name][e]:.3f}" for name in seconds]] for e in range(args.epochs)]
        summary = whole_run_summary(seconds)
        for key, label in (("early_s", f"mean 1-{EARLY_EPOCHS}"), ("late_s", f"mean {EARLY_EPOCHS + 1}-"),
                           ("late_over_early", "late / early"), ("total_s", "whole run")):  # fmt: skip
            lines.append([label, *[f"{summary[name][key]:.3f}" for name in seconds]])
        ratios = {flush: statistics.median(a / b for a, b in zip(seconds[f"ours, {flush}"],
                                                                 seconds[f"hand-written, {flush}"]))
                  for flush in ("off", "on")}  # fmt: skip
        lines.append(["ours / hand-written (median)", f"{ratios['off']:.2f}", "", f"{ratios['on']:.2f}", ""])
        lines.append(["denormal values after the last epoch", *[f"{result['denormal_fraction'][name][-1]:.2e}"
                                                                for name in seconds]])  # fmt: skip
        print_table(header, lines, {"seed": seed, **result, "summary": summary, "ours_over_hand": ratios})
        results.append({"seed": seed, **result, "summary": summary, "ours_over_hand": ratios})
    return results


def print_table(header, lines, rows) -> None:
    """A markdown table (``header``'s cells, then each of ``lines``) and, under it, ``rows`` as JSON."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in lines:
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    print(json.dumps(rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument(
        "--estimators", nargs="+", metavar="NAME:K", help="only these cases, e.g. elbo:1 iwae:50 (default: all 25)"
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 steps per case, batch 16: a check, not a timing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--keep-freed-memory", action="store_true", help="set malloc as `pyro-vae train` does (inference/allocator.py)"
    )
    whole = parser.add_argument_group(
        "whole run", "per-epoch times over a whole run, denormals flushed and kept (the issue's run by default)"
    )
    whole.add_argument("--whole-run", action="store_true", help="time whole training runs instead of steps")
    whole.add_argument("--dataset", default="fashion-mnist")
    whole.add_argument("--num-train", type=int, default=10000)
    whole.add_argument("--epochs", type=int, default=20)
    whole.add_argument("--batch-size", type=int, default=100)
    whole.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    if args.whole_run:
        torch.set_num_threads(args.threads)
        return main_whole_run(args)
    if args.keep_freed_memory:
        from inference.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("--keep-freed-memory: not applied (not glibc, or MALLOC_* set in the environment)")
    torch.set_num_threads(args.threads)
    names = {f"{name}:{k}": (name, k) for name, k in ESTIMATORS}
    unknown = [case for case in args.estimators or () if case not in names]
    if unknown:
        parser.error(f"no case {', '.join(unknown)}; the cases are {' '.join(names)}")
    cases = [names[case] for case in args.estimators] if args.estimators else ESTIMATORS
    for name, k in cases:
        ours, hand = check_same_objective(name, k)
        if abs(ours - hand) > 1e-5 * abs(hand):
            raise SystemExit(f"{name} K={k}: our loss {ours} differs from the hand-written {hand}")
    for name in PYRO_ELBOS:
        ours, pyro_minimal = check_pyro_minimal_objective(name)
        if abs(ours - pyro_minimal) > 1e-5 * abs(pyro_minimal):
            raise SystemExit(f"{name}: our loss {ours} differs from the minimal Pyro program's {pyro_minimal}")
    batch_sizes, steps = ([16], 2) if args.quick else (args.batch_sizes, args.steps)
    rows = [benchmark(name, k, b, steps, device=args.device) for b in batch_sizes for name, k in cases]
    print(
        f"torch {torch.__version__} on {args.device}, {args.threads} threads, {steps} timed steps per case in "
        f"alternating blocks{', malloc keeping freed memory' if args.keep_freed_memory else ''}"
    )
    header = ["estimator", "K", "batch", "ours (ms/step)", "hand-written, default Adam (ms/step)", "ratio",
              "hand-written, fused Adam (ms/step)", "ratio", "minimal Pyro program (ms/step)", "ratio",
              "minimal Pyro / hand-written, fused"]  # fmt: skip
    lines = []
    for r in rows:
        pyro_columns = (
            [f"{r['pyro_ms']:.2f}", f"{r['ratio_pyro']:.2f}", f"{r['pyro_over_hand_fused']:.2f}"]
            if r["pyro_ms"] is not None
            else ["-"] * 3
        )
        times = [f"{r[key]:.2f}" for key in ("ours_ms", "hand_ms", "ratio", "hand_fused_ms", "ratio_fused")]
        lines.append([f"`{r['estimator']}`", r["K"], r["batch"], *times, *pyro_columns])
    print_table(header, lines, rows)
    return rows


if __name__ == "__main__":
    main()
