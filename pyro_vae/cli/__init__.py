"""The ``pyro-vae`` command line."""

from pyro_vae.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
