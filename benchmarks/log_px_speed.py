"""Speed of ``inference.log_marginal_likelihood`` against a hand-written batched PyTorch loop and against the
machine's own matrix-product throughput, side by side in one run; and how its time grows with K and with the
number of examples.

    python benchmarks/log_px_speed.py              # K = 5000 on 100 examples, then three sizes of K and of N
    python benchmarks/log_px_speed.py --chunks     # also: time against draws per vectorized pass
    python benchmarks/log_px_speed.py --quick      # a few hundred draws: the check the test suite runs
    python benchmarks/log_px_speed.py --device cuda   # on a GPU (the default when one is present)
    python benchmarks/log_px_speed.py --draws-per-pass 200000   # another "auto" pass size on this device
    python benchmarks/log_px_speed.py --keep-freed-memory   # with glibc's malloc set as pyro-vae sets it

The model is a Burda-sized VAE (784-200-200-50 tanh, Bernoulli likelihood, diagonal-normal guide) with random
weights on random binary data (time does not depend on the values). Both estimators draw the same standard-normal
noise in the same order, in the passes that ``particle_batch_size="auto"`` chooses (on CPU 100 examples x 20
particles, or x 81 with ``--keep-freed-memory``), so their estimates agree to float rounding; the script stops if
they do not (:func:`check_same_estimate`).

The useful work is the decoder's matrix products, ``2 (50*200 + 200*200 + 200*784)`` FLOPs per particle and
example; "FLOP/s fraction" is that work per second over the FLOP/s of a large single-precision matrix product
measured in the same run.
"""

import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F

LATENT, HIDDEN, DATA = 50, (200, 200), 784
DATA_CHUNK = 100


def build(seed=0, device="cpu"):
    import pyro

    from pyro_vae import build_vae

    pyro.set_rng_seed(seed)
    return build_vae(DATA, latent_dim=LATENT, hidden_sizes=HIDDEN, activation="tanh", num_data=60000).to(device)


def synchronize(device):
    """Wait for the device's queued work, so that a clock reads its time (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def binary_data(num_examples, device):
    return torch.bernoulli(torch.full((num_examples, DATA), 0.3), generator=torch.Generator().manual_seed(1)).to(device)


def decoder_flops_per_draw() -> int:
    sizes = [LATENT, *HIDDEN[::-1], DATA]
    return 2 * sum(a * b for a, b in zip(sizes, sizes[1:]))


def matmul_flops_per_second(size=2048, repeats=5, device="cpu") -> float:
    """FLOP/s of the best of ``repeats`` ``size x size`` single-precision matrix products on ``device``."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def particle_chunk(num_samples, particle_batch_size="auto", device="cpu", examples=DATA_CHUNK):
    """Particles per pass as ``log_marginal_likelihood`` chooses them for ``examples`` on ``device``."""
    from inference.evaluation.log_marginal_likelihood import particles_per_pass

    return particles_per_pass(particle_batch_size, num_samples, (torch.zeros(examples, device=device),), "data")


def plain_copies(vae):
    """The VAE's encoder and decoder as plain ``torch.nn`` modules with the same weights, as a hand-written script
    holds them (the VAE's own are PyroModules, whose parameter reads pass Pyro's handlers)."""
    from pyro_vae.components.networks import MLP

    with torch.random.fork_rng():  # their initialisation must not move the generator the draws come from
        encoder = MLP(DATA, 2 * LATENT, hidden_sizes=HIDDEN, activation="tanh")
        decoder = MLP(LATENT, DATA, hidden_sizes=HIDDEN[::-1], activation="tanh")
    encoder.load_state_dict(vae.encoder.state_dict())
    decoder.load_state_dict(vae.decoder.state_dict())
    device = next(vae.encoder.parameters()).device
    return encoder.to(device), decoder.to(device)


@torch.no_grad()
def hand_written_log_px(vae, x, num_samples, particle_batch_size="auto") -> torch.Tensor:
    """``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` per example, by plain tensors, chunked like ours."""
    from pyro_vae.components.guides import positive_scale

    chunk = particle_chunk(num_samples, particle_batch_size, x.device)
    encoder, decoder = plain_copies(vae)
    log_2pi = math.log(2 * math.pi)
    results = []
    for start in range(0, len(x), DATA_CHUNK):
        xb = x[start : start + DATA_CHUNK]
        loc, raw = encoder(xb).split(LATENT, dim=-1)
        scale = positive_scale(raw, vae.guide_family.min_scale)
        pieces = []
        for p_start in range(0, num_samples, chunk):
            eps = torch.randn(min(chunk, num_samples - p_start), *loc.shape, device=loc.device)
            z = loc + scale * eps
            logits = decoder(z)
            log_lik = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
            log_prior = -0.5 * (z.pow(2).sum(-1) + LATENT * log_2pi)
            log_q = -0.5 * (eps.pow(2).sum(-1) + LATENT * log_2pi) - scale.log().sum(-1)
            pieces.append(log_lik + log_prior - log_q)
        log_w = torch.cat(pieces)
        results.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    return torch.cat(results)


def ours_log_px(vae, x, num_samples, particle_batch_size="auto") -> torch.Tensor:
    from inference import log_marginal_likelihood

    result = log_marginal_likelihood(
        vae.model,
        vae.guide,
        x,
        num_samples=num_samples,
        particle_batch_size=particle_batch_size,
        data_batch_size=DATA_CHUNK,
        max_plate_nesting=vae.max_plate_nesting,
    )
    return result.log_px


