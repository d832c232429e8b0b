"""What several subcommands share: the short flags of ``train`` (aliases of ``--set PATH=VALUE``, applied in the
order of :data:`TRAIN_ALIASES`, then every ``--set`` in the order given), ``--config``/``--set``, ``--nproc`` and
``--plugin``.
"""

import argparse
import json


def json_object(text):
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


def budget(text):
    """``KIND=AMOUNT`` -> ``(kind, amount)``, e.g. ``evaluations=1e7``."""
    kind, sep, amount = text.partition("=")
    try:
        return kind.strip(), float(amount)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not KIND=AMOUNT: write e.g. evaluations=1e7, steps=20000 or seconds=600"
        ) from None


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
        {"type": json_object, "help": "prior options as JSON, e.g. '{\"learned\": true}'"},
        _options("model.prior"),
    ),
    ("--likelihood", {"help": "likelihood p(x|z)"}, "model.likelihood"),
    (
        "--likelihood-options",
        {"type": json_object, "help": "likelihood options as JSON, e.g. '{\"scale\": 0.1}'"},
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
        {"type": json_object, "help": "guide options as JSON, e.g. '{\"temperature\": 0.3}'"},
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
        {"type": json_object, "help": "estimator options as JSON, e.g. '{\"alpha\": 0.5}'"},
        _options("train.estimator"),
    ),
    ("--optimizer", {"help": "torch.optim optimizer: adam, adamw, sgd, rmsprop"}, "train.optimizer"),
    ("--lr", {"type": float, "help": "learning rate"}, "train.optimizer.options.lr"),
    ("--clip-norm", {"type": float, "help": "clip the global gradient norm to this value"}, "train.clip_norm"),
    ("--epochs", {"type": int, "help": "passes over the training set"}, "train.epochs"),
    (
        "--budget",
        {
            "type": budget,
            "metavar": "KIND=AMOUNT",
            "help": "train until this much is spent instead of for --epochs: steps, evaluations (particles x "
            "examples x steps) or seconds, e.g. evaluations=1e7, for comparisons at equal cost",
        },
        lambda value: [("train.budget.kind", value[0]), ("train.budget.amount", value[1])],
    ),
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


def dest(flag):
    return flag.lstrip("-").replace("-", "_")


def add_nproc(p, help_text):
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help=f"{help_text}; for several machines launch with torchrun instead (see the README)",
    )


def add_base_options(p, title, skip=()):
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
        g.add_argument(flag, dest=dest(flag), default=None, **{**keywords, "help": keywords["help"] + suffix})


def train_overrides(args) -> list:
    """``(path, value)`` pairs from the short flags (in :data:`TRAIN_ALIASES` order), then from ``--set``."""
    from pyro_vae.config import parse_value

    if args.likelihood_scale is not None:
        args.likelihood_scale = parse_value(args.likelihood_scale)  # a number, or "learned"
    pairs = []
    for flag, _, target in TRAIN_ALIASES:
        value = getattr(args, dest(flag))
        if value is None:
            continue
        pairs += [(target, value)] if isinstance(target, str) else target(value)
    return pairs + list(args.assignments)


def by_path(pairs, flag, fix) -> dict:
    """``{path: value}`` of ``(path, value)`` pairs; a path given twice is refused, not silently the last, with
    ``fix(path, values)``: the option to give instead."""
    by_path = {}
    for path, value in pairs:
        if path in by_path:
            values = [v for p, v in pairs if p == path]
            raise ValueError(f"{flag} names '{path}' {len(values)} times; give it once instead: {fix(path, values)}")
        by_path[path] = value
    return by_path


def one_particle(name, fix="--num-particles K") -> str:
    return (
        f"--estimator {name} with one particle (K = 1, the default) averages one weight per bound, which is the ELBO: "
        f"give {fix} (Burda et al. use K = 5 and 50) for an importance-weighted bound"
    )
