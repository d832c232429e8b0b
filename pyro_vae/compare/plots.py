"""The figures of a comparison report (matplotlib, PNG): one function per figure, each returning its path.

* :func:`learning_curves`: training objective and validation log p(x) against epoch, gradient steps, likelihood
  evaluations and wall-clock time,
* :func:`log_px_per_cell`: test log p(x) of every cell with error bars, and its ELBO,
* :func:`paired_differences`: each cell's paired difference to the baseline with a two-standard-error interval,
* :func:`khat_distributions`: the per-example Pareto k-hat of every cell, with the 0.7 line,
* :func:`sample_grids`: samples and reconstructions of every cell side by side,
* :func:`latent_manifolds`: for two-dimensional latents, the decoder's means over a grid of N(0, 1) quantiles,
* :func:`gradient_snr`: the guide's and the model's gradient signal-to-noise ratio against K per cell.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _color(i):
    return COLORS[i % len(COLORS)]


def _save(fig, path):
    from inference.atomic import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


#: The x axes of the learning curves: a title and the value of one ``metrics.json`` entry (None: not recorded).
CURVE_AXES = (
    ("epoch", lambda m: m["epoch"]),
    ("gradient steps", lambda m: m.get("steps")),
    ("likelihood evaluations (K x examples x steps)", lambda m: m.get("likelihood_evaluations")),
    ("wall-clock seconds", None),  # the epochs' seconds, validation included, added up
)


def learning_curves(curves: dict, path: str) -> str:
    """``curves``: ``{cell: [metrics lists, one per seed]}`` (``metrics.json`` contents). One column per x axis of
    :data:`CURVE_AXES`, so that cells trained at equal steps or evaluations are read at equal cost."""
    fig, axes = plt.subplots(2, len(CURVE_AXES), figsize=(5 * len(CURVE_AXES), 7), sharey="row")
    for i, (cell, seeds) in enumerate(curves.items()):
        for s, metrics in enumerate(seeds):
            label = cell if s == 0 else None
            for column, (_, x_of) in enumerate(CURVE_AXES):
                xs = np.cumsum([m["seconds"] for m in metrics]) if x_of is None else [x_of(m) for m in metrics]
                if any(x is None for x in xs):  # a run from before steps were counted
                    continue
                for row, key in enumerate(("train_objective", "val_log_px")):
                    values = [m.get(key, np.nan) for m in metrics]
                    legend = label if (row, column) == (0, 0) else None
                    axes[row, column].plot(
                        xs, values, color=_color(i), alpha=0.85, lw=1.2, marker=".", ms=4, label=legend
                    )  # the markers show the epochs, and a run of one epoch at all
    axes[0, 0].set_ylabel("training objective (nats / example)")
    axes[1, 0].set_ylabel("validation log p(x), IS bound (nats / example)")
    for column, (title, _) in enumerate(CURVE_AXES):
        axes[1, column].set_xlabel(title)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Learning curves (one line per seed)")
    return _save(fig, path)


def log_px_per_cell(summaries: list, path: str) -> str:
    """Mean test log p(x) per cell with two-standard-error bars (across seeds where there are several), and the
    mean ELBO."""
    done = [s for s in summaries if "log_px" in s]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(done) + 3), 4.2))
    xs = np.arange(len(done))
    errors = [_error_bar(s) for s in done]
    ax.errorbar(xs, [s["log_px"] for s in done], yerr=errors, fmt="o", capsize=4, label="log p(x) (IS), ±2 s.e.")
    ax.plot(xs, [s["elbo"] for s in done], "s", mfc="none", label="ELBO")
    ax.set_xticks(xs, [s["cell"] for s in done], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("nats per test example")
    ax.legend(fontsize=8)
    ax.set_title("Test log p(x) per cell")
    return _save(fig, path)


def _error_bar(summary):
    se = summary.get("log_px_stderr_seeds")
    if se is None or not np.isfinite(se):
        se = summary["log_px_stderr_examples"]
    return 2 * se


def paired_differences(summaries: list, baseline: str, path: str) -> str:
    """Each cell's paired difference to the baseline, with ``±2`` standard errors; grey where within noise."""
    rows = [s for s in summaries if s.get("diff_stderr") is not None]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.8))
    for i, s in enumerate(rows):
        color = "0.55" if s["within_noise"] else _color(0)
        ax.errorbar(s["diff_to_baseline"], i, xerr=2 * s["diff_stderr"], fmt="o", color=color, capsize=4)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [s["cell"] for s in rows], fontsize=8)
    ax.set_xlabel("Δ log p(x) to the baseline, nats per example (±2 s.e.)")
    ax.set_title(f"Paired differences to {baseline} (grey: within noise)", fontsize=10)
    return _save(fig, path)


def khat_distributions(khats: dict, path: str) -> str:
    """``khats``: ``{cell: per-example k-hat array}`` (one seed)."""
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(khats) + 3), 4))
    labels = list(khats)
    data = [np.asarray(khats[c])[np.isfinite(khats[c])] for c in labels]
    ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
    ax.axhline(0.7, color="r", lw=0.8, ls="--", label="0.7: importance weights unreliable above")
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Pareto k-hat per test example")
    ax.legend(fontsize=8)
    return _save(fig, path)


def sample_grids(grids: dict, path: str) -> str:
    """``grids``: ``{cell: (samples image, reconstructions image)}`` as ``(H, W, 3)`` arrays."""
    fig, axes = plt.subplots(len(grids), 2, figsize=(8, 4 * len(grids)), squeeze=False)
    for row, (cell, images) in enumerate(grids.items()):
        for col, (image, title) in enumerate(zip(images, ("samples", "reconstructions"))):
            axes[row, col].imshow(image)
            axes[row, col].set_title(f"{cell}: {title}", fontsize=9)
            axes[row, col].axis("off")
    return _save(fig, path)


def latent_manifolds(manifolds: dict, path: str) -> str:
    """``manifolds``: ``{cell: image}`` of decoded quantile grids."""
    fig, axes = plt.subplots(1, len(manifolds), figsize=(5 * len(manifolds), 5), squeeze=False)
    for ax, (cell, image) in zip(axes[0], manifolds.items()):
        ax.imshow(image)
        ax.set_title(cell, fontsize=9)
        ax.axis("off")
    fig.suptitle("Decoder means over N(0, 1) quantiles of the two latent dimensions")
    return _save(fig, path)


def gradient_snr(points: list, path: str) -> str:
    """``points``: :class:`~pyro_vae.compare.snr.SNRPoint` s; the guide's and the model's SNR against ``K``, one
    line per cell, both axes logarithmic."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    cells = list(dict.fromkeys(p.cell for p in points))
    for i, cell in enumerate(cells):
        mine = sorted((p for p in points if p.cell == cell), key=lambda p: p.num_particles)
        ks = [p.num_particles for p in mine]
        label = f"{cell} ({mine[0].estimator})"
        axes[0].plot(ks, [p.guide_snr for p in mine], "o-", color=_color(i), label=label)
        axes[1].plot(ks, [p.model_snr for p in mine], "o-", color=_color(i), label=label)
    for ax, title in zip(axes, ("inference network (guide)", "generative network (model)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("particles K")
        ax.set_title(f"gradient SNR: {title}")
    axes[0].set_ylabel("mean over parameters of |mean| / sd")
    axes[0].legend(fontsize=7)
    return _save(fig, path)
