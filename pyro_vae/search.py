"""``pyro-vae search``: Bayesian optimization of any configuration paths, maximizing validation log p(x).

Optuna (``pip install -e '.[search]'``) does the searching: its TPE sampler (Bergstra et al. 2011) proposes values
for the paths of a search space, every trial is an ordinary run folder ``OUT/trials/trial-<n>/``, and the
objective is the last epoch's ``val_log_px`` (the ``train.val_num_samples``-sample importance-weighted bound on the
validation split, nats per example). Poor trials are pruned through the trainer's callbacks: after every epoch
the trial reports ``val_log_px`` and Optuna's median pruner may stop it (Optuna's own ``should_prune``).

The study lives in ``OUT/study.db`` (SQLite) by default, so a killed search resumes where it stopped: trials
that finished are kept, and a trial that was running when the process died is marked failed once its heartbeat
is stale (Optuna's heartbeat) and replaced by a new one. An RDB URL (``--storage postgresql://...``) lets
processes on several machines work on one study, Optuna's own way of scaling out. ``OUT/study.json`` and
``OUT/plots/`` summarize it.

A search space names configuration paths and their distributions::

    train.optimizer.options.lr=loguniform(1e-4,1e-2)   model.latent_dim=int(2,32)
    train.batch_size=choice(50,100,200)                 train.estimator.options.kl_weight=uniform(0.5,1.0)
"""

import json
import math
import os
import re
import warnings

from inference.training.callbacks import Callback
from pyro_vae.config import ConfigError, RunConfig, apply_overrides, parse_value
from pyro_vae.folder import write_json

STUDY_FILE = "study.db"
SPACE_PATTERN = re.compile(r"^\s*(uniform|loguniform|int|logint|choice)\((.*)\)\s*$")


def parse_space(text: str) -> tuple:
    """``"PATH=loguniform(1e-4,1e-2)"`` -> ``(path, {"kind": "loguniform", "low": 1e-4, "high": 1e-2})``."""
    path, sep, spec = text.partition("=")
    match = SPACE_PATTERN.match(spec)
    if not sep or not path.strip() or not match:
        raise ConfigError(
            f"'{text}' is not PATH=DISTRIBUTION; write e.g. train.optimizer.options.lr=loguniform(1e-4,1e-2), "
            "model.latent_dim=int(2,32) or train.batch_size=choice(50,100,200)"
        )
    kind, arguments = match.group(1), [parse_value(a.strip()) for a in match.group(2).split(",") if a.strip()]
    if kind == "choice":
        if not arguments:
            raise ConfigError(f"'{text}': choice() needs at least one value")
        return path.strip(), {"kind": kind, "choices": arguments}
    if len(arguments) != 2 or not all(isinstance(a, (int, float)) for a in arguments) or arguments[0] >= arguments[1]:
        raise ConfigError(f"'{text}': {kind}(LOW,HIGH) needs two numbers with LOW < HIGH")
    if kind in ("loguniform", "logint") and arguments[0] <= 0:
        raise ConfigError(f"'{text}': a log scale needs LOW > 0")
    return path.strip(), {"kind": kind, "low": arguments[0], "high": arguments[1]}


def suggest(trial, path: str, spec: dict):
    """The trial's value for ``path`` from its distribution ``spec``."""
    kind = spec["kind"]
    if kind == "choice":
        return trial.suggest_categorical(path, spec["choices"])
    if kind in ("int", "logint"):
        return trial.suggest_int(path, int(spec["low"]), int(spec["high"]), log=kind == "logint")
    return trial.suggest_float(path, float(spec["low"]), float(spec["high"]), log=kind == "loguniform")


class ReportToTrial(Callback):
    """Report the epoch's validation log p(x) to an Optuna trial and stop training when the pruner says so."""

    def __init__(self, trial):
        self.trial = trial
        self.pruned = False

    def on_epoch_end(self, trainer, entry):
        value = entry.get("val_log_px")
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, entry["epoch"])
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def open_storage(optuna, url: str):
    """Optuna's RDB storage at ``url``; a URL it cannot open is a :class:`ConfigError` that says what works."""
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's terms; they are what resumes
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90)
        except Exception as e:  # SQLAlchemy's errors for a malformed URL, an unknown dialect, an unreachable server
            reason = (str(e).splitlines() or [""])[0] or type(e).__name__
            raise ConfigError(
                f"--storage '{url}' cannot be opened as a study database ({reason}): give an RDB URL such as "
                "sqlite:///PATH/study.db or postgresql://USER@HOST/DB, or leave --storage out to keep the study in "
                "OUT/study.db"
            ) from None


