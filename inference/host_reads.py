r"""Finding where a computation reads tensor values back to Python.

On a GPU, PyTorch queues kernels and returns at once; a read of a value into Python (``tensor.item()``,
``bool(tensor)`` in an ``if``, ``float(tensor)``, ``tensor.tolist()``) or an operation whose output size depends on
the values (``nonzero``) waits until every queued kernel has run. A training step with such reads cannot run ahead
of the device, and cannot be captured as a CUDA graph. On a CPU the same reads cost nothing, which is why they go
unnoticed there: :class:`HostReads` records them on any device, so a test on a CPU can show that a step has
none::

    with HostReads() as reads:
        trainer.train_epoch(batches)
    assert not reads.calls, reads.report()

It is a :class:`torch.overrides.TorchFunctionMode`, which sees every tensor method and ``torch`` function called
from Python in its thread (not those inside C++ kernels or autograd's backward pass).
"""

import collections
import traceback

import torch
from torch.overrides import TorchFunctionMode

#: Tensor methods and functions that hand a value to Python or size their output by the values.
READS_BACK = frozenset(
    {
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.numpy,
        torch.Tensor.__bool__,
        torch.Tensor.__float__,
        torch.Tensor.__int__,
        torch.Tensor.__index__,
        torch.Tensor.nonzero,
        torch.nonzero,
        torch.Tensor.masked_select,
        torch.masked_select,
        torch.Tensor.unique,
        torch.unique,
        torch.equal,
        torch.Tensor.equal,
    }
)


class HostReads(TorchFunctionMode):
    """Record each call in :data:`READS_BACK` made inside the ``with`` block, by the line of code that made it.

    ``calls`` maps ``"function file:line (caller)"`` to a count; :meth:`report` lists them."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READS_BACK:
            caller = traceback.extract_stack(limit=2)[0]
            self.calls[f"{func.__name__} {caller.filename}:{caller.lineno} ({caller.name})"] += 1
        return func(*args, **(kwargs or {}))

    def report(self) -> str:
        return "\n".join(f"{count} x {where}" for where, count in self.calls.most_common()) or "no reads"
