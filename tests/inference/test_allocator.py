"""``keep_freed_memory`` sets glibc's malloc, and only where the user has not."""

import os
import platform
import subprocess
import sys

APPLY = "from inference.allocator import keep_freed_memory; print(keep_freed_memory())"


def applied(**environment) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    command = [sys.executable, "-c", APPLY]
    finished = subprocess.run(command, env={**clean, **environment}, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.strip()


def test_applied_on_glibc_and_not_where_the_environment_sets_malloc():
    expected = "True" if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" else "False"
    assert applied() == expected
    assert applied(MALLOC_TRIM_THRESHOLD_="131072") == "False"
    assert applied(GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072") == "False"
