"""The ``pyro-vae`` command line: a thin layer over :mod:`pyro_vae.runs` and :mod:`pyro_vae.config`.

pyro-vae train --dataset digits --out runs/digits
pyro-vae train --config experiment.toml --set model.prior=bernoulli --set train.epochs=20 --out runs/x
pyro-vae train --resume --out runs/digits --epochs 200
pyro-vae evaluate runs/digits --num-samples 5000
pyro-vae sample runs/digits
pyro-vae compare --dataset digits --epochs 20 --vary train.estimator=elbo,iwae --seeds 0 1 --out runs/cmp
pyro-vae search --dataset digits --epochs 20 --space 'train.optimizer.options.lr=loguniform(1e-4,1e-2)' --out runs/s
pyro-vae list [--json]

Every training option is a dotted path of the configuration tree (:mod:`pyro_vae.config`); the short flags are
aliases of ``--set PATH=VALUE`` and are applied first, in the order of :data:`TRAIN_ALIASES`, then every ``--set``
in the order given.
"""

import argparse
import json
import os
import sys


def _json_object(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}); write e.g. '{{\"alpha\": 0.5}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"alpha\": 0.5}'")
    return value


def _assignment(text):
    from pyro_vae.config import parse_value

    path, sep, value = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"'{text}' is not PATH=VALUE, e.g. train.epochs=20 or model.prior=bernoulli")
    return path.strip(), parse_value(value)


def _options(component):
    return lambda value: [(f"{component}.options.{key}", option) for key, option in value.items()]


def _both_networks(key):
    return lambda value: [(f"model.encoder.{key}", value), (f"model.decoder.{key}", value)]


def _mirrored_hidden_sizes(value):
    return [("model.encoder.options.hidden_sizes", value), ("model.decoder.options.hidden_sizes", value[::-1])]


PLUGIN_HELP = (
    "a Python file (or module) registering your own components, loaded only when named here (a run that needs "
    "one says so); repeatable"
)


def _recorded_plugins(plugins) -> list:
    from pyro_vae.config import plugin_key

    return [plugin_key(plugin) for plugin in plugins]


