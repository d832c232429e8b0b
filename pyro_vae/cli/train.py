"""``pyro-vae train``: a new run folder from the configuration the command line describes, or ``--resume`` of one
(:func:`pyro_vae.runs.train_run`).
"""

import os
import sys

from pyro_vae.cli.options import add_base_options, add_nproc, one_particle, train_overrides


def add_parser(sub):
    p = sub.add_parser(
        "train",
        help="train a VAE and write a run folder",
        description="Train a VAE. Writes config.json (the whole configuration tree), metrics.json (one entry per "
        "epoch) and checkpoint.pt (after every epoch) into --out. Options come from the defaults, then --config, "
        "then the short flags below, then every --set PATH=VALUE; `pyro-vae list --json` shows every component "
        "and its options. Nothing is written until the configuration, the data and the model have been built.",
    )
    p.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its saved configuration "
        "(only --epochs may change)",
    )
    add_base_options(p, "short flags (aliases of --set; the dotted path each sets is in parentheses)")
    add_nproc(p, "train data-parallel in N processes of this machine (each on its shard of every minibatch)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(run=run)


def run(args):
    from pyro_vae import runs
    from pyro_vae.config import ConfigError, config_from, read_tree_file
    from pyro_vae.folder import foreign_files

    saved = os.path.exists(os.path.join(args.out, runs.CONFIG_FILE))
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ConfigError(f"'{args.out}' is a file, not a run folder: give --out a folder's name")
    if args.resume and not os.path.isdir(args.out):  # a typo: a run killed before it wrote anything left its folder
        raise ConfigError(
            f"'{args.out}' does not exist, so there is no run to resume: check the folder's name, or drop --resume "
            "to start a new run there"
        )
    # a typo, not a run killed before it wrote anything (which leaves at least its lock file)
    if args.resume and not saved and (foreign_files(args.out) or not os.listdir(args.out)):
        raise ConfigError(
            f"'{args.out}' holds no run to resume (no {runs.CONFIG_FILE}): check the folder's name, or drop --resume "
            "to start a new run there"
        )
    tree = read_tree_file(args.config) if args.config else {}
    if args.resume and saved and not args.config:  # the saved configuration, read and checked by the run itself
        trained = runs.train_run(
            None, args.out, resume=True, overrides=train_overrides(args), progress=not args.no_progress
        )
    else:  # a new run, or a resumed one whose --config must be the saved configuration
        config = config_from(tree, train_overrides(args))
        trained = runs.train_run(config, args.out, resume=args.resume, progress=not args.no_progress)
    from inference import ESTIMATORS
    from inference.training import distributed

    if not distributed.is_main_process():
        return
    config = trained.config
    if runs.trains_the_elbo_by_another_name(config):  # after the run: a refused command prints its error alone
        print(f"pyro-vae train: warning: {one_particle(config.train.estimator.name)}", file=sys.stderr)
    last = trained.metrics[-1]
    bound = ESTIMATORS.get(config.train.estimator.name).bound_on_log_px
    caveat = "" if bound else " (not a bound on log p(x))"
    budget = config.train.budget
    spent = "" if budget.kind == "epochs" else f" ({budget.describe(config.train.epochs)} budget: {_spent(last)})"
    print(
        f"trained {last['epoch']} epochs{spent} into {args.out}: "
        f"train objective{caveat} {last['train_objective']:.3f}, "
        f"validation ELBO {last['val_elbo']:.3f} nats per example"
    )


def _spent(entry: dict) -> str:
    return (
        f"{entry['steps']} steps, {entry['likelihood_evaluations']:,} likelihood evaluations, "
        f"{entry['elapsed_seconds']:.1f} s spent"
    )
