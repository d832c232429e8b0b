"""Kingma et al.'s (2014) M2 semi-supervised model on binarized Fashion-MNIST with few labels, trained under three
estimators; reports the classifier's test accuracy and test log p(x) by importance sampling and by a stratified
annealed importance sampling.

    python examples/semi_supervised_m2.py                 # 1000 labels, about 4 minutes of CPU time
    python examples/semi_supervised_m2.py --quick         # 100 labels, well under a minute

Needs the Fashion-MNIST IDX files in /usr/share/datasets/fashion-mnist (``apt-get install dataset-fashion-mnist``)
or ``--data-root``; images are read by :mod:`pyro_vae.data.datasets`, and the labels beside them.

**Model.** ``y ~ Cat(1/10)``, ``z ~ N(0, I)``, ``x | y, z ~ Bernoulli(decoder(z, y))``; for labelled images ``y`` is
observed. **Guide.** ``q(y | x)`` is a classifier, marked for parallel enumeration (``infer={"enumerate":
"parallel"}``), and ``q(z | x, y)`` an encoder. Both networks enter through a sum of a part for ``x`` (or ``z``) and
a part for the one-hot ``y``, so a ``y`` that takes all its ten values at an enumeration dimension on the left
broadcasts against particles and data points without reshaping. A labelled batch passes ``y`` to model and guide;
the guide then has no ``y`` site. As in the paper, the classifier also gets ``alpha`` times its cross-entropy on
the labelled images (otherwise it learns from the unlabelled ones only).

**Estimators.** ``iwae`` sums the enumerated ``y`` exactly (for each class, ``K`` draws of ``z`` given it);
``elbo`` is Pyro's ``Trace_ELBO``, which draws ``y`` from the classifier; ``rws`` (reweighted wake-sleep) needs no
reparameterization. An estimator that refuses the model prints its reason and is replaced.

**log p(x) by IS.** Method ``"is"`` also sums ``y`` exactly: ``p(x) ~ (1/K) sum_k sum_y p(x, y, z_yk) / q(z_yk | x,
y)``. **By AIS.** AIS moves continuous latents by HMC and refuses a discrete one, so it is stratified by hand:

    log p(x) = log sum_c p(x, y = c) = logsumexp_c [log p(y = c) + log p(x | y = c)],

and for each class ``c`` AIS on the model with ``y`` observed at ``c`` (what ``poutine.condition(model, {"y": c})``
does; here the model's own ``y`` argument) and the guide ``q(z | x, y = c)`` estimates ``log p(x, y = c)`` (its
log weights include ``log p(y = c)``, the conditioned site's density). The log-sum-exp of the ten unbiased
estimates of ``p(x, y = c)`` is again a stochastic lower bound on ``log p(x)``. Condition the model only: a guide
conditioned with ``poutine.condition`` keeps ``y`` as an observed site whose ``log q(y = c | x)`` counts in log q
(as in Pyro's ELBOs), which would turn each term into ``p(x, y = c) / q(y = c | x)``.
"""

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

import inference
from pyro_vae.data.datasets import (
    FASHION_MNIST_SYSTEM_FOLDERS,
    binarize,
    find_idx_image_files,
    fixed_binarization,
    grey_levels_to_unit_interval,
    read_idx_images,
)

NUM_CLASSES = 10
ESTIMATORS = [
    ("elbo", {"max_plate_nesting": 1}),
    ("iwae", {"num_particles": 5, "max_plate_nesting": 1}),
    ("rws", {"num_particles": 5, "max_plate_nesting": 1}),
]
FALLBACK = ("vimco", {"num_particles": 5, "max_plate_nesting": 1})


# ---------------------------------------------------------------------------------------------------------------
# Data: images through pyro_vae's IDX reader, labels beside them


def read_labels(path):
    from torchvision.datasets.mnist import read_label_file
    from torchvision.datasets.utils import extract_archive

    if not path.endswith(".gz"):
        return read_label_file(path)
    with tempfile.TemporaryDirectory() as folder:
        extract_archive(path, folder)
        return read_label_file(os.path.join(folder, os.path.basename(path)[: -len(".gz")]))


def load_fashion_mnist_with_labels(root=None):
    """``{"train": (x, y), "test": (x, y)}``: grey levels in [0, 1] as ``[N, 784]`` floats, labels ``[N]``."""
    folders = [os.path.join(root, "FashionMNIST", "raw"), root] if root else list(FASHION_MNIST_SYSTEM_FOLDERS)
    files = find_idx_image_files(folders)
    if files is None:
        raise FileNotFoundError(
            f"Fashion-MNIST: no IDX files in {', '.join(folders)}: apt-get install dataset-fashion-mnist, or pass "
            "--data-root"
        )
    data = {}
    for split, path in files.items():
        label_path = path.replace("images-idx3", "labels-idx1")
        data[split] = (grey_levels_to_unit_interval(read_idx_images(path).flatten(1)), read_labels(label_path).long())
    return data


