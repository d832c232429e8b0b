"""One configuration tree for a run, shared by the Python API, ``config.json``, TOML files and the command line.

A run is four sections plus a device and the CPU's handling of denormal floats::

    data:   name, root, download, num_train, num_val, num_test, dequantize, seed (the split and the fixed binarization
            of the evaluation splits: runs with different training seeds see the very same test examples)
    model:  latent_dim, and five components (prior, likelihood, guide, encoder, decoder)
    train:  estimator and optimizer (components), epochs, batch_size, clip_norm, kl_warmup_epochs,
            val_num_samples, on_non_finite (stop, or rollback with half the learning rate),
            seed (initialisation, minibatch order, dynamic binarization, particle noise)
    eval:   method (a component: "is", "ais", ... with its options), split, data_batch_size, seed
    device, flush_denormals (true: denormal floats are read and written as zero on the CPU, in every process that
            trains or evaluates the run; :mod:`inference.denormals`)

A **component** is a name from one of the registries plus its options, ``{"name": "iwae", "options":
{"num_particles": 5}}``. Options are checked against the builder's signature when the configuration is built,
before anything is written: an unknown option names the valid ones, a value of the wrong type says which type is
wanted, a missing required option is named, and defaults the user did not set come from the component itself.
Every value is addressed by a dotted path (``model.prior.options.probs``, ``train.epochs``), which
:func:`apply_overrides` sets from ``--set PATH=VALUE`` and the command line's short flags.
"""

import dataclasses
import difflib
import inspect
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from inference.registry import Registry


class ConfigError(ValueError):
    """A configuration that cannot build a run; the message names the problem and the fix."""


@dataclass
class Component:
    """A registered component by ``name``, built with ``options``."""

    name: str
    options: dict = field(default_factory=dict)


def _mlp(hidden_sizes=(200, 200)):
    return Component("mlp", {"hidden_sizes": list(hidden_sizes), "activation": "tanh"})


@dataclass
class DataConfig:
    name: str = "digits"
    root: Optional[str] = None
    download: bool = False
    num_train: Optional[int] = None
    num_val: Optional[int] = None
    num_test: Optional[int] = None
    seed: int = 0
    #: Model 8-bit pixels ``k`` by a density on ``y = (k + u) / 256``, ``u ~ U(0, 1)`` (uniform dequantization);
    #: evaluation then reports the bound on the 8-bit mass (see :func:`pyro_vae.runs.dequantization_correction`).
    dequantize: bool = False
    #: Read the user's ``.npy`` / ``.npz`` from disk a batch at a time instead of whole (data larger than memory);
    #: ``None``: for files larger than 1 GiB. The numbers are the same either way.
    memory_map: Optional[bool] = None


@dataclass
class ModelConfig:
    latent_dim: int = 10
    #: With a number, a second stochastic layer z2 of that size above z (= z1): Burda et al.'s two-layer models.
    top_latent_dim: Optional[int] = None
    top_hidden_sizes: list = field(default_factory=lambda: [100, 100])
    prior: Component = field(default_factory=lambda: Component("normal"))
    likelihood: Component = field(default_factory=lambda: Component("bernoulli"))
    guide: Component = field(default_factory=lambda: Component("diagonal-normal"))
    encoder: Component = field(default_factory=_mlp)
    decoder: Component = field(default_factory=_mlp)


@dataclass
class BudgetConfig:
    """How much training a run gets (:mod:`inference.training.budget`): ``kind = "epochs"`` trains
    ``train.epochs`` epochs; ``"steps"``, ``"evaluations"`` (particles x examples x steps) or ``"seconds"`` train
    until ``amount`` of it is spent, however many epochs that takes (``train.epochs`` is then not used)."""

    kind: str = "epochs"
    amount: Optional[float] = None

    def budget(self):
        """The trainer's :class:`~inference.training.budget.Budget`, or None for an epochs budget."""
        from inference.training.budget import Budget

        return None if self.kind == "epochs" else Budget(self.kind, self.amount)

    def describe(self, epochs: int) -> str:
        return f"{epochs} epochs" if self.kind == "epochs" else f"{self.amount:g} {self.kind}"


