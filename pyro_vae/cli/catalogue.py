"""The catalogue that ``pyro-vae list`` prints: every built-in component with its options, and the defaults.

Building it means importing every component, hence torch (seconds); ``list`` instead reads ``catalogue.json``
beside this module, which is generated from the registries (``python -m pyro_vae.cli.catalogue`` rewrites it) and
checked against them by the test suite, so it cannot fall behind them unnoticed. Components that a plugin registers
are listed by the configuration that loads the plugin, not here.
"""

import json
import os

CATALOGUE_FILE = os.path.join(os.path.dirname(__file__), "catalogue.json")


def build_catalogue() -> dict:
    """``{"datasets": [...], "components": {path: {name: {"doc", "options"}}}, "defaults": RunConfig tree}``."""
    from pyro_vae.config import RunConfig, describe_components
    from pyro_vae.data import DATASETS

    listing = {"datasets": DATASETS.names(), "components": describe_components(), "defaults": RunConfig().to_dict()}
    return json.loads(json.dumps(listing, default=str))  # the form the file holds


def read_catalogue() -> dict:
    """The catalogue as written in ``catalogue.json``."""
    with open(CATALOGUE_FILE) as f:
        return json.load(f)


def write_catalogue() -> None:
    from inference.atomic import atomic_write

    text = json.dumps(build_catalogue(), indent=1) + "\n"
    atomic_write(CATALOGUE_FILE, lambda f: f.write(text.encode()))


if __name__ == "__main__":
    write_catalogue()
    print(f"wrote {CATALOGUE_FILE}")