def run_search(
    base: RunConfig,
    space: dict,
    out: str,
    *,
    num_trials: int = 20,
    storage=None,
    study_name: str = "pyro-vae",
    seed: int = 0,
    prune: bool = True,
    progress: bool = True,
) -> dict:
    """Run (or resume) a study until it holds ``num_trials`` finished trials; write ``study.json`` and plots.

    :param base: the configuration every trial starts from.
    :param dict space: ``{path: spec}`` as :func:`parse_space` gives.
    :param storage: an Optuna storage URL; ``sqlite:///OUT/study.db`` by default.
    :returns: the summary written to ``study.json``.
    """
    optuna = _optuna()
    if not space:
        raise ConfigError("a search needs a search space: --space PATH=DISTRIBUTION (e.g. lr=loguniform(...))")
    _check_space(base, space)
    if storage is None:
        os.makedirs(out, exist_ok=True)  # where the default SQLite file goes
    rdb = open_storage(optuna, storage or f"sqlite:///{os.path.abspath(os.path.join(out, STUDY_FILE))}")
    os.makedirs(out, exist_ok=True)  # only once the storage has opened: a bad --storage leaves no folder
    study = optuna.create_study(
        study_name=study_name,
        storage=rdb,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if prune else None,
        load_if_exists=True,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        from pyro_vae.runs import read_metrics, train_run

        values = [(path, suggest(trial, path, spec)) for path, spec in sorted(space.items())]
        config = apply_overrides(base, values)
        run_dir = os.path.join(out, "trials", f"trial-{trial.number}")
        trial.set_user_attr("run_dir", os.path.relpath(run_dir, out))
        reporter = ReportToTrial(trial)
        train_run(config, run_dir, resume=True, progress=False, callbacks=[reporter] if prune else [])
        if reporter.pruned:
            raise optuna.TrialPruned()
        return read_metrics(run_dir)[-1]["val_log_px"]

    done = _finished(study)
    remaining = max(0, num_trials - done)
    if remaining:
        study.optimize(objective, n_trials=remaining, show_progress_bar=progress, catch=(FloatingPointError,))
    summary = {**summarize(study), "plots": write_plots(study, out)}
    write_json(summary, os.path.join(out, "study.json"))
    return summary


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError("Optuna is not installed: pip install -e '.[search]'") from None
    return optuna


def _check_space(base: RunConfig, space: dict) -> None:
    """Every path of the space must accept its values before any trial runs."""
    for path, spec in space.items():
        values = spec["choices"] if spec["kind"] == "choice" else [spec["low"], spec["high"]]
        for value in values:
            value = int(value) if spec["kind"] in ("int", "logint") else value
            try:
                apply_overrides(base, [(path, value)])
            except ConfigError as e:
                raise ConfigError(f"search space '{path}': {e}") from None


def _finished(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def summarize(study) -> dict:
    import optuna

    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "run_dir": t.user_attrs.get("run_dir"),
            "epochs": (max(t.intermediate_values) if t.intermediate_values else None),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    best = None
    if complete:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params, "run_dir": b.user_attrs.get("run_dir")}
    return {
        "study": study.study_name,
        "objective": "maximize the last epoch's val_log_px (nats per validation example)",
        "best": best,
        "trials": trials,
        "counts": {state: sum(t["state"] == state for t in trials) for state in sorted({t["state"] for t in trials})},
    }


def write_plots(study, out: str) -> dict:
    """Optuna's own matplotlib plots: the optimization history and, with two or more finished trials, each
    parameter's slice; written to ``OUT/plots/``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    folder = os.path.join(out, "plots")
    os.makedirs(folder, exist_ok=True)
    written = {}
    plots = {"history": vis.plot_optimization_history, "slices": vis.plot_slice}
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" API notes, and matplotlib on single-value axes
                axes = plot(study)
        except (ValueError, RuntimeError):  # too few finished trials for this plot
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        path = os.path.join(folder, f"{name}.png")
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written[name] = os.path.relpath(path, out)
    return written


def format_summary(summary: dict) -> str:
    lines = [f"study '{summary['study']}': {json.dumps(summary['counts'])}"]
    if summary["best"]:
        best = summary["best"]
        lines.append(f"best trial {best['number']}: val_log_px {best['value']:.3f} with {json.dumps(best['params'])}")
        lines.append(f"  run folder: {best['run_dir']}")
    return "\n".join(lines)
