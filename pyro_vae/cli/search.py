"""``pyro-vae search``: Bayesian optimization of configuration paths with Optuna
(:func:`pyro_vae.search.run_search`).
"""

import json
import os

from pyro_vae.cli.options import add_base_options, by_path, train_overrides


def _one_space(path, specs) -> str:
    """The last ``--space`` of ``path`` (the one a search used to keep), written back as an option."""
    spec = specs[-1]
    arguments = spec["choices"] if spec["kind"] == "choice" else [spec["low"], spec["high"]]
    text = ",".join(value if isinstance(value, str) else json.dumps(value) for value in arguments)
    return f"--space '{path}={spec['kind']}({text})'"


def add_parser(sub):
    p = sub.add_parser(
        "search",
        help="Bayesian optimization (Optuna TPE) of configuration paths, maximizing validation log p(x)",
        description="Search configuration paths with Optuna's TPE sampler, maximizing the last epoch's validation "
        "log p(x) bound; poor trials are pruned after each epoch (median pruner). Each trial is a run folder "
        "OUT/trials/trial-<n>/. The study is kept in OUT/study.db (SQLite) unless --storage names an RDB URL that "
        "several machines can share; rerunning the command resumes it. Writes OUT/study.json and OUT/plots/.",
    )
    p.add_argument("--out", required=True, help="search folder to create (or to resume)")
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="PATH=DIST",
        help="a searched path and its distribution: uniform(a,b), loguniform(a,b), int(a,b), logint(a,b) or "
        "choice(v1,v2,...), e.g. 'train.optimizer.options.lr=loguniform(1e-4,1e-2)'; repeatable",
    )
    p.add_argument("--trials", type=int, default=20, help="finished (complete or pruned) trials the study should hold")
    p.add_argument("--storage", help="an Optuna storage URL (default: sqlite:///OUT/study.db)")
    p.add_argument("--study", default="pyro-vae", help="study name inside the storage")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument("--no-prune", action="store_true", help="train every trial for all its epochs")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    add_base_options(p, "base configuration: the short flags of `pyro-vae train`")
    p.set_defaults(run=run)


def run(args):
    from pyro_vae.config import config_from, read_tree_file
    from pyro_vae.search import format_summary, parse_space, run_search

    if args.trials < 1:
        raise ValueError(f"--trials must be a positive integer, got {args.trials}")
    base = config_from(read_tree_file(args.config) if args.config else {}, train_overrides(args))
    summary = run_search(
        base,
        by_path([parse_space(text) for text in args.space], "--space", _one_space),
        args.out,
        num_trials=args.trials,
        storage=args.storage,
        study_name=args.study,
        seed=args.sampler_seed,
        prune=not args.no_prune,
        progress=not args.no_progress,
    )
    print(format_summary(summary))
    print(f"summary: {os.path.join(args.out, 'study.json')}; plots in {os.path.join(args.out, 'plots')}")