@dataclass
class TrainConfig:
    estimator: Component = field(default_factory=lambda: Component("elbo"))
    optimizer: Component = field(default_factory=lambda: Component("adam", {"lr": 1e-3}))
    #: Stepped after every epoch: constant, burda (3^i epochs at lr * 10^(-i/7)), exponential, step.
    lr_schedule: Component = field(default_factory=lambda: Component("constant"))
    epochs: int = 100
    #: Steps, likelihood evaluations or seconds instead of epochs: for comparisons at equal cost.
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    batch_size: int = 100
    clip_norm: Optional[float] = None
    kl_warmup_epochs: int = 0
    val_num_samples: int = 10
    on_non_finite: str = "stop"  # or "rollback": back to the epoch's start with half the learning rate
    seed: int = 0


@dataclass
class EvalConfig:
    method: Component = field(default_factory=lambda: Component("is"))
    split: str = "test"
    data_batch_size: int = 100
    seed: int = 0


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``config.json`` and rebuilt from it exactly."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"
    #: Flush denormal floats to zero on the CPU while training and evaluating (:mod:`inference.denormals`).
    flush_denormals: bool = True
    #: Python files or modules that register the user's own components. A configuration only records them: they
    #: run when the user names them (``--plugin``, or :func:`load_plugins` in Python), never because a file lists them.
    plugins: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, tree: dict, *, checked: bool = True) -> "RunConfig":
        """Build and check a configuration from a (possibly partial) nested dict; missing values take defaults.
        With ``checked=False`` only the types are checked, not names, options or ranges: for comparing a saved
        tree with a configuration that was checked, without checking twice."""
        config = _from_dict(cls, tree, "")
        if checked:
            require_loaded_plugins(config.plugins)
            check(config)
        return config


# ---------------------------------------------------------------------------------------------------------------
# Building from dicts, with type checks


def _from_dict(cls, tree, path):
    if not isinstance(tree, dict):
        raise ConfigError(f"'{path or 'the configuration'}' must be a table of values, got {tree!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [key for key in tree if key not in fields]
    if unknown:
        raise ConfigError(_unknown_message(unknown[0], fields, f"'{path}'" if path else "the configuration", "key"))
    values = {}
    for name, value in tree.items():
        hint = hints[name]
        where = f"{path}.{name}" if path else name
        if hint is Component:
            values[name] = _component_from(value, where)
        elif dataclasses.is_dataclass(hint):
            values[name] = _from_dict(hint, value, where)
        else:
            values[name] = _checked_value(value, hint, where)
    return cls(**values)


def _component_from(value, path):
    if isinstance(value, Component):
        return value
    if isinstance(value, str):
        return Component(value)
    if not isinstance(value, dict) or set(value) - {"name", "options"} or "name" not in value:
        raise ConfigError(
            f"'{path}' must be a component name or a table {{name = \"...\", options = {{...}}}}, got {value!r}"
        )
    options = value.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"'{path}.options' must be a table of options, got {options!r}")
    return Component(_checked_value(value["name"], str, f"{path}.name"), dict(options))


def _checked_value(value, hint, path):
    """``value`` if it has the type ``hint`` asks for (ints pass as floats); a :class:`ConfigError` otherwise."""
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    if optional:
        if value is None:
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if _has_type(value, hint):
        return float(value) if hint is float else value
    wanted = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))
    raise ConfigError(f"'{path}' must be {wanted}{' or null' if optional else ''}, got {value!r}")


def _has_type(value, hint) -> bool:
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, hint)