#: Short flags of `train`: (flag, argparse keywords, what the value sets: a dotted path or a function of the value
#: giving (path, value) pairs).
TRAIN_ALIASES = [
    ("--dataset", {"help": "data set (a name from `pyro-vae list`)"}, "data.name"),
    ("--data-root", {"help": "folder holding the data set's files"}, "data.root"),
    (
        "--download",
        {"action": "store_const", "const": True, "help": "download a missing data set (internet)"},
        "data.download",
    ),
    ("--num-train", {"type": int, "help": "use only this many training examples"}, "data.num_train"),
    ("--num-val", {"type": int, "help": "use only this many validation examples"}, "data.num_val"),
    ("--num-test", {"type": int, "help": "use only this many test examples"}, "data.num_test"),
    ("--data-seed", {"type": int, "help": "seed of the split and of the evaluation splits' binarization"}, "data.seed"),
    ("--latent-dim", {"type": int, "help": "dimension of z"}, "model.latent_dim"),
    (
        "--network",
        {"help": "encoder and decoder network (mlp), or conv for the encoder and deconv for the decoder"},
        lambda name: [("model.encoder", name), ("model.decoder", "deconv" if name == "conv" else name)],
    ),
    (
        "--hidden-sizes",
        {"type": int, "nargs": "+", "help": "encoder hidden sizes; the decoder mirrors them"},
        _mirrored_hidden_sizes,
    ),
    ("--activation", {"help": "hidden activation of both networks"}, _both_networks("options.activation")),
    ("--prior", {"help": "prior p(z)"}, "model.prior"),
    (
        "--prior-options",
        {"type": _json_object, "help": "prior options as JSON, e.g. '{\"learned\": true}'"},
        _options("model.prior"),
    ),
    ("--likelihood", {"help": "likelihood p(x|z)"}, "model.likelihood"),
    (
        "--likelihood-options",
        {"type": _json_object, "help": "likelihood options as JSON, e.g. '{\"scale\": 0.1}'"},
        _options("model.likelihood"),
    ),
    (
        "--likelihood-scale",
        {"help": "Gaussian likelihood's scale: a positive number (fixed) or 'learned'"},
        "model.likelihood.options.scale",
    ),
    ("--guide", {"help": "guide family q(z|x)"}, "model.guide"),
    (
        "--guide-options",
        {"type": _json_object, "help": "guide options as JSON, e.g. '{\"temperature\": 0.3}'"},
        _options("model.guide"),
    ),
    ("--estimator", {"help": "gradient estimator"}, "train.estimator"),
    (
        "--num-particles",
        {"type": int, "help": "particles K per example (default: the estimator's own)"},
        "train.estimator.options.num_particles",
    ),
    (
        "--estimator-options",
        {"type": _json_object, "help": "estimator options as JSON, e.g. '{\"alpha\": 0.5}'"},
        _options("train.estimator"),
    ),
    ("--optimizer", {"help": "torch.optim optimizer: adam, adamw, sgd, rmsprop"}, "train.optimizer"),
    ("--lr", {"type": float, "help": "learning rate"}, "train.optimizer.options.lr"),
    ("--clip-norm", {"type": float, "help": "clip the global gradient norm to this value"}, "train.clip_norm"),
    ("--epochs", {"type": int, "help": "passes over the training set"}, "train.epochs"),
    ("--batch-size", {"type": int, "help": "minibatch size"}, "train.batch_size"),
    (
        "--kl-warmup-epochs",
        {"type": int, "help": "raise the KL weight linearly from 0 to 1 over this many epochs"},
        "train.kl_warmup_epochs",
    ),
    (
        "--val-num-samples",
        {"type": int, "help": "importance samples per validation example for val_log_px"},
        "train.val_num_samples",
    ),
    (
        "--seed",
        {"type": int, "help": "training seed: initialisation, minibatch order, binarization, particles"},
        "train.seed",
    ),
    ("--device", {"help": "auto, cpu, cuda or cuda:N"}, "device"),
    (
        "--plugin",
        {"action": "append", "help": PLUGIN_HELP},
        lambda plugins: [("plugins", _recorded_plugins(plugins))],
    ),
]


def _dest(flag):
    return flag.lstrip("-").replace("-", "_")


def _add_train(sub):
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
    _add_base_options(p, "short flags (aliases of --set; the dotted path each sets is in parentheses)")
    _add_nproc(p, "train data-parallel in N processes of this machine (each on its shard of every minibatch)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(run=_train)


def _add_nproc(p, help_text):
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help=f"{help_text}; for several machines launch with torchrun instead (see the README)",
    )


def train_overrides(args) -> list:
    """``(path, value)`` pairs from the short flags (in :data:`TRAIN_ALIASES` order), then from ``--set``."""
    from pyro_vae.config import parse_value

    if args.likelihood_scale is not None:
        args.likelihood_scale = parse_value(args.likelihood_scale)  # a number, or "learned"
    pairs = []
    for flag, _, target in TRAIN_ALIASES:
        value = getattr(args, _dest(flag))
        if value is None:
            continue
        pairs += [(target, value)] if isinstance(target, str) else target(value)
    return pairs + list(args.assignments)


def _train(args):
    from pyro_vae import runs
    from pyro_vae.config import ConfigError, config_from, read_tree_file
    from pyro_vae.folder import foreign_files

    saved = os.path.exists(os.path.join(args.out, runs.CONFIG_FILE))
    if args.resume and not os.path.isdir(args.out):  # a typo: a run killed before it wrote anything left its folder
        raise ConfigError(
            f"'{args.out}' does not exist, so there is no run to resume: check the folder's name, or drop --resume "
            "to start a new run there"
        )
    if args.resume and not saved and foreign_files(args.out):  # a typo, not a run killed before it wrote anything
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
        print(f"pyro-vae train: warning: {_one_particle(config.train.estimator.name)}", file=sys.stderr)
    last = trained.metrics[-1]
    bound = ESTIMATORS.get(config.train.estimator.name).bound_on_log_px
    caveat = "" if bound else " (not a bound on log p(x))"
    print(
        f"trained {last['epoch']} epochs into {args.out}: train objective{caveat} {last['train_objective']:.3f}, "
        f"validation ELBO {last['val_elbo']:.3f} nats per example"
    )


