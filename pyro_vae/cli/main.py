"""The ``pyro-vae`` command line: a thin layer over :mod:`pyro_vae.runs`.

pyro-vae train --dataset digits --out runs/digits
pyro-vae evaluate runs/digits --num-samples 5000
pyro-vae sample runs/digits
pyro-vae list
"""

import argparse
import dataclasses
import json
import os
import sys

from inference import estimator_names
from inference.evaluation.log_marginal_likelihood import METHODS
from pyro_vae import runs
from pyro_vae.components.guides import GUIDES
from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.components.networks import ACTIVATIONS, NETWORKS
from pyro_vae.components.priors import PRIORS
from pyro_vae.data.datasets import DATASETS


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _json_dict(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}); write e.g. '{{\"alpha\": 0.5}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"alpha\": 0.5}'")
    return value


def _add_train(sub):
    d = runs.RunConfig()
    p = sub.add_parser(
        "train",
        help="train a VAE and write a run folder",
        description="Train a VAE with SVI. Writes config.json, metrics.json (one entry per epoch) and "
        "checkpoint.pt (after every epoch) into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=d.dataset, choices=DATASETS.names(), help="data set")
    g.add_argument("--data-root", default=d.data_root, help="folder holding the data set's files")
    g.add_argument(
        "--download",
        action="store_true",
        help="download the data set with torchvision if it is missing (needs internet)",
    )
    g.add_argument("--num-train", type=_positive_int, default=None, help="use only this many training examples")
    g.add_argument("--num-val", type=_positive_int, default=None, help="use only this many validation examples")
    g.add_argument("--num-test", type=_positive_int, default=None, help="use only this many test examples")
    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=_positive_int, default=d.latent_dim, help="dimension of z")
    g.add_argument(
        "--hidden-sizes",
        type=_positive_int,
        nargs="+",
        default=list(d.hidden_sizes),
        help="encoder hidden layer sizes (the decoder mirrors them)",
    )
    g.add_argument("--activation", default=d.activation, choices=sorted(ACTIVATIONS), help="hidden activation")
    g.add_argument("--network", default=d.network, choices=NETWORKS.names(), help="encoder/decoder network")
    g.add_argument("--prior", default=d.prior, choices=PRIORS.names(), help="prior p(z)")
    g.add_argument(
        "--prior-options", type=_json_dict, default={}, help="prior options as JSON, e.g. '{\"learned\": true}'"
    )
    g.add_argument("--likelihood", default=d.likelihood, choices=LIKELIHOODS.names(), help="likelihood p(x|z)")
    g.add_argument(
        "--likelihood-scale",
        default=d.likelihood_scale,
        help="Gaussian likelihood's scale: a positive number (fixed) or 'learned'",
    )
    g.add_argument("--guide", default=d.guide, choices=GUIDES.names(), help="guide family q(z|x)")
    g.add_argument(
        "--guide-options", type=_json_dict, default={}, help="guide options as JSON, e.g. '{\"temperature\": 0.3}'"
    )
    g = p.add_argument_group("training")
    g.add_argument("--estimator", default=d.estimator, choices=estimator_names(), help="gradient estimator")
    g.add_argument("--num-particles", type=_positive_int, default=d.num_particles, help="particles K per example")
    g.add_argument(
        "--estimator-options",
        type=_json_dict,
        default={},
        help="extra estimator options as JSON, e.g. '{\"alpha\": 0.5}'",
    )
    g.add_argument(
        "--kl-warmup-epochs",
        type=int,
        default=d.kl_warmup_epochs,
        help="raise the KL weight linearly from 0 to 1 over this many epochs (0: no warm-up)",
    )
    g.add_argument("--epochs", type=_positive_int, default=d.epochs, help="passes over the training set")
    g.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="minibatch size")
    g.add_argument("--lr", type=_positive_float, default=d.lr, help="Adam learning rate")
    g.add_argument(
        "--clip-norm", type=_positive_float, default=None, help="clip each parameter's gradient norm to this value"
    )
    g.add_argument(
        "--val-num-samples",
        type=_positive_int,
        default=d.val_num_samples,
        help="importance samples per validation example for the per-epoch validation bound",
    )
    g.add_argument("--seed", type=int, default=d.seed, help="seed for splits, initialisation and sampling")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(run=_train)


def _train(args):
    # Every RunConfig field has a training option of the same name.
    config = runs.RunConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(runs.RunConfig)})
    runs.train_run(config, args.out, resume=args.resume, progress=not args.no_progress)
    metrics = runs.read_metrics(args.out)
    last = metrics[-1]
    print(
        f"trained {last['epoch']} epochs into {args.out}: train objective {last['train_objective']:.3f}, "
        f"validation ELBO {last['val_elbo']:.3f} nats per example"
    )