# ---------------------------------------------------------------------------------------------------------------
# M2


class M2(PyroModule):
    def __init__(self, latent_dim=16, hidden=200, data_dim=784):
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder_z = nn.Linear(latent_dim, hidden)
        self.decoder_y = nn.Linear(NUM_CLASSES, hidden, bias=False)
        self.decoder_out = nn.Sequential(nn.Softplus(), nn.Linear(hidden, data_dim))
        self.classifier = nn.Sequential(nn.Linear(data_dim, hidden), nn.Softplus(), nn.Linear(hidden, NUM_CLASSES))
        self.encoder_x = nn.Linear(data_dim, hidden)
        self.encoder_y = nn.Linear(NUM_CLASSES, hidden, bias=False)
        self.encoder_out = nn.Sequential(nn.Softplus(), nn.Linear(hidden, 2 * latent_dim))

    @staticmethod
    def one_hot(y):
        return nn.functional.one_hot(y, NUM_CLASSES).to(torch.get_default_dtype())

    @pyro_method
    def model(self, x, y=None):
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(NUM_CLASSES)), obs=y)
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            # (..., B, H) + (..., 1 or B, H): z's particles and y's enumerated values broadcast
            logits = self.decoder_out(self.decoder_z(z) + self.decoder_y(self.one_hot(y)))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    @pyro_method
    def guide(self, x, y=None):
        with pyro.plate("data", len(x)):
            if y is None:
                y = pyro.sample("y", dist.Categorical(logits=self.classifier(x)), infer={"enumerate": "parallel"})
            loc, raw_scale = self.encoder_out(self.encoder_x(x) + self.encoder_y(self.one_hot(y))).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw_scale) + 1e-4).to_event(1))

    @torch.no_grad()
    def accuracy(self, x, y):
        return (self.classifier(x).argmax(-1) == y).double().mean().item()


def usable_estimator(name, options, m2, x, y):
    """The estimator, or ``None`` with its refusal printed when it refuses M2 (tried on one labelled and one
    unlabelled batch)."""
    objective = inference.estimator(name, **options)
    try:
        objective.differentiable_loss(m2.model, m2.guide, x)
        objective.differentiable_loss(m2.model, m2.guide, x, y)
    except (ValueError, NotImplementedError) as error:
        print(f"  {name} refuses M2: {error}")
        return None
    return objective


def train(objective, m2, data, args, sizes):
    """Adam on the estimator's loss for an unlabelled and a labelled batch (per image), plus ``alpha`` times the
    classifier's cross-entropy on the labelled batch; images binarized afresh at every step."""
    (x_unlabelled, _), (x_labelled, y_labelled) = data["unlabelled"], data["labelled"]
    optimizer = torch.optim.Adam(m2.parameters(), lr=sizes["lr"])
    generator = torch.Generator().manual_seed(args.seed)
    for _ in range(sizes["steps"]):
        u = torch.randint(len(x_unlabelled), (sizes["batch_size"],), generator=generator)
        labelled = torch.randint(len(x_labelled), (sizes["labelled_batch_size"],), generator=generator)
        xu = binarize(x_unlabelled[u], generator)
        xl, yl = binarize(x_labelled[labelled], generator), y_labelled[labelled]
        optimizer.zero_grad()
        loss = objective.differentiable_loss(m2.model, m2.guide, xu) / len(xu)
        loss = loss + objective.differentiable_loss(m2.model, m2.guide, xl, yl) / len(xl)
        loss = loss + args.alpha * nn.functional.cross_entropy(m2.classifier(xl), yl)
        loss.backward()
        optimizer.step()


def stratified_ais(m2, x, args, sizes):
    """``logsumexp_c`` of AIS estimates of ``log p(x, y = c)`` (module docstring), per image."""
    per_class = []
    for c in range(NUM_CLASSES):
        result = inference.log_marginal_likelihood(
            m2.model,
            m2.guide,
            x,
            y=torch.tensor(c),  # a keyword goes to model and guide whole: y observed at c, no y site in the guide
            method="ais",
            num_steps=sizes["ais_steps"],
            num_chains=sizes["ais_chains"],
            num_leapfrog_steps=5,
            seed=args.seed + c,
        )
        per_class.append(result.log_px)
    return torch.stack(per_class).logsumexp(0)


