"""Running a grid's runs: in this process, in a pool of local processes, or as Ray tasks.

Every run is :func:`run_one`: train into its folder (resuming from its checkpoint when the folder has one), then
evaluate with the configuration's ``eval`` section. A run whose training finished and whose evaluation scored
its last checkpoint is skipped, so a comparison that was killed resumes where it stopped: finished runs are not
retrained, half-trained ones continue from their last epoch exactly as an uninterrupted run would (the checkpoint
holds every random generator), and an evaluation is seeded by ``eval.seed``, so it repeats to the last bit.

Each worker runs with ``threads`` torch threads, the same in every backend, so that the local pool and Ray give
the same numbers. Ray (``pip install -e '.[ray]'``) is Ray's own scheduler: ``ray.init()`` starts a local
instance, ``ray.init(address=...)`` joins a cluster; the comparison folder must then be on storage every node
sees (as for Ray's own ``storage_path``).

Progress: :class:`ProgressMonitor` reads the runs' ``status.json`` files (written after every epoch, whatever
process trains them), so one bar shows the epochs done over all runs, the runs trained and evaluated, which are
training or evaluating now, and an estimate of the time left (from the training rate: evaluations add to it).
"""

import concurrent.futures
import json
import multiprocessing
import os
import threading
import traceback

from tqdm.auto import tqdm

from inference.training.budget import Spent
from pyro_vae.folder import evaluation_paths, read_status


def run_one(run_dir: str, config_tree: dict, threads: int) -> dict:
    """Train and evaluate one run (skipping what is already done); returns ``{"run_dir", "state", "error"}``.

    A folder with a checkpoint resumes from it; one without (nothing trained: a run killed before its first
    epoch ended) trains afresh under ``config_tree``, whatever ``config.json`` it holds."""
    import torch

    from pyro_vae import runs
    from pyro_vae.config import RunConfig, load_plugins

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        load_plugins(config_tree["plugins"])  # named on the comparison's command line, which checked them
        config = RunConfig.from_dict(config_tree)
        if not is_done(run_dir, config_tree):
            trained = os.path.exists(os.path.join(run_dir, runs.CHECKPOINT_FILE))
            runs.train_run(config, run_dir, resume=trained, progress=False)
            runs.evaluate_run(run_dir, progress=False, posterior_examples=())
        return {"run_dir": run_dir, "state": "done", "error": None}
    except Exception as error:  # one failed run does not stop the others; the report names it
        return {
            "run_dir": run_dir,
            "state": "failed",
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(),
        }
    finally:
        torch.set_num_threads(previous_threads)


def evaluation_file(run_dir: str, config_tree: dict) -> str:
    """The ``eval/*.json`` of the evaluation a run's configuration asks for."""
    evaluation = config_tree["eval"]
    return evaluation_paths(run_dir, evaluation["method"]["name"], evaluation["split"])["json"]


def is_done(run_dir: str, config_tree: dict, status=None) -> bool:
    """Training finished, with the epochs ``config_tree`` asks for (an updated grid may ask for more) or its budget
    spent, and the evaluation it asks for scored the last checkpoint (``status``: the run's ``status.json`` when the
    caller has read it already)."""
    status = read_status(run_dir) if status is None else status
    if status.get("state") != "finished" or progress(status, config_tree) < 1:
        return False
    try:
        with open(evaluation_file(run_dir, config_tree)) as f:
            report = json.load(f)
    except FileNotFoundError:
        return False
    return report.get("checkpoint", {}).get("sha256") == status.get("checkpoint", {}).get("sha256")


def progress(status: dict, config_tree: dict) -> float:
    """The fraction of its training budget a run has spent, from its ``status.json`` (1 once a budget run has
    finished: it ends when the next step no longer fits)."""
    budget = config_tree["train"].get("budget", {"kind": "epochs"})
    if budget["kind"] == "epochs":
        return min(1.0, status.get("epochs_done", 0) / config_tree["train"]["epochs"])
    if status.get("budget") != budget:  # not started, or trained to another budget (which --update refuses)
        return 0.0
    if status.get("state") == "finished":
        return 1.0
    return min(1.0, Spent.from_metrics(status.get("spent")).amount(budget["kind"]) / budget["amount"])


