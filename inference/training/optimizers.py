"""The optimizers a run can name, and the implementation of their update that the trainer picks.

``torch.optim`` has three implementations of most updates: a loop over parameters in Python (``foreach=False``),
one ``torch._foreach_*`` call per arithmetic step over all parameters (``foreach=True``), and one fused kernel per
device (``fused=True``). They compute the same update up to the order of floating-point operations. On a CPU torch
runs the Python loop unless told otherwise, which is the slowest of the three (``benchmarks/train_speed.py``; its
figures are in ``BENCHMARKS.md``). The trainer therefore asks for the fused kernel wherever the optimizer has one
and every parameter can use it, unless the options choose an implementation themselves (``fused = false`` or
``foreach = ...`` in a run's optimizer options).

A fused kernel also takes a flag on the device, ``found_inf``, and leaves the parameters and its own state alone
where it is set; ``torch.amp.GradScaler`` skips steps with it. The trainer uses it to skip a step whose loss or
gradient is not finite without reading either back from the device (:func:`skips_on_device`).
"""

import inspect

import torch

from inference.registry import Registry

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("sgd")(torch.optim.SGD)
OPTIMIZERS.register("rmsprop")(torch.optim.RMSprop)

#: Device types on which torch has fused kernels for Adam, AdamW and SGD. The test suite runs the CPU's on every
#: machine and CUDA's where the machine has a GPU (no GPU has run them yet: the first did before they were used).
FUSED_DEVICE_TYPES = ("cpu", "cuda")


def can_fuse(optimizer_class, params) -> bool:
    """Whether ``optimizer_class`` has a fused kernel that every tensor of ``params`` can use: floating point, on a
    device of :data:`FUSED_DEVICE_TYPES`, all of one device type."""
    if "fused" not in inspect.signature(optimizer_class).parameters:
        return False
    device_types = {p.device.type for p in params}
    return (
        len(device_types) == 1
        and device_types <= set(FUSED_DEVICE_TYPES)
        and all(torch.is_floating_point(p) for p in params)
    )


def implementation_options(optimizer_class, params, options: dict) -> dict:
    """``options`` with ``fused=True`` added where :func:`can_fuse` allows and the options choose no
    implementation (``fused`` or ``foreach``) themselves."""
    if "fused" in options or "foreach" in options or not can_fuse(optimizer_class, params):
        return dict(options)
    return {**options, "fused": True}


def build_optimizer(name: str, params, options=None) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` over ``params``, with the fastest implementation its options allow."""
    params = list(params)
    return OPTIMIZERS.build(name, params=params, **implementation_options(OPTIMIZERS.get(name), params, options or {}))


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` reads ``optimizer.found_inf`` (a float32 tensor on the device) and skips the
    update where it is 1: torch's fused kernels do, and say so by the attribute ``GradScaler`` reads."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))
