"""Choosing components by name: one table per kind, shared by the Python API and the command line.

Modelled on ``torchvision.models._api``: a module-level table, a ``register(name)`` decorator, ``build(name,
**config)`` and ``names()``. Adding a component is writing its class and one decorator line::

    PRIORS = Registry("prior")

    @PRIORS.register("normal")
    class StandardNormalPrior(PyroModule): ...

    prior = PRIORS.build("normal", latent_dim=10)
"""

import difflib
import os
from typing import Callable, Dict, Optional


def _same_definition(a, b) -> bool:
    """Whether two builders are one definition run twice (a file imported under two module names)."""
    location = _source_location(a)
    return location is not None and a.__qualname__ == b.__qualname__ and location == _source_location(b)


def _source_location(builder):
    """``(file, first line)`` of the code defining ``builder``: a function's own, or a class's first method's."""
    if hasattr(builder, "__code__"):
        code = builder.__code__
    else:
        methods = [v for v in vars(builder).values() if hasattr(v, "__code__")] if isinstance(builder, type) else []
        if not methods:
            return None
        code = methods[0].__code__
    return os.path.realpath(code.co_filename), code.co_firstlineno


class Registry:
    """A named table of builders (classes or functions) of one kind of component."""

    def __init__(self, kind: str, base: Optional[type] = None):
        self.kind = kind
        #: The class every registered class subclasses: where the kind's capabilities are declared.
        self.base = base
        self._builders: Dict[str, Callable] = {}

    def register(self, name: str):
        """Decorator adding a builder under ``name``; a name may be registered once."""

        def decorator(builder):
            if self.base is not None and not (isinstance(builder, type) and issubclass(builder, self.base)):
                base = f"{self.base.__module__}.{self.base.__qualname__}"
                raise TypeError(
                    f"{self.kind} '{name}' ({builder.__qualname__}) must be a class that subclasses {base}, which "
                    f"declares what a {self.kind} provides: write `class {builder.__name__}({self.base.__name__})` "
                    f"with `from {self.base.__module__} import {self.base.__name__}`"
                )
            if name in self._builders and not _same_definition(self._builders[name], builder):
                raise ValueError(f"{self.kind} '{name}' is already registered to {self._builders[name]!r}")
            self._builders[name] = builder
            return builder

        return decorator

    def get(self, name: str) -> Callable:
        try:
            return self._builders[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._builders, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown {self.kind} '{name}'.{hint} Choose one of: {', '.join(self.names())}.") from None

    def build(self, name: str, **config):
        """Build the component registered under ``name`` with keyword ``config``."""
        return self.get(name)(**config)

    def names(self):
        return sorted(self._builders)

    def __contains__(self, name):
        return name in self._builders

    def __repr__(self):
        return f"Registry({self.kind!r}, {self.names()})"
