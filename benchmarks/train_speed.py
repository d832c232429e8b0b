"""Time per training step through the trainer `pyro-vae train` uses, against a hand-written PyTorch step of the
same objective, architecture and optimizer, side by side in one run (alternating blocks of steps, so that a passing
load on a shared machine falls on both); the ratio is ours / hand-written, the median of the blocks' ratios.

    python benchmarks/train_speed.py                        # batch 128 and 1024, about 3 minutes on 2 cores
    python benchmarks/train_speed.py --quick                # a few steps each: the check the test suite runs
    python benchmarks/train_speed.py --device cuda          # on a GPU (the default when one is present)
    python benchmarks/train_speed.py --keep-freed-memory    # with malloc set as `pyro-vae train` sets it

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
  by two backward passes through the same graph.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

ESTIMATORS = [("elbo", 1), ("elbo-analytic-kl", 1), ("elbo-stl", 1), ("iwae", 5), ("iwae-dreg", 5), ("iwae", 50)]


def build(seed=0, num_data=60000, device="cpu"):
    import pyro

    from pyro_vae import build_vae

    pyro.set_rng_seed(seed)
    return build_vae(784, latent_dim=20, hidden_sizes=(400,), activation="softplus", num_data=num_data).to(device)


def synchronize(device):
    """Wait for the device's queued work, so that a clock reads its time (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class HandWritten(torch.nn.Module):
    """A VAE's encoder and decoder as plain ``torch.nn`` modules with the same weights, as a hand-written script
    holds them (the VAE's own networks are PyroModules, whose every parameter read passes Pyro's handlers)."""

    def __init__(self, vae):
        from pyro_vae.components.networks import MLP

        super().__init__()
        with torch.random.fork_rng():  # their initialisation must not move the generator the draws come from
            self.encoder = MLP(784, 40, hidden_sizes=(400,), activation="softplus")
            self.decoder = MLP(20, 784, hidden_sizes=(400,), activation="softplus")
        self.encoder.load_state_dict(vae.encoder.state_dict())
        self.decoder.load_state_dict(vae.decoder.state_dict())
        self.min_scale = vae.guide_family.min_scale
        self.to(next(vae.encoder.parameters()).device)


def log_weights(hand, x, eps, stop_q=False):
    """``(K, B)`` log weights ``log p(x | z) + log p(z) - log q(z | x)`` at ``z = mu + sigma eps``, by hand."""
    from pyro_vae.components.guides import positive_scale

    loc, raw = hand.encoder(x).split(20, dim=-1)
    scale = positive_scale(raw, hand.min_scale)
    z = loc + scale * eps
    logits = hand.decoder(z)
    log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    q_loc, q_scale = (loc.detach(), scale.detach()) if stop_q else (loc, scale)
    log_q = (-0.5 * ((z - q_loc) / q_scale).pow(2) - q_scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    return log_lik, log_prior, log_q, loc, scale


def hand_loss(name, hand, x, eps, num_data):
    """The hand-written loss ``-(N / B) sum_b objective_b`` of estimator ``name`` (value; its gradient is the
    estimator's except for ``iwae-dreg``, whose gradient :func:`hand_step` forms)."""
    scale_n = num_data / x.shape[0]
    log_lik, log_prior, log_q, loc, scale = log_weights(hand, x, eps, stop_q=name == "elbo-stl")
    log_w = log_lik + log_prior - log_q
    if name in ("elbo", "elbo-stl"):
        objective = log_w.mean(0)
    elif name == "elbo-analytic-kl":
        kl = (-scale.log() + 0.5 * (scale.pow(2) + loc.pow(2)) - 0.5).sum(-1)
        objective = log_lik.mean(0) - kl
    elif name in ("iwae", "iwae-dreg"):
        objective = torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])
    else:
        raise ValueError(name)
    return -scale_n * objective.sum()


def hand_step(name, hand, x, eps, num_data, optimizer):
    optimizer.zero_grad(set_to_none=True)
    if name != "iwae-dreg":
        loss = hand_loss(name, hand, x, eps, num_data)
        loss.backward()
    else:
        scale_n = num_data / x.shape[0]
        log_lik, log_prior, log_q, _, _ = log_weights(hand, x, eps, stop_q=True)
        log_w = log_lik + log_prior - log_q
        wbar = torch.softmax(log_w, 0).detach()
        decoder, encoder = list(hand.decoder.parameters()), list(hand.encoder.parameters())
        decoder_grads = torch.autograd.grad(-scale_n * (wbar * log_w).sum(), decoder, retain_graph=True)
        encoder_grads = torch.autograd.grad(-scale_n * (wbar.pow(2) * log_w).sum(), encoder)
        for p, g in zip(decoder + encoder, decoder_grads + encoder_grads):
            p.grad = g
        loss = -scale_n * (torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])).sum()
    optimizer.step()
    return loss.item()


