"""Files that are never seen half-written: write beside the target, flush to disk, rename over it."""

import os
import tempfile


def is_interrupted_write(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temporary files (``.NAME-XXXX.tmp``), which only a
    writer killed mid-write (SIGKILL, power loss) leaves behind."""
    return name.startswith(".") and name.endswith(".tmp") and "-" in name


def remove_interrupted_writes(folder) -> list:
    """Remove the temporary files that killed writers left in ``folder`` (not its subfolders); call it holding the
    folder's lock, so that no live writer's file is among them. Returns the paths removed."""
    removed = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if is_interrupted_write(name) and os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def atomic_write(path, write, *, by_path: bool = False) -> None:
    """Write ``path`` atomically: ``write(file)`` (or ``write(temporary_path)`` with ``by_path``, for writers
    that open the file themselves) fills a temporary file in the same folder, which is flushed to disk and
    renamed to ``path``. Readers see the old file or the new one, never a partial one; on any error, an
    interrupt included, the temporary file is removed.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + "-", suffix=".tmp", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # the mode a plain open() would give, not mkstemp's private 0600
    try:
        if by_path:
            os.close(fd)
            write(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                write(f)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