def _one_particle(name, fix="--num-particles K") -> str:
    return (
        f"--estimator {name} with one particle (K = 1, the default) averages one weight per bound, which is the ELBO: "
        f"give {fix} (Burda et al. use K = 5 and 50) for an importance-weighted bound"
    )


#: Flags of `evaluate` that set an option of the log p(x) method.
METHOD_ALIASES = [
    ("--num-samples", int, "importance samples K per example (is, is-prior, exact; default 5000)"),
    (
        "--particle-batch-size",
        int,
        "particles per vectorized pass, which bounds memory (default: 8192 draws per pass on CPU, 2048 where "
        "MALLOC_* or GLIBC_TUNABLES is set; on a GPU 200,000, or fewer where a quarter of its free memory holds "
        "fewer)",
    ),
    ("--ais-steps", int, "AIS: intermediate distributions (transitions)", "num_steps"),
    ("--ais-chains", int, "AIS: independent chains per example", "num_chains"),
    ("--ais-leapfrog-steps", int, "AIS: leapfrog steps per HMC transition", "num_leapfrog_steps"),
    ("--ais-step-size", float, "AIS: initial HMC step size (adapted)", "step_size"),
    ("--ais-target-accept", float, "AIS: acceptance rate the step size adapts to", "target_accept"),
    ("--ais-schedule", str, "AIS: inverse temperatures, sigmoid or linear", "schedule"),
    ("--ais-proposal", str, "AIS: where the chains start, guide (q(z|x)) or prior (p(z))", "proposal"),
]


