"""Whether ``torch.compile`` speeds up the networks a training step runs: the train_speed benchmark's encoder and
decoder (784-400-40 and 20-400-784, softplus), forward and backward, eager against compiled, side by side in one
run (alternating blocks and the median of the blocks' ratios, train_speed's ``interleaved_times``), at batch 128
and 1024.

    python benchmarks/compile_speed.py             # about a minute on 2 cores, most of it compiling

Compiling for CPU needs a C++ compiler (TorchInductor calls it), which the CI machine lacks, so no test runs this
script; it checks itself that compiled and eager networks give the same outputs before timing them.

The networks are the VAE's own (:class:`pyro_vae.components.networks.MLP`), compiled in place with
``nn.Module.compile()`` so that their ``state_dict`` keys, and so checkpoints, would not change; the compile time
(the first call, and a second for the second batch size) is reported apart. Pyro's tracing around the networks is
not compiled: its handlers run Python on every call, which TorchDynamo would split into many graphs.
"""

import argparse
import json
import time

import torch
from train_speed import interleaved_times  # the same alternating blocks and median ratio (benchmarks/ is on the path)


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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
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
        compiled_s, eager_s, ratio = interleaved_times(
            lambda x=x: forward_backward(*compiled, x), lambda x=x: forward_backward(*eager, x), steps
        )
        rows.append({"batch": batch_size, "eager_ms": 1e3 * eager_s, "compiled_ms": 1e3 * compiled_s,
                     "compiled_over_eager": ratio, "first_call_s": compile_seconds})  # fmt: skip
    print(f"torch {torch.__version__}, {args.threads} threads")
    print("| batch | eager (ms) | compiled (ms) | compiled / eager | first compiled call (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['batch']} | {row['eager_ms']:.2f} | {row['compiled_ms']:.2f} | {row['compiled_over_eager']:.2f} "
              f"| {row['first_call_s']:.1f} |")  # fmt: skip
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