def timed(fn, vae, x, *args, seed=0):
    torch.manual_seed(seed)
    synchronize(x.device)
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
    start = time.perf_counter()
    value = fn(vae, x, *args)
    synchronize(x.device)
    return value, time.perf_counter() - start


def minor_page_faults() -> int:
    """This process's minor page faults so far: pages the kernel mapped (and zeroed) when first touched."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_device_mib(device):
    """The device memory allocated at the peak of the last :func:`timed` call, in MiB (``None`` on CPU, where
    ``benchmarks/log_px_memory.py`` measures it)."""
    device = torch.device(device)
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def check_same_estimate(vae, x, num_samples):
    ours, _ = timed(ours_log_px, vae, x, num_samples)
    hand, _ = timed(hand_written_log_px, vae, x, num_samples)
    if not torch.allclose(ours, hand, rtol=1e-5, atol=1e-3):
        raise SystemExit(f"the hand-written estimate differs from ours: max |diff| {(ours - hand).abs().max():.3g}")
    return (ours - hand).abs().max().item()


def compare(vae, num_examples, num_samples, matmul, device="cpu"):
    x = binary_data(num_examples, device)
    difference = check_same_estimate(vae, x[: min(num_examples, 2 * DATA_CHUNK)], min(num_samples, 1000))
    faults = minor_page_faults()
    _, ours = timed(ours_log_px, vae, x, num_samples)
    peak = peak_device_mib(device)
    ours_faults = minor_page_faults() - faults
    _, hand = timed(hand_written_log_px, vae, x, num_samples)
    hand_faults = minor_page_faults() - faults - ours_faults
    work = decoder_flops_per_draw() * num_examples * num_samples
    return {
        "examples": num_examples,
        "K": num_samples,
        "draws_per_pass": particle_chunk(num_samples, device=device, examples=min(num_examples, DATA_CHUNK))
        * min(num_examples, DATA_CHUNK),
        "ours_peak_device_mib": peak,
        "ours_s": ours,
        "hand_s": hand,
        "ratio": ours / hand,
        "ours_flops_fraction": work / ours / matmul,
        "hand_flops_fraction": work / hand / matmul,
        "max_abs_difference": difference,
        "ours_page_faults": ours_faults,
        "hand_page_faults": hand_faults,
    }


def scaling(vae, sizes, device="cpu"):
    rows = []
    for num_examples, num_samples in sizes:
        x = binary_data(num_examples, device)
        _, seconds = timed(ours_log_px, vae, x, num_samples)
        rows.append({"examples": num_examples, "K": num_samples, "seconds": seconds})
    base = rows[0]["seconds"] / (rows[0]["examples"] * rows[0]["K"])
    for row in rows:
        row["seconds_per_draw_vs_first"] = row["seconds"] / (row["examples"] * row["K"]) / base
    return rows


def chunk_sizes(vae, num_samples, particle_chunks, matmul, device="cpu"):
    """Ours at several particles per pass (``DATA_CHUNK`` examples each): the time against the draws per pass."""
    x = binary_data(DATA_CHUNK, device)
    rows = []
    for chunk in particle_chunks:
        _, seconds = timed(ours_log_px, vae, x, num_samples, chunk)
        work = decoder_flops_per_draw() * DATA_CHUNK * num_samples
        rows.append(
            {
                "draws_per_pass": min(chunk, num_samples) * DATA_CHUNK,
                "seconds": seconds,
                "flops_fraction": work / seconds / matmul,
                "peak_device_mib": peak_device_mib(device),
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few hundred draws, to check the script runs")
    parser.add_argument("--chunks", action="store_true", help="also time ours against the draws per pass")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--draws-per-pass", type=int, help='the "auto" pass size on the device (default: the library\'s)'
    )
    parser.add_argument(
        "--keep-freed-memory", action="store_true", help="apply inference.allocator.keep_freed_memory() first"
    )
    args = parser.parse_args(argv)
    if args.keep_freed_memory:
        from inference.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("--keep-freed-memory: not applied (not glibc, or MALLOC_* set in the environment)")
    torch.set_num_threads(args.threads)
    device = args.device
    if args.draws_per_pass:
        from inference.evaluation import log_marginal_likelihood as module

        module.DRAWS_PER_PASS = {**module.DRAWS_PER_PASS, torch.device(device).type: args.draws_per_pass}
    vae = build(device=device)
    matmul = matmul_flops_per_second(512 if args.quick else (2048 if device == "cpu" else 8192), device=device)
    if args.quick:
        report = {
            "compare": compare(vae, 20, 40, matmul, device),
            "scaling": scaling(vae, [(10, 20), (10, 40)], device),
        }
    else:
        sizes = [(100, 1000), (100, 2500), (100, 5000), (50, 2000), (100, 2000), (200, 2000)]
        report = {"compare": compare(vae, 100, 5000, matmul, device), "scaling": scaling(vae, sizes, device)}
    if args.chunks:
        if args.quick:
            report["chunks"] = chunk_sizes(vae, 40, [5, 20], matmul, device)
        elif device == "cpu":
            report["chunks"] = chunk_sizes(vae, 2000, [5, 20, 80, 500], matmul, device)
        else:  # passes of 500 to 500,000 draws
            report["chunks"] = chunk_sizes(vae, 5000, [5, 80, 500, 2000, 5000], matmul, device)
    report["device"] = str(device)
    report["keep_freed_memory"] = args.keep_freed_memory
    report["matmul_gflops"] = matmul / 1e9
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