def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate",
        help="estimate held-out log p(x) of a trained run",
        description="Estimate log p(x) of every example of a split of a trained run (importance sampling, AIS or "
        "exact), with the ELBO from the same draws, KL(q(z|x) || p(z)) per latent dimension and the active units. "
        "Writes eval/METHOD-SPLIT.json (summary, with the data, training and evaluation seeds and the checkpoint it "
        "scored) and eval/METHOD-SPLIT.nc (per-example "
        "estimates, ESS, Pareto k-hat and posterior draws, for arviz) into the run folder, and prints the summary. "
        "Options left out take the run's eval section of config.json, whose defaults are importance sampling with "
        "K = 5000 on the test split.",
    )
    p.add_argument("run_dir", help="run folder written by `pyro-vae train`")
    p.add_argument(
        "--method",
        help="is (guide as proposal), is-prior (prior as proposal), ais (annealed "
        "importance sampling with HMC), exact (where the model allows it), or one that a --plugin registers",
    )
    p.add_argument("--method-options", type=_json_object, default={}, help="options of the method as JSON")
    for flag, kind, help_text, *_ in METHOD_ALIASES:
        p.add_argument(flag, type=kind, default=None, help=help_text)
    p.add_argument("--split", choices=["train", "val", "test"], help="which split to evaluate")
    p.add_argument("--data-batch-size", type=int, help="examples per pass (memory)")
    p.add_argument("--num-examples", type=int, help="evaluate only the first N examples of the split")
    p.add_argument("--seed", type=int, help="seed for the importance samples")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--posterior-examples",
        type=int,
        nargs="*",
        default=[0, 1, 2, 3],
        help="indices of examples whose resampled posterior draws of z are stored in the .nc file",
    )
    p.add_argument("--num-posterior-draws", type=int, default=200, help="posterior draws per chosen example")
    p.add_argument(
        "--allow-unfinished",
        action="store_true",
        help="evaluate the last checkpoint of a run whose training has not finished",
    )
    p.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    _add_nproc(p, "share the examples out among N processes of this machine (the estimates do not change)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(run=_evaluate)


def _evaluate(args):
    from pyro_vae import runs
    from pyro_vae.folder import json_safe

    options = dict(args.method_options)
    for flag, _, _, *option in METHOD_ALIASES:
        value = getattr(args, _dest(flag))
        if value is not None:
            options[option[0] if option else _dest(flag)] = value
    report = runs.evaluate_run(
        args.run_dir,
        method=args.method,
        method_options=options,
        split=args.split,
        data_batch_size=args.data_batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        posterior_examples=args.posterior_examples,
        num_posterior_draws=args.num_posterior_draws,
        allow_unfinished=args.allow_unfinished,
        num_examples=args.num_examples,
    )
    if "warnings" not in report:  # a rank other than 0 of a process group: rank 0 reports
        return
    print(json.dumps(json_safe(report), indent=2))
    for warning in report["warnings"]:
        print(f"pyro-vae evaluate: warning: {warning}", file=sys.stderr)
    from inference import LOG_PX_METHODS

    draws = LOG_PX_METHODS.get(report["method"]).draws_name
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
    p.add_argument("--num-samples", type=int, default=64, help="number of images in each grid")
    p.add_argument("--nrow", type=int, default=8, help="images per grid row")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to reconstruct")
    p.add_argument("--seed", type=int, default=0, help="seed for the prior samples")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    p.set_defaults(run=_sample)


def _sample(args):
    from pyro_vae import runs

    for name, value in (("--num-samples", args.num_samples), ("--nrow", args.nrow)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    paths = runs.sample_run(
        args.run_dir,
        num_samples=args.num_samples,
        nrow=args.nrow,
        split=args.split,
        seed=args.seed,
        device=args.device,
    )
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    from pyro_vae.folder import read_status

    status = read_status(args.run_dir)
    if status.get("state") != "finished":
        print(
            f"pyro-vae sample: warning: '{args.run_dir}' is not a finished run (status {status.get('state')!r}, "
            f"{status.get('epochs_done', '?')} of {status.get('epochs', '?')} epochs done): the pictures show its "
            f"last checkpoint; finish it with `pyro-vae train --resume --out {args.run_dir}`",
            file=sys.stderr,
        )


def _axis(text):
    """``PATH=V1,V2,...`` (or ``PATH=[V1, V2]`` as JSON, for values that hold commas) -> ``(path, [values])``."""
    from pyro_vae.config import parse_value

    path, sep, values = text.partition("=")
    if not sep or not path or not values:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not PATH=V1,V2,..., e.g. train.estimator=elbo,iwae or 'model.encoder.options.hidden_sizes="
            "[[200],[400,400]]'"
        )
    parsed = parse_value(values) if values.lstrip().startswith("[") else [parse_value(v) for v in values.split(",")]
    if not isinstance(parsed, list):
        raise argparse.ArgumentTypeError(f"the values of '{path}' must be a list, got {values}")
    return path.strip(), parsed


def _by_path(pairs, flag, fix) -> dict:
    """``{path: value}`` of ``(path, value)`` pairs; a path given twice is refused, not silently the last, with
    ``fix(path, values)``: the option to give instead."""
    by_path = {}
    for path, value in pairs:
        if path in by_path:
            values = [v for p, v in pairs if p == path]
            raise ValueError(f"{flag} names '{path}' {len(values)} times; give it once instead: {fix(path, values)}")
        by_path[path] = value
    return by_path


def _one_axis(path, axes) -> str:
    """One ``--vary`` with the values of every ``--vary`` of ``path``, in order, each once."""
    merged = []
    for values in axes:
        merged += [value for value in values if value not in merged]
    return f"--vary '{path}={json.dumps(merged)}'"


def _one_space(path, specs) -> str:
    """The last ``--space`` of ``path`` (the one a search used to keep), written back as an option."""
    spec = specs[-1]
    arguments = spec["choices"] if spec["kind"] == "choice" else [spec["low"], spec["high"]]
    text = ",".join(value if isinstance(value, str) else json.dumps(value) for value in arguments)
    return f"--space '{path}={spec['kind']}({text})'"


def _add_compare(sub):
    p = sub.add_parser(
        "compare",
        help="train and evaluate a grid of configurations over seeds; write a report with paired statistics",
        description="Run every cell of a grid (every combination of the --vary values, crossed with hand-picked "
        "cells of a --grid file) once per seed into OUT/cells/<cell>/seed-<s>/ (ordinary run folders), evaluate "
        "each on the same test examples, and write results.csv, results.json, report.md and report.html with "
        "plots. Rerunning the same command resumes: finished runs are skipped, half-trained ones continue from "
        "their checkpoints; a changed grid reruns into the same folder with --update, which keeps every run whose "
        "settings it keeps. The base configuration comes from the defaults, then the grid file's [base], then "
        "--config, the short flags of `pyro-vae train` and --set.",
    )
    p.add_argument("--out", required=True, help="comparison folder to create (or to resume)")
    p.add_argument("--grid", dest="grid_file", help="a TOML file with [base], [grid], [[cells]] and [compare]")
    p.add_argument(
        "--vary",
        type=_axis,
        action="append",
        default=[],
        metavar="PATH=V1,V2",
        help="a grid axis: a configuration path and its values, e.g. train.estimator=elbo,iwae; repeatable",
    )
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds of every cell (default 0)")
    p.add_argument("--baseline", help="label of the cell the others are compared with (default: the first)")
    p.add_argument(
        "--update",
        action="store_true",
        help="run a grid other than the one OUT holds: runs whose settings it keeps are kept (more --epochs continue "
        "them), new cells train, and runs it no longer names stay on disk outside the report; refused, changing "
        "nothing, if a run it names was trained with other settings",
    )
    p.add_argument(
        "--gradient-snr",
        type=int,
        nargs="+",
        metavar="K",
        help="also draw each cell's gradient signal-to-noise ratio (guide and model) at these particle numbers K, "
        "on a fixed validation minibatch at the cell's last checkpoint: the figure of Rainforth et al. (2018)",
    )
    p.add_argument("--snr-draws", type=int, default=100, help="gradient draws per K for --gradient-snr (default 100)")
    p.add_argument(
        "--cross-check",
        action="append",
        metavar="METHOD",
        help="also evaluate every run with this log p(x) method (e.g. ais) and report, per cell, both estimates, "
        "their paired difference and a flag where they disagree by more than 2 standard errors (repeatable)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    p.add_argument("--threads", type=int, help="torch threads per run (default: the cores shared among --jobs)")
    p.add_argument("--ray", action="store_true", help="run the runs as tasks of a local Ray instance")
    p.add_argument("--ray-address", help="run the runs on the Ray cluster at this address (e.g. ray://host:10001)")
    p.add_argument("--method", help="log p(x) method of every cell (default is)")
    p.add_argument("--num-samples", type=int, help="importance samples K per test example (default 5000)")
    p.add_argument("--no-pictures", action="store_true", help="skip the sample, reconstruction and manifold figures")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    _add_base_options(p, "base configuration: the short flags of `pyro-vae train`", skip=("--seed",))
    p.set_defaults(run=_compare, seed=None)


def compare_grid(args):
    """The :class:`~pyro_vae.compare.Grid` a ``compare`` command line describes."""
    from pyro_vae.compare import Grid, load_grid_file
    from pyro_vae.config import RunConfig, apply_overrides, load_config_file

    grid = load_grid_file(args.grid_file) if args.grid_file else Grid()
    base = RunConfig.from_dict(grid.base)
    if args.config:
        base = load_config_file(args.config)
    overrides = train_overrides(args)
    if args.method:
        overrides.append(("eval.method", args.method))
    if args.num_samples is not None:
        overrides.append(("eval.method.options.num_samples", args.num_samples))
    grid.base = apply_overrides(base, overrides).to_dict()
    grid.axes = {**grid.axes, **_by_path(args.vary, "--vary", _one_axis)}
    if args.seeds:
        grid.seeds = list(args.seeds)
    if args.baseline:
        grid.baseline = args.baseline
    if args.cross_check:
        grid.cross_checks = list(dict.fromkeys([*grid.cross_checks, *args.cross_check]))
    grid.check()
    return grid


def _compare(args):
    from pyro_vae import runs
    from pyro_vae.compare import run_comparison
    from pyro_vae.compare.report import table_rows

    grid = compare_grid(args)
    result = run_comparison(
        grid,
        args.out,
        jobs=args.jobs,
        ray=args.ray,
        ray_address=args.ray_address,
        threads=args.threads,
        progress=not args.no_progress,
        pictures=not args.no_pictures,
        update=args.update,
        gradient_snr={"ks": args.gradient_snr, "num_draws": args.snr_draws} if args.gradient_snr else None,
    )
    table = table_rows(result["cells"])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(
                value.rjust(width) if i else value.ljust(width) for i, (value, width) in enumerate(zip(row, widths))
            )
        )
    print(
        f"report: {result['paths']['report.md']} and {result['paths']['report.html']}; "
        f"per run: {result['paths']['results.csv']}"
    )
    if result["left_out"]:
        print(
            "runs of an earlier grid that this one does not name stay on disk, outside the report: "
            + ", ".join(result["left_out"])
        )
    for cell in grid.expand():  # after the runs: a refused command prints its error alone
        config = grid.config(cell, grid.seeds[0])
        if runs.trains_the_elbo_by_another_name(config):
            fix = "--vary train.estimator.options.num_particles=K"  # a varied estimator takes only varied options
            warning = _one_particle(config.train.estimator.name, fix)
            print(f"pyro-vae compare: warning: cell '{cell.label}': {warning}", file=sys.stderr)
    if result["failures"]:
        for failure in result["failures"]:
            print(f"pyro-vae compare: run {failure['run_dir']} failed: {failure['error']}", file=sys.stderr)
        raise RuntimeError(
            f"{len(result['failures'])} of {len(result['runs'])} runs failed (see above and report.md): a run its "
            "settings fail fails again under the same command, so change or drop the failing values in --vary and "
            "rerun with --update: finished runs are kept (while each --vary keeps two values or more, so that the "
            "cells keep their names); a run stopped from outside (killed, out of memory) finishes when the same "
            "command is rerun"
        )


def _add_base_options(p, title, skip=()):
    """``--config``, ``--set`` and the short flags of :data:`TRAIN_ALIASES` (but ``skip``), grouped under
    ``title``: how `train`, `compare` and `search` build their (base) configuration."""
    p.add_argument("--config", help="a TOML (or JSON) file with the configuration tree")
    p.add_argument(
        "--set",
        dest="assignments",
        type=_assignment,
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="set one value by its dotted path, e.g. --set model.prior.options.learned=true; repeatable",
    )
    g = p.add_argument_group(title)
    for flag, keywords, target in TRAIN_ALIASES:
        if flag in skip:
            continue
        suffix = f" ({target})" if isinstance(target, str) else ""
        g.add_argument(flag, dest=_dest(flag), default=None, **{**keywords, "help": keywords["help"] + suffix})


def _add_search(sub):
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
    _add_base_options(p, "base configuration: the short flags of `pyro-vae train`")
    p.set_defaults(run=_search)


def _search(args):
    from pyro_vae.config import RunConfig, apply_overrides, load_config_file
    from pyro_vae.search import format_summary, parse_space, run_search

    if args.trials < 1:
        raise ValueError(f"--trials must be a positive integer, got {args.trials}")
    base = load_config_file(args.config) if args.config else RunConfig()
    base = apply_overrides(base, train_overrides(args))
    summary = run_search(
        base,
        _by_path([parse_space(text) for text in args.space], "--space", _one_space),
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


def _add_list(sub):
    p = sub.add_parser("list", help="list the components that can be chosen by name, with their options")
    p.add_argument(
        "--json", action="store_true", help="print every component with its options, defaults and one-line docs as JSON"
    )
    p.add_argument("--plugin", action="append", help="a Python file that registers components: list them too")
    p.set_defaults(run=_list)


def _list(args):
    from pyro_vae.cli.catalogue import build_catalogue, read_catalogue

    # from the registries; without a plugin, cached under the sources' fingerprint so that no torch is imported
    listing = build_catalogue() if args.plugin else read_catalogue()
    if args.json:
        print(json.dumps(listing, indent=2))
        return
    components = listing["components"]
    print(f"data.name: {', '.join(listing['datasets'])}, or the path of your own .npy/.npz/.pt/.csv file")
    width = max(len(name) for table in components.values() for name in table) + 2
    for path, table in components.items():
        print(f"\n{path}:")
        for name, entry in table.items():
            print(f"  {name:<{width}}{_summary(entry['doc'], 100)}")
            options = ", ".join(f"{key}={json.dumps(value, default=str)}" for key, value in entry["options"].items())
            if options:
                print(f"  {'':<{width}}options: {options}")
    print("\n`pyro-vae list --json` gives the same with whole docs; `pyro-vae train --help` shows how to set each.")


def _summary(doc: str, limit: int) -> str:
    """A docstring's opening as plain text: reST markup dropped, cut at a word boundary."""
    import re

    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")
    return text if len(text) <= limit else text[: text.rfind(" ", 0, limit - 1)] + " ..."


class UsageError(Exception):
    """A command line that does not parse; its message is one line, with where to read the usage."""


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="pyro-vae",
        description="Variational autoencoders as Pyro model/guide pairs: train under many gradient estimators, "
        "and estimate held-out log p(x).",
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_sample(sub)
    _add_compare(sub)
    _add_search(sub)
    _add_list(sub)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    nproc = getattr(args, "nproc", None)
    if nproc is not None and nproc < 1:
        print(f"pyro-vae {args.command}: error: --nproc must be a positive integer, got {nproc}", file=sys.stderr)
        return 2
    if args.command == "list":  # which loads no torch
        return _run(args, argv, nproc)
    from inference.training.interruption import stop_on_signals

    with stop_on_signals():  # SIGTERM cleans up as Ctrl-C does: no run folder is left "training" by a killed command
        return _run(args, argv, nproc)


def _run(args, argv, nproc) -> int:
    launcher = False
    try:
        if args.command != "list":  # which allocates no tensor
            from inference.allocator import keep_freed_memory

            keep_freed_memory()  # before the first tensor
        if getattr(args, "plugin", None):  # the only way a plugin runs: named on this command line
            from pyro_vae.config import load_plugins

            load_plugins(args.plugin)

        launcher = nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ
        if launcher:
            return _launch_processes(argv, nproc)
        else:
            args.run(args)
            if "WORLD_SIZE" in os.environ:  # one rank of a process group (torchrun or --nproc): leave it together
                from inference.training.distributed import shutdown

                shutdown()
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError, ImportError) as e:
        if args.debug:
            raise
        if not _stopped_by_a_peer(e):
            print(f"pyro-vae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        from inference.training.interruption import exit_status

        if not launcher and os.environ.get("RANK", "0") == "0":  # one line for a process group: its first rank's
            print(f"pyro-vae {args.command}: interrupted", file=sys.stderr)
        return exit_status(interrupt)
    return 0


def _launch_processes(argv, nproc) -> int:
    """Run this command line (less ``--nproc``) in ``nproc`` processes that form one process group. A rank that
    refused with its own message (exit status 2) makes that the exit status; any other failure becomes a
    RuntimeError naming the process."""
    import logging

    import torch.multiprocessing as mp

    from inference.training.distributed import launch_local

    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # not "Terminating process ..." per rank
    try:
        launch_local(main, nproc, _without_nproc(argv))
    except mp.ProcessExitedException as e:
        if e.exit_code == 2:  # the rank printed its one-line error
            return 2
        raise RuntimeError(f"{str(e).splitlines()[0]} (its message is above)") from None
    except mp.ProcessRaisedException as e:
        raise RuntimeError(f"{str(e).strip().splitlines()[0]} (its message is above)") from None
    return 0


def _stopped_by_a_peer(error) -> bool:
    """A rank other than the first whose collective failed because another rank stopped: that one says why."""
    if os.environ.get("RANK", "0") == "0":
        return False
    import torch.distributed as dist

    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(word in str(error) for word in ("gloo", "NCCL", "closed by peer"))


def _without_nproc(argv) -> list:
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            kept.append(item)
    return kept


if __name__ == "__main__":
    sys.exit(main())
