r"""Gradient signal-to-noise against ``K``: why DReG (Rainforth et al. 2018, Figure 1's shape).

For each cell of a comparison (its first seed's run, at its last checkpoint) and each ``K`` asked for, the cell's
estimator with ``num_particles = K`` draws its gradient ``num_draws`` times on one fixed minibatch (the first
``batch_size`` validation examples, binarized or dequantized once as evaluation reads them: the same examples for
every cell), and :func:`~inference.evaluation.gradient_snr.gradient_snr` averages ``|mean| / sd`` over the
inference network's (guide) and the generative network's (model) parameter elements.

What to expect: under ``iwae`` the guide's SNR falls roughly as ``1 / sqrt(K)`` while the model's rises as
``sqrt(K)`` (Rainforth et al. 2018); ``iwae-dreg`` keeps the guide's higher (Tucker et al. 2019), and with the
guide at its ELBO optimum its SNR rises with ``K``. On a minibatch of an ELBO-trained VAE, DReG's guide SNR can
nonetheless fall at large ``K``: its effective sample size is that of the squared weights, which are heavy-tailed
there (:data:`CAPTION`).

References:
    [1] T. Rainforth et al. Tighter Variational Bounds are Not Necessarily Better. ICML 2018.
    [2] G. Tucker, D. Lawson, S. Gu, C. J. Maddison. Doubly Reparameterized Gradient Estimators for Monte Carlo
        Objectives. ICLR 2019.
"""

import os
from dataclasses import asdict, dataclass

import torch

from inference import estimator
from inference.evaluation.gradient_snr import gradient_snr
from pyro_vae.compare.grid import Grid
from pyro_vae.compare.statistics import run_folder
from pyro_vae.data.mapped import first_rows
from pyro_vae.folder import read_json, write_json

SNR_FILE = "gradient_snr.json"
CAPTION = (
    "Gradient signal-to-noise ratio |mean| / sd, averaged over the parameter elements of the inference network "
    "(guide) and of the generative network (model), against the number of particles K, each cell's estimator at "
    "its last checkpoint on one fixed validation minibatch. Under iwae the guide's SNR falls with K (Rainforth et "
    "al. 2018); iwae-dreg keeps it higher (Tucker et al. 2019). DReG's guide SNR rises with K when the guide is at "
    "its ELBO optimum, but on a minibatch of a VAE trained with the ELBO it can fall at large K: its effective "
    "sample size is that of the squared importance weights, which are heavy-tailed there."
)


@dataclass(frozen=True)
class SNRPoint:
    """One estimator's gradient SNR at one ``K``: averages over the guide's and the model's parameter elements."""

    cell: str
    estimator: str
    num_particles: int
    guide_snr: float
    model_snr: float


def snr_against_k(model, guide, x, estimator_name, ks, num_draws, *, options=None, seed=0) -> list:
    """``[(K, guide SNR, model SNR)]`` of the estimator ``estimator_name`` (with ``options``, its ``num_particles``
    replaced by each ``K``) for ``model`` and ``guide`` on the minibatch ``x``."""
    curve = []
    for k in ks:
        chosen = estimator(estimator_name, **{**(options or {}), "num_particles": k})
        result = gradient_snr(chosen, model, guide, x, num_draws=num_draws, seed=seed)
        curve.append((k, result.group_snr("guide"), result.group_snr("model")))
    return curve


def check_snr_settings(ks, num_draws) -> None:
    """Refuse particle numbers below 1 or fewer than two draws (no variance), before anything runs."""
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"--gradient-snr takes particle numbers K >= 1, got {ks}: e.g. --gradient-snr 1 4 16 64")
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 2:
        raise ValueError(f"--snr-draws must be at least 2 (a standard deviation needs two draws), got {num_draws}")


def cell_snr_curves(grid: Grid, root: str, ks, num_draws: int = 100, batch_size: int = 100, seed: int = 0) -> list:
    """:class:`SNRPoint` s of every cell's estimator against ``ks`` (see the module docstring), read from
    ``root/gradient_snr.json`` when it holds these settings, else measured and written there."""
    from pyro_vae import runs

    settings = {"ks": list(ks), "num_draws": num_draws, "batch_size": batch_size, "seed": seed}
    path = os.path.join(root, SNR_FILE)
    if os.path.exists(path):
        saved = read_json(path)
        if saved.get("settings") == settings and {p["cell"] for p in saved["points"]} == {
            c.label for c in grid.expand()
        }:
            return [SNRPoint(**p) for p in saved["points"]]
    points = []
    for cell in grid.expand():
        run_dir = run_folder(root, cell, grid.seeds[0])
        run = runs.load_run(run_dir, device="cpu")
        config, vae = run.config, run.vae
        x = runs.eval_split(run.splits, "val")
        x = first_rows(x, min(batch_size, len(x)))[0 : min(batch_size, len(x))]
        name = config.train.estimator.name
        options = {**config.train.estimator.options, "max_plate_nesting": vae.max_plate_nesting}
        with torch.random.fork_rng():
            curve = snr_against_k(vae.model, vae.guide, x, name, ks, num_draws, options=options, seed=seed)
        points += [SNRPoint(cell.label, name, k, guide, model) for k, guide, model in curve]
    write_json({"settings": settings, "points": [asdict(p) for p in points], "caption": CAPTION}, path)
    return points
