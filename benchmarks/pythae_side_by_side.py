"""pyro-vae against pythae 0.1.2 (``pip install -e '.[bench]'``): the same arrays, networks, optimizer and batches,
whole runs of the VAE and of IWAE with K = 5, one epoch of each tool in turn (so that a load that comes and goes on
a shared machine falls on both), denormal floats flushed in both (:mod:`inference.denormals`, as ``pyro-vae train``
runs).

Data: Fashion-MNIST binarized once (the fixed binarization of the data seed), ``--num-train`` training and
``--num-test`` test examples. Networks: 784-400-400-20 ReLU encoder (location and log variance for pythae, location
and scale for ours) and 20-400-400-784 ReLU decoder with a Bernoulli likelihood; Adam 1e-3; batch 100.

Test log p(x), importance sampling with ``--num-samples`` draws per example: ours
(:func:`inference.log_marginal_likelihood`) on both models (pythae's networks as a Pyro model and guide,
:func:`pythae_model_and_guide`), and pythae's own ``get_nll`` on its model (one example at a time).

    python benchmarks/pythae_side_by_side.py --seeds 0 1 2          # the whole comparison
    python benchmarks/pythae_side_by_side.py --epochs 1 --num-train 500 --num-test 20 --num-samples 20   # a check
"""

import argparse
import json
import statistics
import tempfile
import time

import torch

try:
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
except ImportError:
    raise SystemExit("pythae is not installed: pip install -e '.[bench]'") from None

LATENT, HIDDEN = 20, (400, 400)
MODELS = {"vae": ("elbo", 1), "iwae": ("iwae", 5)}


def ours(name, num_data, seed):
    """``(vae, epoch)``: our VAE and one training epoch of it with estimator ``name``."""
    from inference import Trainer, estimator
    from pyro_vae import build_vae

    estimator_name, k = MODELS[name]
    torch.manual_seed(seed)
    vae = build_vae(784, latent_dim=LATENT, hidden_sizes=HIDDEN, activation="relu", num_data=num_data)
    trainer = Trainer(vae.model, vae.guide, estimator(estimator_name, num_particles=k, max_plate_nesting=1),
                      module=vae, validate_every_step=False)  # fmt: skip
    return vae, trainer.train_epoch


class PythaeEncoder(BaseEncoder):
    def __init__(self):
        from pyro_vae.components.networks import MLP

        super().__init__()
        self.net = MLP(784, 2 * LATENT, hidden_sizes=HIDDEN, activation="relu")

    def forward(self, x):
        loc, log_var = self.net(x.reshape(x.shape[0], -1)).split(LATENT, dim=-1)
        return ModelOutput(embedding=loc, log_covariance=log_var)


class PythaeDecoder(BaseDecoder):
    def __init__(self):
        from pyro_vae.components.networks import MLP

        super().__init__()
        self.net = MLP(LATENT, 784, hidden_sizes=HIDDEN[::-1], activation="relu")

    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))


def pythae(name, train, seed, folder):
    """``(model, epoch)``: pythae's model and one epoch of its own trainer (``BaseTrainer.train_step``)."""
    from pythae.data.datasets import BaseDataset
    from pythae.models import IWAE, VAE, IWAEConfig, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    torch.manual_seed(seed)
    config = (
        VAEConfig(input_dim=(784,), latent_dim=LATENT, reconstruction_loss="bce")
        if name == "vae"
        else IWAEConfig(input_dim=(784,), latent_dim=LATENT, reconstruction_loss="bce", number_samples=5)
    )
    model = (VAE if name == "vae" else IWAE)(config, encoder=PythaeEncoder(), decoder=PythaeDecoder())
    training = BaseTrainerConfig(output_dir=folder, learning_rate=1e-3, per_device_train_batch_size=100,
                                 num_epochs=1, no_cuda=True, seed=seed, optimizer_cls="Adam")  # fmt: skip
    trainer = BaseTrainer(model, train_dataset=BaseDataset(train, torch.zeros(len(train))), training_config=training)
    trainer.prepare_training()
    epochs = iter(range(1, 1 << 30))
    return model, lambda: trainer.train_step(next(epochs))


