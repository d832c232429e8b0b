"""Three choices inside our training step, each timed against its alternative side by side in one run (train_speed's
alternating blocks; the ratio is the median of the blocks' ratios), on train_speed's 784-400-20 VAE at one
particle, where the step's Python weighs most:

* ``queued``: :meth:`inference.Trainer.train_epoch`, whose steps read nothing back from the device (the losses
  are tested on it and read every ``check_every`` steps), against the loop it replaced, :meth:`Trainer.step` on
  every batch (a read of the loss and of the gradient norm's finiteness each step);
* ``stl``: ``elbo-stl`` scoring ``log q`` once, at the guide's detached parameters
  (:class:`~inference.stop_gradient.StopParametersAfterDrawing`), against scoring it a second time after Pyro's
  trace has (:class:`StlScoredTwice`, the implementation it replaced);
* ``networks``: the VAE's encoder and decoder as PyroModules (every parameter read is a Pyro ``param``
  statement, which traces record) against the same networks as plain ``torch.nn`` modules.

Before timing, each pair is checked to compute the same thing: the same losses and parameters after a few steps
on the same draws (bit for bit for ``queued`` and ``stl``).

    python benchmarks/step_variants.py              # batch 128, 1,200 steps each in 40 blocks (about 1.5 minutes)
    python benchmarks/step_variants.py --quick      # the checks and a few steps: what the test suite runs
    python benchmarks/step_variants.py --device cuda --steps 600 --rounds 20    # on a GPU (the default if present)
"""

import argparse
import statistics

import torch
from train_speed import build, interleaved_times, median_ratio, print_table  # benchmarks/ is on the path

from inference import Trainer, estimator
from inference.objectives.elbo import StickingTheLandingELBO
from inference.stop_gradient import detach_distribution_parameters


class StlScoredTwice(StickingTheLandingELBO):
    """``elbo-stl`` as it was: Pyro's trace scores the guide with live parameters, then each site's entropy term is
    replaced by ``log q`` at detached parameters, scaled and masked as the site is."""

    def guide_to_trace(self, guide):
        return guide

    def _get_trace(self, model, guide, args, kwargs):
        from pyro.distributions.util import scale_and_mask

        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site["is_observed"]:
                log_q = detach_distribution_parameters(site["fn"]).log_prob(site["value"])
                stopped = scale_and_mask(log_q, site["scale"], site["mask"])
                site["score_parts"] = site["score_parts"]._replace(entropy_term=stopped)
        return model_trace, guide_trace


def trainer(loss, plain_networks=False, num_data=60000, device="cpu"):
    """A trainer as `pyro-vae train` builds it, on a fresh VAE (the same initial weights every time)."""
    vae = build(0, num_data)
    if plain_networks:  # the same weights in plain torch.nn modules: no param statements
        from pyro_vae.components.networks import MLP

        for name, sizes in (("encoder", (784, 40)), ("decoder", (20, 784))):
            plain = MLP(*sizes, hidden_sizes=(400,), activation="softplus")
            plain.load_state_dict(getattr(vae, name).state_dict())
            delattr(vae, name)
            setattr(vae, name, plain)
            assert type(getattr(vae, name)) is MLP
    vae.to(device)
    return Trainer(vae.model, vae.guide, loss, module=vae, validate_every_step=False)


def checked_epoch(t, batches, num_data=60000):
    """The epoch loop before queued steps: :meth:`Trainer.step` on every batch."""
    return -sum(t.step(*batch) * batch[0].shape[0] / num_data for batch in batches) / num_data


def queued_epoch(t, batches, num_data=60000):
    return t.train_epoch(batches, num_data=num_data)


def pairs(device="cpu") -> dict:
    """``{variant: [(name, trainer, epoch), (name, trainer, epoch)]}``; ``epoch(trainer, batches)`` steps through
    ``batches``."""
    elbo = lambda: estimator("elbo", max_plate_nesting=1)  # noqa: E731
    return {
        "queued": [
            ("queued", trainer(elbo(), device=device), queued_epoch),
            ("checked", trainer(elbo(), device=device), checked_epoch),
        ],
        "stl": [
            ("scored once", trainer(estimator("elbo-stl", max_plate_nesting=1), device=device), queued_epoch),
            ("scored twice", trainer(StlScoredTwice(max_plate_nesting=1), device=device), queued_epoch),
        ],
        "networks": [
            ("PyroModule", trainer(elbo(), device=device), queued_epoch),
            ("plain nn", trainer(elbo(), plain_networks=True, device=device), queued_epoch),
        ],
    }


def steps_on(x, t, epoch):
    """``run(n)``: ``n`` steps of ``t`` on the batch ``x``."""
    return lambda n: epoch(t, [(x,)] * n)


def largest_difference_after_steps(pair, x, steps=3) -> float:
    """Take ``steps`` steps with each side on the same draws; the largest difference in parameters after them."""
    for _, t, epoch in pair:
        torch.manual_seed(0)
        steps_on(x, t, epoch)(steps)
    (_, a, _), (_, b, _) = pair
    return max((p - q).abs().max().item() for p, q in zip(a.module.parameters(), b.module.parameters()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the checks, and 4 steps each: not a timing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, rounds = (4, 2) if args.quick else (args.steps, args.rounds)
    x = torch.bernoulli(torch.full((args.batch_size, 784), 0.3), generator=torch.Generator().manual_seed(0))
    x = x.to(args.device)
    rows = []
    for variant, pair in pairs(args.device).items():
        difference = largest_difference_after_steps(pair, x)
        (name_a, _, _), (name_b, _, _) = pair
        runs = {name: steps_on(x, t, epoch) for name, t, epoch in pair}
        times = interleaved_times(runs, steps, rounds=rounds, device=args.device)
        rows.append({
            "variant": variant, "a": name_a, "b": name_b, "parameter_difference": difference,
            "a_ms": 1e3 * statistics.median(times[name_a]), "b_ms": 1e3 * statistics.median(times[name_b]),
            "ratio": median_ratio(times, name_a, name_b),
        })  # fmt: skip
    print(f"torch {torch.__version__} on {args.device}, {args.threads} threads, batch {args.batch_size}, {steps} "
          f"steps each in {rounds} alternating blocks")  # fmt: skip
    header = ["variant", "a", "b", "largest parameter difference after 3 steps", "a (ms/step)", "b (ms/step)", "a / b"]
    lines = [[r["variant"], r["a"], r["b"], f"{r['parameter_difference']:.1e}", f"{r['a_ms']:.2f}",
              f"{r['b_ms']:.2f}", f"{r['ratio']:.3f}"] for r in rows]  # fmt: skip
    print_table(header, lines, rows)
    return rows


if __name__ == "__main__":
    main()
