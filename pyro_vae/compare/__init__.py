"""Comparing models and inference methods: a grid of runs over seeds, paired statistics, a report with plots.

* :mod:`~pyro_vae.compare.grid`: the grid (base configuration, varying paths, hand-picked cells, seeds),
* :mod:`~pyro_vae.compare.execution`: running its runs in this process, a process pool or Ray, resumably,
* :mod:`~pyro_vae.compare.statistics`: per-run rows, per-cell summaries, paired differences to a baseline,
* :mod:`~pyro_vae.compare.plots` and :mod:`~pyro_vae.compare.report`: figures and the report files,
* :mod:`~pyro_vae.compare.comparison`: :func:`run_comparison`, what ``pyro-vae compare`` calls.
"""

from pyro_vae.compare.comparison import run_comparison
from pyro_vae.compare.grid import Cell, Grid, load_grid_file

__all__ = ["Cell", "Grid", "load_grid_file", "run_comparison"]