def pythae_model_and_guide(model):
    """pythae's networks as a Pyro model and guide with the data in plate ``"data"``, for our evaluator."""
    import pyro
    import pyro.distributions as dist

    def pyro_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            probs = model.decoder(z.reshape(-1, LATENT)).reconstruction.reshape(*z.shape[:-1], 784)
            pyro.sample("x", dist.Bernoulli(probs=probs.clamp(1e-7, 1 - 1e-7)).to_event(1), obs=x)

    def pyro_guide(x):
        with pyro.plate("data", x.shape[0]):
            out = model.encoder(x)
            pyro.sample("z", dist.Normal(out.embedding, (0.5 * out.log_covariance).exp()).to_event(1))

    return pyro_model, pyro_guide


def our_log_px(model, guide, x, num_samples, seed):
    """Mean test log p(x) by our importance sampling, and its seconds."""
    from inference import log_marginal_likelihood, log_px_method

    start = time.perf_counter()
    result = log_marginal_likelihood(model, guide, x, method=log_px_method("is", num_samples=num_samples),
                                     data_batch_size=100, max_plate_nesting=1, progress=False, seed=seed)  # fmt: skip
    return result.mean, time.perf_counter() - start


def side_by_side(name, train, test, epochs, num_samples, seed) -> dict:
    """Per-epoch seconds of both tools, one epoch of each in turn, then test log p(x) by each evaluator."""
    from inference.denormals import flushing_denormals
    from pyro_vae.data import batches

    with flushing_denormals(True), tempfile.TemporaryDirectory() as folder:
        vae, our_epoch = ours(name, len(train), seed)
        theirs, their_epoch = pythae(name, train, seed, folder)
        stream = batches(train, 100, shuffle=True, generator=torch.Generator().manual_seed(seed))
        seconds = {"ours": [], "pythae": []}
        for _ in range(epochs):
            for tool, epoch in (("ours", lambda: our_epoch(stream)), ("pythae", their_epoch)):
                start = time.perf_counter()
                epoch()
                seconds[tool].append(time.perf_counter() - start)
        vae.eval(), theirs.eval()
        with torch.no_grad():
            log_px = {
                "ours on ours": our_log_px(vae.model, vae.guide, test, num_samples, seed),
                "ours on pythae": our_log_px(*pythae_model_and_guide(theirs), test, num_samples, seed),
            }
            start = time.perf_counter()
            nll = theirs.get_nll(test, n_samples=num_samples, batch_size=min(num_samples, 1000))
            log_px["pythae on pythae"] = (float(nll), time.perf_counter() - start)
    ratio = statistics.median(p / o for p, o in zip(seconds["pythae"], seconds["ours"]))
    return {"model": name, "seed": seed, "seconds": seconds, "log_px": log_px, "pythae_over_ours": ratio}


def binarized_fashion_mnist(num_train, num_test):
    from pyro_vae.data import fixed_binarization, load_dataset

    splits = load_dataset("fashion-mnist", num_train=num_train, num_test=num_test)
    return fixed_binarization(splits.train, seed=1), fixed_binarization(splits.test, seed=3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train, test = binarized_fashion_mnist(args.num_train, args.num_test)
    rows = [side_by_side(name, train, test, args.epochs, args.num_samples, seed)
            for seed in args.seeds for name in MODELS]  # fmt: skip
    print(f"torch {torch.__version__}, {args.threads} threads; {len(train)} train, {len(test)} test, {args.epochs} "
          f"epochs, K = {args.num_samples} for log p(x)")  # fmt: skip
    print("| model | seed | ours (s/epoch) | pythae (s/epoch) | pythae / ours | log p(x): ours on ours "
          "| ours on pythae | pythae on pythae | eval s: ours on pythae | pythae's |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lp = r["log_px"]
        print(f"| {r['model']} | {r['seed']} | {statistics.mean(r['seconds']['ours']):.3f} | "
              f"{statistics.mean(r['seconds']['pythae']):.3f} | {r['pythae_over_ours']:.2f} | "
              f"{lp['ours on ours'][0]:.2f} | {lp['ours on pythae'][0]:.2f} | {lp['pythae on pythae'][0]:.2f} | "
              f"{lp['ours on pythae'][1]:.1f} | {lp['pythae on pythae'][1]:.1f} |")  # fmt: skip
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