def our_trainer(name, k, vae):
    from inference import Trainer, estimator

    loss = estimator(name, num_particles=k, max_plate_nesting=1)
    return Trainer(vae.model, vae.guide, loss, module=vae, validate_every_step=False)  # as pyro-vae train runs it


def check_same_objective(name, k, batch_size=16, seed=0, num_data=60000):
    """Our estimator's loss and the hand-written one on the same parameters and draws: ``(ours, hand)``."""
    vae = build(seed, num_data)
    x = torch.bernoulli(torch.full((batch_size, 784), 0.3), generator=torch.Generator().manual_seed(seed))
    trainer = our_trainer(name, k, vae)
    trainer.setup(x)
    torch.manual_seed(seed)
    ours = trainer.loss.differentiable_loss(vae.model, vae.guide, x).item()
    torch.manual_seed(seed)
    eps = torch.randn(k, batch_size, 20)  # the draws Pyro's rsample made: the same generator, shape (K, B, D)
    with torch.no_grad():
        hand = hand_loss(name, HandWritten(vae), x, eps, num_data).item()
    return ours, hand


def time_steps(step, steps, device="cpu"):
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def interleaved_times(ours_step, hand_step, steps, rounds=6, warmup=3, device="cpu"):
    """Seconds per step of each, timed in ``rounds`` alternating blocks of ``steps / rounds`` steps so that a load
    that comes and goes on a shared machine falls on both: the medians over blocks, and the median of the blocks'
    ratios."""
    for _ in range(warmup):
        ours_step()
        hand_step()
    rounds = max(1, min(rounds, steps))
    block = max(1, steps // rounds)
    ours, hand = [], []
    for _ in range(rounds):
        ours.append(time_steps(ours_step, block, device))
        hand.append(time_steps(hand_step, block, device))
    ratio = statistics.median(o / h for o, h in zip(ours, hand))
    return statistics.median(ours), statistics.median(hand), ratio


def benchmark(name, k, batch_size, steps, num_data=60000, device="cpu"):
    x = torch.bernoulli(torch.full((batch_size, 784), 0.3)).to(device)
    ours_vae = build(0, num_data, device)
    hand_written = HandWritten(build(0, num_data, device))
    trainer = our_trainer(name, k, ours_vae)
    optimizer = torch.optim.Adam(hand_written.parameters(), lr=1e-3)
    ours, hand, ratio = interleaved_times(
        lambda: trainer.step(x),
        lambda: hand_step(name, hand_written, x, torch.randn(k, batch_size, 20, device=device), num_data, optimizer),
        steps,
        device=device,
    )
    return {"estimator": name, "K": k, "batch": batch_size, "ours_ms": 1e3 * ours, "hand_ms": 1e3 * hand,
            "ratio": ratio}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 steps per case, batch 16: a check, not a timing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--keep-freed-memory", action="store_true", help="set malloc as `pyro-vae train` does (inference/allocator.py)"
    )
    args = parser.parse_args(argv)
    if args.keep_freed_memory:
        from inference.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("--keep-freed-memory: not applied (not glibc, or MALLOC_* set in the environment)")
    torch.set_num_threads(args.threads)
    for name, k in ESTIMATORS:
        ours, hand = check_same_objective(name, k)
        if abs(ours - hand) > 1e-5 * abs(hand):
            raise SystemExit(f"{name} K={k}: our loss {ours} differs from the hand-written {hand}")
    batch_sizes, steps = ([16], 2) if args.quick else (args.batch_sizes, args.steps)
    rows = [benchmark(name, k, b, steps, device=args.device) for b in batch_sizes for name, k in ESTIMATORS]
    print(
        f"torch {torch.__version__} on {args.device}, {args.threads} threads, {steps} timed steps per case in "
        f"alternating blocks{', malloc keeping freed memory' if args.keep_freed_memory else ''}"
    )
    print("| estimator | K | batch | ours (ms/step) | hand-written (ms/step) | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['estimator']}` | {r['K']} | {r['batch']} | {r['ours_ms']:.2f} | {r['hand_ms']:.2f} | "
              f"{r['ratio']:.2f} |")  # fmt: skip
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