def run_local(tasks, jobs: int, threads: int) -> list:
    """Run ``tasks`` (``(run_dir, config_tree)`` pairs): in this process for ``jobs == 1``, else in a pool of
    ``jobs`` fresh processes (spawned, so no state leaks from this one; their ``malloc`` keeps freed memory, as
    ``pyro-vae`` sets it, :mod:`inference.allocator`)."""
    if jobs == 1:
        return [run_one(run_dir, tree, threads) for run_dir, tree in tasks]
    from inference.allocator import keep_freed_memory

    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=keep_freed_memory)
    with pool:
        futures = [pool.submit(run_one, run_dir, tree, threads) for run_dir, tree in tasks]
        return [future.result() for future in futures]


def run_ray(tasks, threads: int, address=None) -> list:
    """Run ``tasks`` as Ray tasks of ``threads`` CPUs each, on a local Ray instance (``address=None``) or the
    cluster at ``address``."""
    try:
        import ray
    except ImportError:
        raise ImportError("Ray is not installed: pip install -e '.[ray]' (or run without --ray)") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=threads)(run_one)
        return ray.get([remote.remote(run_dir, tree, threads) for run_dir, tree in tasks])
    finally:
        if started:
            ray.shutdown()


class ProgressMonitor:
    """A progress bar over all runs, fed by polling the runs' ``status.json`` from a thread: in epochs, or in runs
    (each counted by the fraction of its budget spent) where a run's budget is steps, evaluations or seconds."""

    def __init__(self, tasks, enabled=True, interval=0.5):
        self.trees = dict(tasks)
        in_epochs = all(tree["train"].get("budget", {}).get("kind", "epochs") == "epochs" for _, tree in tasks)
        #: What a run counts for in the bar when its budget is spent: its epochs, or 1 run.
        self.units = {run_dir: tree["train"]["epochs"] if in_epochs else 1 for run_dir, tree in tasks}
        unit = "epoch" if in_epochs else "run"
        self.interval = interval
        self.bar = tqdm(total=sum(self.units.values()), desc="compare", unit=unit, disable=not enabled)
        self._postfix = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        self._safe_update()
        self.bar.reset(total=self.bar.total)  # the rate and the time left count only this session's epochs
        self._safe_update()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._safe_update()
        self.bar.close()

    def _poll(self):
        while not self._stop.wait(self.interval):
            self._safe_update()

    def _safe_update(self):
        """:meth:`update`, except that a file it cannot read now (caught between two writes, or removed) waits
        for the next poll instead of ending the bar."""
        try:
            self.update()
        except (OSError, ValueError):
            pass

    def update(self):
        done, finished, current = 0, 0, []
        for run_dir, units in self.units.items():
            status = read_status(run_dir) if os.path.isdir(run_dir) else {}
            fraction = progress(status, self.trees[run_dir])
            done += round(fraction * units) if units > 1 else round(fraction, 2)
            if status.get("state") == "training":
                current.append(f"{_short(run_dir)} {fraction:.0%}")
            elif status.get("state") == "finished":
                if is_done(run_dir, self.trees[run_dir], status):
                    finished += 1
                else:
                    current.append(f"{_short(run_dir)} evaluating")
        postfix = f"runs done {finished}/{len(self.units)}" + "; ".join([""] + current[:2])
        if (done, postfix) != (self.bar.n, self._postfix):  # a log file gets a line per change, not per poll
            self._postfix = postfix
            self.bar.n = done
            self.bar.set_postfix_str(postfix)


def _short(run_dir: str) -> str:
    head, seed = os.path.split(os.path.normpath(run_dir))
    return f"{os.path.basename(head)}/{seed}"