def _unknown_message(name, valid, where, what):
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    listed = ", ".join(sorted(valid)) or "none"
    return f"unknown {what} '{name}' in {where}.{hint} Valid {what}s: {listed}."


_LOADED_PLUGINS = {}


def plugin_key(plugin) -> str:
    """How a plugin is named in ``config.json``: a ``.py`` file by its absolute path, a module by its name."""
    import os

    plugin = str(plugin)
    return os.path.abspath(plugin) if plugin.endswith(".py") else plugin


def load_plugins(plugins) -> None:
    """Import each plugin once: a ``.py`` file by its path, anything else as a module name. A plugin registers
    components (``@PRIORS.register("name")``), which the configuration can then name. Only plugins the user
    names are loaded (``--plugin``, or this function): a configuration that lists one only records it."""
    import importlib
    import importlib.util
    import os
    import sys

    for plugin in plugins:
        key = plugin_key(plugin)
        if key in _LOADED_PLUGINS:
            continue
        if key.endswith(".py"):
            if not os.path.isfile(key):
                raise ConfigError(
                    f"no plugin file '{plugin}': give the path of a Python file that registers components"
                )
            name = f"pyro_vae_plugin_{len(_LOADED_PLUGINS)}"
            spec = importlib.util.spec_from_file_location(name, key)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # as an import would: its classes can then be inspected
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                sys.modules.pop(name, None)
                raise ConfigError(f"plugin '{plugin}' failed to load: {type(e).__name__}: {e}") from None
        else:
            try:
                module = importlib.import_module(plugin)
            except Exception as e:
                raise ConfigError(f"plugin module '{plugin}' failed to load: {type(e).__name__}: {e}") from None
        _LOADED_PLUGINS[key] = module


def require_loaded_plugins(plugins) -> None:
    """Refuse a configuration that records a plugin the user has not loaded: a run folder or a configuration file
    received from someone else must not run code that its reader did not name."""
    import os

    for plugin in plugins:
        key = plugin_key(plugin)
        if key in _LOADED_PLUGINS:
            continue
        if key.endswith(".py") and not os.path.isfile(key):
            raise ConfigError(
                f"this configuration needs the plugin file '{plugin}' (Python code that registers its components), "
                f"which is not there: put the file back at that path, then add --plugin {plugin}"
            )
        raise ConfigError(
            f"this configuration needs the plugin '{plugin}' (Python code that registers its components), which "
            f"runs only when you name it: add --plugin {plugin} if you trust that file"
        )


# ---------------------------------------------------------------------------------------------------------------
# Components against their builders' signatures


def component_registries():
    """``{path: (registry, arguments the run supplies itself)}`` for every component of the tree."""
    from inference.evaluation.log_marginal_likelihood import LOG_PX_METHODS
    from inference.objectives import ESTIMATORS
    from inference.training.schedules import LR_SCHEDULES
    from inference.training.trainer import OPTIMIZERS
    from pyro_vae.components import GUIDES, LIKELIHOODS, NETWORKS, PRIORS

    return {
        "model.prior": (PRIORS, {"latent_dim"}),
        "model.likelihood": (LIKELIHOODS, {"data_dim"}),
        "model.guide": (GUIDES, {"latent_dim"}),
        "model.encoder": (NETWORKS, {"in_dim", "out_dim", "image_shape"}),
        "model.decoder": (NETWORKS, {"in_dim", "out_dim", "image_shape"}),
        "train.estimator": (ESTIMATORS, {"max_plate_nesting", "data_plate", "baseline_net", "sleep_args"}),
        "train.optimizer": (OPTIMIZERS, {"params"}),
        "train.lr_schedule": (LR_SCHEDULES, {"optimizer"}),
        "eval.method": (LOG_PX_METHODS, set()),
    }


