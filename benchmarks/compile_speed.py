"""Whether ``torch.compile`` speeds up the networks a training step runs: the train_speed benchmark's encoder and
decoder (784-400-40 and 20-400-784, softplus), forward and backward, eager against compiled, side by side in one
run (alternating blocks and the median of the blocks' ratios, train_speed's ``interleaved_times``), at batch 128
and 1024.

    python benchmarks/compile_speed.py             # about a minute on 2 cores, most of it compiling

Compiling for CPU needs a C++ compiler (TorchInductor calls it), which the CI machine lacks, so no test runs this
script; it checks itself that compiled and eager networks give the same outputs before timing them.

The networks are the VAE's own (:class:`pyro_vae.components.networks.MLP`), compiled in place with
``nn.Module.compile()`` so that their ``state_dict`` keys, and so checkpoints, would not change; the compile time
(the first call, and a second for the second batch size) is reported apart.

The second table compiles the whole loss instead: ``elbo``'s ``differentiable_loss`` on train_speed's VAE, Pyro's
handlers and traces included (where our per-step overhead is), forward and backward. TorchDynamo splits it into
many graphs at Pyro's Python; the table says whether what remains is faster, and ``--explain`` lists the splits:

    python benchmarks/compile_speed.py --explain   # the whole loss's graphs, graph breaks and their reasons
"""

import argparse
import collections
import statistics
import time

import torch
from train_speed import (  # the same alternating blocks and median ratio (benchmarks/ is on the path)
    build,
    interleaved_times,
    median_ratio,
    print_table,
    repeat,
)


def networks(seed=0):
    from pyro_vae.components.networks import MLP

    torch.manual_seed(seed)
    return MLP(784, 40, hidden_sizes=(400,), activation="softplus"), MLP(
        20, 784, hidden_sizes=(400,), activation="softplus"
    )


def forward_backward(encoder, decoder, x):
    """The networks' share of an ELBO step: encode, decode the means, a scalar, its gradient."""
    loc = encoder(x)[:, :20]
    decoder(loc).logsumexp(-1).sum().backward()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--explain", action="store_true", help="list the whole loss's graph breaks, then stop")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.explain:
        return explain_whole_loss(args.batch_sizes[0])
    batch_sizes, steps = args.batch_sizes, args.steps
    eager, compiled = networks(), networks()
    for module in compiled:
        module.compile()
    rows = []
    for batch_size in batch_sizes:
        x = torch.rand(batch_size, 784)
        start = time.perf_counter()
        forward_backward(*compiled, x)  # compiles for this shape
        compile_seconds = time.perf_counter() - start
        forward_backward(*eager, x)
        with torch.no_grad():
            same = torch.allclose(compiled[1](compiled[0](x)[:, :20]), eager[1](eager[0](x)[:, :20]), atol=1e-4)
        if not same:
            raise SystemExit("the compiled networks' outputs differ from the eager ones")
        times = interleaved_times(
            {
                "compiled": repeat(lambda x=x: forward_backward(*compiled, x)),
                "eager": repeat(lambda x=x: forward_backward(*eager, x)),
            },
            steps,
        )
        rows.append(row("networks", batch_size, times, compile_seconds))
    rows += whole_loss_rows(batch_sizes, steps)
    print(f"torch {torch.__version__}, {args.threads} threads")
    header = ["compiled", "batch", "eager (ms)", "compiled (ms)", "compiled / eager", "first compiled call (s)"]
    lines = [[r["what"], r["batch"], f"{r['eager_ms']:.2f}", f"{r['compiled_ms']:.2f}",
              f"{r['compiled_over_eager']:.2f}", f"{r['first_call_s']:.1f}"] for r in rows]  # fmt: skip
    print_table(header, lines, rows)
    return rows


def row(what, batch_size, times, compile_seconds) -> dict:
    return {
        "what": what,
        "batch": batch_size,
        "eager_ms": 1e3 * statistics.median(times["eager"]),
        "compiled_ms": 1e3 * statistics.median(times["compiled"]),
        "compiled_over_eager": median_ratio(times, "compiled", "eager"),
        "first_call_s": compile_seconds,
    }


def elbo_loss_and_gradient():
    """``loss_and_gradient(x)``: ``elbo``'s loss on train_speed's VAE, through Pyro, and its backward pass."""
    import pyro

    from inference import estimator

    vae = build(0)
    loss = estimator("elbo", num_particles=1, max_plate_nesting=1)

    def loss_and_gradient(x):
        with pyro.validation_enabled(False):
            loss.differentiable_loss(vae.model, vae.guide, x).backward()

    return loss_and_gradient


def explain_whole_loss(batch_size) -> dict:
    """TorchDynamo's account of the whole loss: how many graphs, and where and why it splits them."""
    loss_and_gradient = elbo_loss_and_gradient()
    x = torch.bernoulli(torch.full((batch_size, 784), 0.3))
    loss_and_gradient(x)  # the first call checks the model/guide pair, outside what is explained
    explanation = torch._dynamo.explain(loss_and_gradient)(x)
    reasons = collections.Counter(
        f"{str(b.reason).splitlines()[0]} ({b.user_stack[-1].filename.split('site-packages/')[-1]}:"
        f"{b.user_stack[-1].lineno})"
        for b in explanation.break_reasons
    )
    print(f"torch {torch.__version__}: {explanation.graph_count} graphs, {explanation.graph_break_count} graph breaks")
    for reason, count in reasons.most_common():
        print(f"{count} x {reason}")
    return {"graphs": explanation.graph_count, "breaks": explanation.graph_break_count, "reasons": dict(reasons)}


def whole_loss_rows(batch_sizes, steps) -> list:
    """``elbo``'s loss and its gradient through Pyro, eager against ``torch.compile``d, at each batch size."""
    loss_and_gradient = elbo_loss_and_gradient()

    compiled = torch.compile(loss_and_gradient)
    rows = []
    for batch_size in batch_sizes:
        x = torch.bernoulli(torch.full((batch_size, 784), 0.3))
        start = time.perf_counter()
        compiled(x)
        compile_seconds = time.perf_counter() - start
        times = interleaved_times(
            {"compiled": repeat(lambda x=x: compiled(x)), "eager": repeat(lambda x=x: loss_and_gradient(x))}, steps
        )
        rows.append(row("the whole loss, through Pyro", batch_size, times, compile_seconds))
    return rows


if __name__ == "__main__":
    main()