def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate",
        help="estimate held-out log p(x) of a trained run",
        description="Estimate log p(x) of every example of a split of a trained run (importance sampling, AIS or "
        "exact), with the ELBO from the same draws, KL(q(z|x) || p(z)) per latent dimension and the active units. "
        "Writes eval.json (summary) and eval.nc (per-example estimates, ESS, Pareto k-hat and posterior draws, "
        "for arviz) into the run folder, and prints the summary.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", help="run folder written by `pyro-vae train`")
    p.add_argument("--num-samples", type=_positive_int, default=5000, help="importance samples K per example")
    p.add_argument(
        "--method",
        default="is",
        choices=METHODS,
        help="estimator of log p(x): is (guide as proposal), is-prior (prior as proposal), ais (annealed "
        "importance sampling with HMC), exact (where the model allows it)",
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split to evaluate")
    p.add_argument("--data-batch-size", type=_positive_int, default=100, help="examples per pass (memory)")
    p.add_argument("--particle-batch-size", type=_positive_int, default=500, help="particles per pass (memory)")
    p.add_argument("--seed", type=int, default=0, help="seed for the importance samples")
    p.add_argument(
        "--posterior-examples",
        type=int,
        nargs="*",
        default=[0, 1, 2, 3],
        help="indices of examples whose resampled posterior draws of z are stored in eval.nc",
    )
    p.add_argument("--num-posterior-draws", type=_positive_int, default=200, help="posterior draws per chosen example")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    g = p.add_argument_group("annealed importance sampling (--method ais)")
    g.add_argument("--ais-steps", type=_positive_int, default=100, help="intermediate distributions (transitions)")
    g.add_argument("--ais-chains", type=_positive_int, default=16, help="independent chains per example")
    g.add_argument("--ais-leapfrog-steps", type=_positive_int, default=10, help="leapfrog steps per HMC transition")
    g.add_argument("--ais-step-size", type=_positive_float, default=0.1, help="initial HMC step size (adapted)")
    g.add_argument(
        "--ais-target-accept", type=_positive_float, default=0.65, help="acceptance rate the step size adapts to"
    )
    g.add_argument("--ais-schedule", default="sigmoid", choices=["sigmoid", "linear"], help="inverse temperatures")
    g.add_argument(
        "--ais-proposal", default="guide", choices=["guide", "prior"], help="where the chains start: q(z|x) or p(z)"
    )
    p.set_defaults(run=_evaluate)


def _evaluate(args):
    ais_options = {}
    if args.method == "ais":
        ais_options = {
            "num_steps": args.ais_steps,
            "num_chains": args.ais_chains,
            "num_leapfrog_steps": args.ais_leapfrog_steps,
            "step_size": args.ais_step_size,
            "target_accept": args.ais_target_accept,
            "schedule": args.ais_schedule,
            "proposal": args.ais_proposal,
        }
    report = runs.evaluate_run(
        args.run_dir,
        num_samples=args.num_samples,
        split=args.split,
        method=args.method,
        data_batch_size=args.data_batch_size,
        particle_batch_size=args.particle_batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        posterior_examples=args.posterior_examples,
        num_posterior_draws=args.num_posterior_draws,
        **ais_options,
    )
    print(json.dumps(runs.json_safe(report), indent=2))
    draws = "chains" if report["method"] == "ais" else "samples"
    print(
        f"log p(x) ~ {report['log_px']:.3f} +- {report['log_px_stderr']:.3f} ({report['method']}, "
        f"{report['num_samples']} {draws} per example), ELBO {report['elbo']:.3f}, gap {report['gap']:.3f} nats "
        f"per example on {report['num_examples']} {report['split']} examples; {report['active_units']} active "
        f"units; per-example results in {os.path.join(args.run_dir, report['inference_data'])}"
    )


def _add_sample(sub):
    p = sub.add_parser(
        "sample",
        help="draw samples and reconstructions of a trained run as PNG grids",
        description="Writes samples.png (decoder means for z drawn from the prior) and reconstructions.png "
        "(rows of data alternating with their reconstructions) into the run folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", help="run folder written by `pyro-vae train`")
    p.add_argument("--num-samples", type=_positive_int, default=64, help="number of images in each grid")
    p.add_argument("--nrow", type=_positive_int, default=8, help="images per grid row")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to reconstruct")
    p.add_argument("--seed", type=int, default=0, help="seed for the prior samples")
    p.set_defaults(run=_sample)


def _sample(args):
    paths = runs.sample_run(
        args.run_dir, num_samples=args.num_samples, nrow=args.nrow, split=args.split, seed=args.seed
    )
    for name, path in paths.items():
        print(f"wrote {name}: {path}")


def _add_list(sub):
    p = sub.add_parser("list", help="list the components that can be chosen by name")
    p.set_defaults(run=_list)


def _list(_args):
    tables = {
        "datasets": DATASETS.names(),
        "networks": NETWORKS.names(),
        "priors": PRIORS.names(),
        "likelihoods": LIKELIHOODS.names(),
        "guides": GUIDES.names(),
        "estimators": estimator_names(),
        "log p(x) methods": list(METHODS),
    }
    for kind, names in tables.items():
        print(f"{kind}: {', '.join(names)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-vae",
        description="Variational autoencoders as Pyro model/guide pairs: train with SVI under many gradient "
        "estimators, and estimate held-out log p(x).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_sample(sub)
    _add_list(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        print(f"pyro-vae {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