def component_options(builder, supplied=frozenset()) -> dict:
    """``{option: default}`` of a builder's keyword options (``inspect.Parameter.empty`` for a required one).

    A class whose ``__init__`` passes ``**options`` on to its base gets the base's options too, down the MRO.
    """
    options = {}
    for signature in _signatures(builder):
        for name, parameter in signature.parameters.items():
            if name in supplied or name in options or name == "self":
                continue
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                options[name] = parameter.default
    return options


def _signatures(builder):
    """The signatures that together define ``builder``'s options: its own ``__init__``, then its bases' while each
    passes ``**options`` on."""
    if not isinstance(builder, type) or "__signature__" in vars(builder):
        yield inspect.signature(builder)
        return
    for cls in builder.__mro__:
        init = vars(cls).get("__init__")
        if init is None:
            continue
        if cls is object:
            return
        signature = inspect.signature(init)
        yield signature
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            return


def _takes_any_keyword(builder) -> bool:
    signatures = list(_signatures(builder))
    return any(p.kind is p.VAR_KEYWORD for p in signatures[-1].parameters.values())


def check_component(component: Component, registry: Registry, supplied, path):
    """Check ``component`` against its builder: a known name, known options of the right types, none missing."""
    if component.name not in registry:
        raise ConfigError(_unknown_message(component.name, registry.names(), f"'{path}'", registry.kind))
    builder = registry.get(component.name)
    valid = component_options(builder, supplied)
    for name, value in component.options.items():
        if name in supplied:
            raise ConfigError(
                f"'{path}.options.{name}' is set by the run itself (from the data and the model); remove it"
            )
        if name not in valid:
            if _takes_any_keyword(builder):
                continue
            raise ConfigError(_unknown_message(name, valid, f"{registry.kind} '{component.name}'", "option"))
        default = valid[name]
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            if value.is_integer():
                component.options[name] = value = int(value)  # 1e3 from a file or --set means the integer 1000
        if default is not inspect.Parameter.empty and default is not None and not _option_type_matches(value, default):
            raise ConfigError(
                f"'{path}.options.{name}' of {registry.kind} '{component.name}' must be {_kind_of(default)} "
                f"(its default is {json.dumps(default) if _jsonable(default) else repr(default)}), got {value!r}"
            )
    missing = [name for name, default in valid.items() if default is inspect.Parameter.empty]
    missing = [name for name in missing if name not in component.options]
    if missing:
        raise ConfigError(
            f"{registry.kind} '{component.name}' needs option(s) {', '.join(missing)}: set "
            + ", ".join(f"'{path}.options.{name}'" for name in missing)
        )


def _option_type_matches(value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (isinstance(default, float) or float(value).is_integer())
        )
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, str):
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)  # e.g. scale: "learned" or 0.1
    return True


def _kind_of(default) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, (list, tuple)):
        return "a list"
    return "a string or a number" if isinstance(default, str) else f"like {default!r}"


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def check(config: RunConfig) -> None:
    """Every check that needs no data: component names and options, ranges, the device and the split."""
    from pyro_vae.data import DATASETS
    from pyro_vae.data.user import is_user_data

    if config.data.name not in DATASETS and not is_user_data(config.data.name):
        raise ConfigError(
            _unknown_message(config.data.name, DATASETS.names(), "'data.name'", "dataset")
            + " Or give the path of your own .npy, .npz, .pt or .csv file."
        )
    for path, (registry, supplied) in component_registries().items():
        section, key = path.split(".")
        check_component(getattr(getattr(config, section), key), registry, supplied, path)
    positive = {
        "model.latent_dim": config.model.latent_dim,
        "train.epochs": config.train.epochs,
        "train.batch_size": config.train.batch_size,
        "train.val_num_samples": config.train.val_num_samples,
        "eval.data_batch_size": config.eval.data_batch_size,
        **{f"data.{k}": getattr(config.data, k) for k in ("num_train", "num_val", "num_test")},
    }
    for path, value in positive.items():
        if value is not None and value < 1:
            raise ConfigError(f"'{path}' must be a positive integer, got {value}")
    check_budget(config.train.budget)
    if config.train.kl_warmup_epochs < 0:
        raise ConfigError(
            f"'train.kl_warmup_epochs' must be 0 (no warm-up) or more, got {config.train.kl_warmup_epochs}"
        )
    from inference.evaluation.log_marginal_likelihood import log_px_method

    log_px_method(config.eval.method.name, **config.eval.method.options)  # its own checks of the values
    if config.eval.split not in ("train", "val", "test"):
        raise ConfigError(f"'eval.split' must be one of train, val, test; got '{config.eval.split}'")
    check_device(config.device)


