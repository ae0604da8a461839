"""The builtin registry: every builtin function of the language, one family per module.

``@builtin`` registers a function under its script name (the Python name without a trailing underscore
unless ``name`` says otherwise). ``ctx=True``: the function receives the run's ``Context`` first.
``method=True``: it is also a method of tensors (``x.sum()`` is ``sum(x)``). Every module in this package
is imported once, so a builtin is found by ``grep -rn 'def NAME' src/tensorlogic/lang/builtins``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from ..values import Builtin

BUILTINS: dict[str, Builtin] = {}


def builtin(name: str | None = None, *, ctx: bool = False, method: bool = False) -> Callable:
    """Register a builtin under ``name`` (default: the function name without a trailing underscore)."""

    def register(fn: Callable) -> Callable:
        key = name or fn.__name__.rstrip("_")
        if key in BUILTINS:
            raise RuntimeError(f"builtin {key!r} registered twice")
        BUILTINS[key] = Builtin(key, fn, ctx, method)
        return fn

    return register


def _load_families() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_load_families()