def evaluate(m2, x, y, args, sizes):
    accuracy = m2.accuracy(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", inference.UnreliableEstimateWarning)  # the table says it
        is_result = inference.log_marginal_likelihood(
            m2.model, m2.guide, x, method="is", num_samples=sizes["num_samples"], seed=args.seed
        )
        subset = x[: sizes["ais_examples"]]
        ais = stratified_ais(m2, subset, args, sizes)
    is_on_subset = is_result.log_px[: sizes["ais_examples"]].mean().item()
    return {"accuracy": accuracy, "is": is_result, "ais": ais.mean().item(), "is_on_ais_subset": is_on_subset}


@contextlib.contextmanager
def torch_threads(num_threads):
    """Run with ``num_threads`` torch threads, then restore the count (on 2 CPU cores shared with other work, one
    thread was much faster for these small networks)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 labels, few steps, small test set")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--labels", type=int, help="labelled training images (default 1000, 100 with --quick)")
    parser.add_argument("--alpha", type=float, default=50.0, help="weight of the classifier's cross-entropy")
    parser.add_argument("--data-root", help="a folder holding the Fashion-MNIST IDX files")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args):
    if args.quick:
        sizes = dict(labels=100, unlabelled=2000, test=200, steps=150, batch_size=50, labelled_batch_size=20)
        sizes.update(latent_dim=8, hidden=100, lr=3e-3, num_samples=20, ais_examples=20, ais_steps=10, ais_chains=2)
    else:
        sizes = dict(labels=1000, unlabelled=20000, test=1000, steps=500, batch_size=100, labelled_batch_size=50)
        sizes.update(latent_dim=16, hidden=200, lr=1e-3, num_samples=100, ais_examples=50, ais_steps=50, ais_chains=4)
    if args.labels is not None:
        sizes["labels"] = args.labels
    raw = load_fashion_mnist_with_labels(args.data_root)
    order = torch.randperm(len(raw["train"][0]), generator=torch.Generator().manual_seed(args.seed))
    labelled, unlabelled = order[: sizes["labels"]], order[sizes["labels"] : sizes["labels"] + sizes["unlabelled"]]
    data = {
        "labelled": (raw["train"][0][labelled], raw["train"][1][labelled]),
        "unlabelled": (raw["train"][0][unlabelled], raw["train"][1][unlabelled]),
    }
    x_test = fixed_binarization(raw["test"][0][: sizes["test"]], args.seed)  # the same binary images every run
    y_test = raw["test"][1][: sizes["test"]]
    print(
        f"Fashion-MNIST: {sizes['labels']} labelled and {sizes['unlabelled']} unlabelled training images, "
        f"{sizes['test']} test images; {sizes['steps']} steps"
    )
    results = {}
    for name, options in ESTIMATORS:
        pyro.set_rng_seed(args.seed)
        m2 = M2(sizes["latent_dim"], sizes["hidden"])
        probe = fixed_binarization(data["labelled"][0][:4], args.seed)
        objective = usable_estimator(name, options, m2, probe, data["labelled"][1][:4])
        if objective is None:
            name, options = FALLBACK
            print(f"  using {name} instead")
            objective = inference.estimator(name, **options)
        start = time.perf_counter()
        train(objective, m2, data, args, sizes)
        seconds = time.perf_counter() - start
        results[name] = {**evaluate(m2, x_test, y_test, args, sizes), "seconds": seconds, "model": m2}

    print(
        f"\nTest accuracy of q(y | x) ({sizes['test']} images) and test log p(x) in nats per image: IS with "
        f"K = {sizes['num_samples']} per class on all, stratified AIS ({sizes['ais_steps']} steps, "
        f"{sizes['ais_chains']} chains per class) on the first {sizes['ais_examples']}"
    )
    print(
        f"{'estimator':<10} {'accuracy':>9} {'IS':>17} {'ELBO':>9} {'IS reliable':>12} {'IS (subset)':>12} "
        f"{'AIS (subset)':>13} {'train s':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<10} {r['accuracy']:>9.3f} {r['is'].mean:>9.2f} +-{r['is'].stderr:.2f} {r['is'].elbo_mean:>9.2f} "
            f"{str(r['is'].mc_stderr_reliable):>12} {r['is_on_ais_subset']:>12.2f} {r['ais']:>13.2f} "
            f"{r['seconds']:>8.1f}"
        )
    for name, r in results.items():
        if not all(math.isfinite(v) for v in (r["is"].mean, r["ais"], r["accuracy"])):
            raise RuntimeError(f"{name}: a non-finite result")
    return results


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # exit non-zero with the reason on one line
        print(f"semi_supervised_m2 failed: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
