import importlib.util
import os
import sys

import pyro
import pytest
import torch
from hypothesis import settings

# Under CI the property tests draw the same examples every run, so a red run can be reproduced.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() == "true":
    settings.load_profile("ci")


def load_script(folder, name):
    """The Python file ``folder/name.py`` (an example or a benchmark script, not a package) as a module, with
    ``folder`` on the import path while it loads, as when the script runs (a benchmark imports another)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


@pytest.fixture(autouse=True)
def fresh_pyro_state():
    """Each test starts with an empty param store and a known seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def float64():
    """Run a test in double precision (exact comparisons), restoring the default afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def require_data(available: bool, what: str, fix: str):
    """Skip when optional data is missing on a developer's machine; fail under CI, where it must be installed."""
    if available:
        return
    message = f"{what} is not available: {fix}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: .ci/run must install it)")
    pytest.skip(message)


def require_module(name: str, fix: str):
    """Skip when an optional package is missing on a developer's machine; fail under CI (see :func:`require_data`)."""
    import importlib.util

    require_data(importlib.util.find_spec(name) is not None, f"the package '{name}'", fix)


def require_fashion_mnist():
    from pyro_vae.data.datasets import FASHION_MNIST_SYSTEM_FOLDERS, find_idx_image_files

    require_data(
        find_idx_image_files(FASHION_MNIST_SYSTEM_FOLDERS) is not None,
        f"Fashion-MNIST IDX files in {FASHION_MNIST_SYSTEM_FOLDERS[0]}",
        "apt-get install dataset-fashion-mnist",
    )


@pytest.fixture
def device():
    """The GPU where there is one (so the same tests exercise it), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"