def check_budget(budget: BudgetConfig) -> None:
    from inference.training.budget import KINDS

    if budget.kind == "epochs":
        if budget.amount is not None:
            raise ConfigError(
                "'train.budget.amount' is for a budget of steps, evaluations or seconds; an epochs budget is "
                "'train.epochs': set that instead (--epochs N)"
            )
        return
    if budget.kind not in KINDS:
        raise ConfigError(
            f"'train.budget.kind' must be epochs, {', '.join(KINDS)}; got '{budget.kind}' "
            "(e.g. --budget evaluations=1e7)"
        )
    if budget.amount is None or not budget.amount > 0 or budget.amount == float("inf"):
        raise ConfigError(
            f"a budget of {budget.kind} needs a positive 'train.budget.amount', got {budget.amount} "
            f"(e.g. --budget {budget.kind}=1e7)"
        )
    if budget.kind != "seconds" and budget.amount != int(budget.amount):
        raise ConfigError(
            f"a budget of {budget.kind} counts whole {budget.kind}, got {budget.amount:g}: give --budget "
            f"{budget.kind}={max(1, int(budget.amount))}"
        )


def check_device(device: str) -> None:
    import torch

    if device == "auto":
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{device}' is not supported: use auto, cpu, cuda or cuda:N")


def resolve_device(device: str):
    """``"auto"``: the first GPU when there is one (one GPU per process of this machine when several run together:
    NCCL cannot share a GPU between ranks), else the CPU. A GPU asked for but absent, or too few GPUs for the
    processes, is an error."""
    import os

    import torch

    check_device(device)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # set by torchrun and by --nproc
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return torch.device("cuda" if gpus >= max(processes, 1) else "cpu")
    parsed = torch.device(device)
    if parsed.type == "cuda":
        if not gpus:
            raise ConfigError(f"device '{device}' was asked for, but torch sees no GPU here: use --device cpu or auto")
        if parsed.index is not None and parsed.index >= gpus:
            raise ConfigError(f"device '{device}' does not exist: this machine has {gpus} GPU(s)")
        if processes > gpus:
            raise ConfigError(
                f"{processes} processes on this machine need a GPU each (NCCL cannot share one) and it has {gpus}: "
                "use --device cpu, or at most as many processes as GPUs"
            )
    return parsed


# ---------------------------------------------------------------------------------------------------------------
# Dotted paths: --set PATH=VALUE, short flags, TOML files


