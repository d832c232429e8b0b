r"""Data-parallel training and evaluation across processes with ``torch.distributed``.

A run launched by ``torchrun`` (``torchrun --nproc_per_node=R script ...``; every process reads ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address from its environment) joins one process group with
:func:`init_from_environment`: gloo on CPU, NCCL on CUDA. Then

* every rank iterates the **same** stream of global minibatches (the same generator seed, so the same shuffling
  and dynamic binarization as one process) and keeps its own contiguous part, :func:`shard` (rank ``r`` of ``R``
  takes rows ``r``-th of ``R`` near-equal slices), so the ranks see distinct data;
* :class:`~inference.training.trainer.Trainer` wraps the loss in
  :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients over ranks during the
  backward pass.

The minibatch scale stays right: a data plate of ``size=N`` with a local subsample of ``b_r`` rows scales rank
``r``'s loss by ``N / b_r``, and the average over ranks of these unbiased estimates of the full-data objective is
again one; with equal shards (``b_r = B / R``) it is exactly ``(N / B) sum`` over the global batch, the loss of one
process with batch ``B``. Losses, validation sums and the epoch's objective are summed over ranks with
:func:`all_reduce_sum`, so every rank reports (and decides on early stopping, non-finite losses and learning-rate
changes with) the same numbers; only rank 0 writes files.

Evaluation splits the data into chunks whose draws are seeded by the chunk's first index
(:func:`~inference.evaluation.log_marginal_likelihood.log_marginal_likelihood` with ``seed``), hands chunk ``i``
to rank ``i mod R`` and gathers the per-example results (:func:`gather_in_order`), so R processes give exactly the
numbers of one.

References:
    S. Li et al. PyTorch Distributed: Experiences on Accelerating Data Parallel Training. VLDB 2020.
"""

import os
from typing import List, Optional

import torch
import torch.distributed as dist

from inference.data_rows import num_rows, rows


def is_distributed() -> bool:
    """True inside an initialized process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, the one process that writes files and shows progress."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when the environment names more than one process (``torchrun`` sets ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: torch.device) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, NCCL on CUDA) and
    return the device this rank uses (``cuda:LOCAL_RANK`` when ``device`` is CUDA). A no-op for one process."""
    if not launched_by_torchrun() or is_distributed():
        return _local_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(_local_device(device))
    dist.init_process_group(backend=backend)
    return _local_device(device)


def _local_device(device: torch.device) -> torch.device:
    if device.type != "cuda" or not launched_by_torchrun():
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))


def shutdown() -> None:
    """Leave the process group after a command succeeded on this rank: wait for every rank to get here, then
    destroy the group (a rank that leaves while another still talks to it can abort in gloo's threads). After a
    failure, do not call it: exit with an error, and the launcher stops the other ranks."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard_bounds(batch_size: int, rank: int, world_size: int) -> tuple:
    """``(start, stop)`` of rank ``rank``'s rows in a global batch of ``batch_size`` rows: ``world_size``
    contiguous slices whose sizes differ by at most one, the larger first (as :func:`torch.tensor_split`)."""
    base, extra = divmod(batch_size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(batch: tuple, rank: int, world_size: int) -> tuple:
    """Rank ``rank``'s part of a global batch: every tensor argument with a data dimension sliced by
    :func:`shard_bounds` along its first dimension; other arguments unchanged."""
    return rows(batch, *shard_bounds(num_rows(batch, "a batch to shard"), rank, world_size))


def all_reduce_sum(values, device: Optional[torch.device] = None) -> List[float]:
    """The sums over ranks of a few numbers (as Python floats; the values themselves outside a process group)."""
    if not is_distributed():
        return [float(v) for v in values]
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    buffer = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    return sum_over_ranks(buffer).tolist()


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over ranks, in place on its device, without reading it back (unchanged outside a process
    group)."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def all_gather_objects(value) -> list:
    """Every rank's ``value`` (any picklable object), in rank order; ``[value]`` outside a process group."""
    if not is_distributed():
        return [value]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def gather_in_order(pieces: dict) -> list:
    """Merge every rank's ``{index: piece}`` into one list ordered by index (each index held by one rank)."""
    merged = {}
    for part in all_gather_objects(pieces):
        merged.update(part)
    return [merged[i] for i in sorted(merged)]


def launch_local(fn, num_processes: int, *args, grace_seconds: float = 60.0) -> None:
    """Run ``fn(*args)`` in ``num_processes`` fresh processes of this machine, with the environment of one process
    group (what ``torchrun --standalone --nproc_per_node=N`` does; ``fn`` joins it, e.g. by
    :func:`init_from_environment`), each with its share of the CPU threads. A process that
    raises or exits with a non-zero code stops the others; the error is raised here
    (:class:`torch.multiprocessing.ProcessRaisedException` or ``ProcessExitedException``).

    SIGINT or SIGTERM to this process alone is passed on to every process, which stops as if it had received it
    itself (:func:`~inference.training.interruption.stop_on_signals`); this one waits up to ``grace_seconds`` for
    them to finish cleaning up (then kills them) and raises
    :class:`~inference.training.interruption.Interrupted`: no rank outlives its launcher."""
    import torch.multiprocessing as mp

    from inference.training.interruption import forward_signals

    if num_processes < 1:
        raise ValueError(f"the number of processes must be a positive integer, got {num_processes}")
    port = _free_port()
    context = mp.start_processes(
        _worker, args=(fn, num_processes, port, args), nprocs=num_processes, join=False, start_method="spawn"
    )
    with forward_signals(context.pids()):  # which ignores a second signal while the processes clean up
        try:
            while not context.join():
                pass
        except KeyboardInterrupt:
            _wait_for(context.processes, grace_seconds)
            raise


def _wait_for(processes, grace_seconds: float) -> None:
    import time

    deadline = time.monotonic() + grace_seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()


def _worker(local_rank, fn, num_processes, port, args):
    import sys

    from inference.training.interruption import stop_on_signals

    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(num_processes),
        LOCAL_WORLD_SIZE=str(num_processes),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_processes))
    with stop_on_signals():  # also where the shell left SIGINT ignored (a background job)
        code = fn(*args)
    if isinstance(code, int) and code:  # a command line's exit status: the launcher stops the other ranks
        sys.exit(code)
    shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
