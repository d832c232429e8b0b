"""The catalogue that ``pyro-vae list`` prints: every registered component with its options, and the defaults.

It is built from the registries (:func:`build_catalogue`), which means importing every component, hence torch
(seconds). So that ``list`` stays instant, the built catalogue is kept in the user's cache directory under a
fingerprint of the source files of ``pyro_vae`` and ``inference``: a changed or added component changes the
fingerprint, and the next ``list`` builds the catalogue again. There is no file to regenerate by hand. Components
that a plugin registers are listed by ``pyro-vae list --plugin FILE``, which builds the catalogue afresh.
"""

import hashlib
import importlib.util
import json
import os

PACKAGES = ("pyro_vae", "inference")


def build_catalogue() -> dict:
    """``{"datasets": [...], "components": {path: {name: {"doc", "options"}}}, "defaults": RunConfig tree}``."""
    from pyro_vae.config import RunConfig, describe_components
    from pyro_vae.data import DATASETS

    listing = {"datasets": DATASETS.names(), "components": describe_components(), "defaults": RunConfig().to_dict()}
    return json.loads(json.dumps(listing, default=str))  # the form the cache holds


def package_directories() -> list[str]:
    """Where the packages whose modules register components live (found without importing them)."""
    return [importlib.util.find_spec(name).submodule_search_locations[0] for name in PACKAGES]


def source_fingerprint(directories=None) -> str:
    """A hash of the path and bytes of every ``.py`` file under ``directories`` (the packages by default)."""
    digest = hashlib.sha256()
    for root in directories or package_directories():
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    digest.update(os.path.relpath(path, root).encode() + b"\0")
                    with open(path, "rb") as f:
                        digest.update(f.read() + b"\0")
    return digest.hexdigest()[:20]


def cache_folder() -> str:
    """``$XDG_CACHE_HOME/pyro-vae`` (an absolute ``XDG_CACHE_HOME`` only, as the XDG specification says), else
    ``~/.cache/pyro-vae``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    base = base if os.path.isabs(base) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pyro-vae")


def cache_file(fingerprint: str) -> str:
    return os.path.join(cache_folder(), f"catalogue-{fingerprint}.json")


def read_catalogue() -> dict:
    """The registries' catalogue: from the cache when the sources are unchanged, else built (and cached, in place
    of the catalogues of earlier sources)."""
    path = cache_file(source_fingerprint())
    try:
        with open(path) as f:
            listing = json.load(f)
        if isinstance(listing, dict) and {"datasets", "components", "defaults"} <= set(listing):
            return listing
    except (OSError, ValueError):  # not cached yet, or a damaged cache: build it
        pass
    listing = build_catalogue()
    try:
        from inference.atomic import atomic_write

        os.makedirs(os.path.dirname(path), exist_ok=True)
        text = json.dumps(listing, indent=1) + "\n"
        atomic_write(path, lambda f: f.write(text.encode()))
        for name in os.listdir(cache_folder()):
            if name.startswith("catalogue-") and name.endswith(".json") and name != os.path.basename(path):
                os.remove(os.path.join(cache_folder(), name))
    except OSError:  # a read-only home: list still works, a little slower
        pass
    return listing