def parse_value(text: str):
    """A command-line value: JSON where it parses (numbers, true/false, null, lists, tables), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_path(tree: dict, path: str, value) -> None:
    """Set ``value`` at dotted ``path`` of a configuration dict, in place.

    Setting a component to a name (``model.prior=bernoulli``) keeps its options only when the name is unchanged:
    another component's options would not fit.
    """
    keys = path.split(".")
    if not all(keys):
        raise ConfigError(f"'{path}' is not a dotted path such as train.epochs or model.prior.options.probs")
    node = tree
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None and depth >= 2 and keys[depth - 1] == "options":
            child = node[key] = {}
        if not isinstance(child, dict):
            section = ".".join(keys[:depth]) or "the configuration"
            if child is None:
                raise ConfigError(f"'{path}': " + _unknown_message(key, list(node), f"'{section}'", "key"))
            raise ConfigError(f"'{path}': '{'.'.join(keys[: depth + 1])}' is a value, not a section")
        node = child
    last = keys[-1]
    if isinstance(node.get(last), dict) and set(node[last]) == {"name", "options"} and isinstance(value, str):
        if node[last]["name"] != value:
            node[last] = {"name": value, "options": {}}
        return
    if last not in node and not (len(keys) >= 2 and keys[-2] == "options"):
        section = ".".join(keys[:-1]) or "the configuration"
        raise ConfigError(_unknown_message(last, [k for k in node], f"'{section}'", "key"))
    node[last] = value


def apply_overrides(config: RunConfig, overrides) -> RunConfig:
    """A new configuration with ``overrides`` (``(path, value)`` pairs, in order) applied, checked."""
    return config_from(config.to_dict(), overrides)


def same_but_for_epochs(saved: RunConfig, config: RunConfig) -> bool:
    """Whether ``config`` is ``saved`` with at most ``train.epochs`` changed: what resuming a run may change. A
    budget of steps, evaluations or seconds may not: its run stopped part-way through its last epoch, so a larger
    one continued from there would not be the run that budget trains from the start."""
    return dataclasses.replace(saved, train=dataclasses.replace(saved.train, epochs=config.train.epochs)) == config


def config_from(tree: dict, overrides=()) -> RunConfig:
    """The configuration of a (possibly partial) ``tree`` with ``overrides`` applied, checked once: how a command
    turns a file or a run's ``config.json`` and its flags into the one configuration it runs."""
    tree = RunConfig.from_dict(tree, checked=False).to_dict()  # every section present, defaults filled in
    for path, value in overrides:
        set_path(tree, path, value)
    return RunConfig.from_dict(tree)


def layered(tree: dict, over: dict) -> dict:
    """The (possibly partial) configuration tree ``over`` laid over ``tree``: a section of ``over`` changes only
    the keys it holds, while a component or a value it names replaces ``tree``'s whole (a component's options fit
    its own name only)."""
    layered_tree = RunConfig.from_dict(tree, checked=False).to_dict()  # every section present, components as dicts

    def lay(node: dict, upper: dict):
        for key, value in upper.items():
            below = node.get(key)
            is_section = isinstance(below, dict) and set(below) != {"name", "options"}
            if is_section and isinstance(value, dict):
                lay(below, value)
            else:
                node[key] = value

    lay(layered_tree, over)
    return layered_tree


def read_tree_file(path, what: str = "configuration file") -> dict:
    """The table in a TOML (or, by its ``.json`` suffix, JSON) file; a :class:`ConfigError` naming ``what`` and
    the problem when it is missing, unreadable or not valid."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return json.load(f) if str(path).endswith(".json") else tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no {what} '{path}'") from None
    except OSError as e:
        raise ConfigError(f"cannot read the {what} '{path}': {e.strerror}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"'{path}' is not a valid {'JSON' if str(path).endswith('.json') else 'TOML'} file: {e}"
        ) from None


def load_config_file(path, overrides=()) -> RunConfig:
    """A configuration from a TOML or JSON file with ``overrides`` applied, checked once; what the file leaves out
    takes the defaults."""
    return config_from(read_tree_file(path), overrides)


def describe_components() -> dict:
    """``{path: {name: {"doc": first line, "options": {option: default or "required"}}}}`` for ``list --json``."""
    described = {}
    for path, (registry, supplied) in component_registries().items():
        described[path] = {}
        for name in registry.names():
            builder = registry.get(name)
            doc = inspect.getdoc(builder) or ""
            options = {
                option: (
                    "required"
                    if default is inspect.Parameter.empty
                    else default
                    if _jsonable(default)
                    else repr(default)
                )
                for option, default in component_options(builder, supplied).items()
            }
            described[path][name] = {"doc": doc.split("\n\n")[0].replace("\n", " "), "options": options}
    return described
