"""The op registry: MIL op name → plain torch function, shared by the interpreter and the compiled path.

An op is registered under its exact spec name::

    @op("conv", params={"strides": "ints", "pad_type": "str", "pad": "ints", "dilations": "ints",
                        "groups": "int"})
    def conv(x, weight, bias=None, *, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
        ...

The interpreter calls every op by keyword, with the spec's input names. Inputs named in ``params``
arrive as plain Python values, converted once at load time when they are consts (see ``PARAM_KINDS``);
every other input arrives as a ``torch.Tensor`` (or a tuple of tensors for variadic inputs such as
``concat``'s ``values``). Unbound optional inputs are not passed, so the function's defaults apply.
Ops with several outputs return a tuple. Ops never see the IR or the interpreter.

Semantics that change between opsets are registered again with ``since``: ``get("resize", "CoreML7")``
returns the newest registration whose ``since`` is not newer than the function's opset.
Registering the same (name, since) twice fails at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnsupportedError

# How a param input is turned into a Python value:
#   int, float, bool, str      -> scalar of that type
#   ints, floats, bools, strs  -> tuple (from a tensor of rank ≥ 0)
#   dtype                      -> torch.dtype, after the precision policy (fp16 may compute as fp32)
#   mil_dtype                  -> the MIL dtype name as given ("fp16", "int32", ...)
#   value                      -> numpy array / Python scalar, untouched
PARAM_KINDS = frozenset(
    {"int", "float", "bool", "str", "ints", "floats", "bools", "strs", "dtype", "mil_dtype", "value"}
)

# Opset names in order; "CoreML5" is iOS15.
OPSETS = ("CoreML3", "CoreML4", "CoreML5", "CoreML6", "CoreML7", "CoreML8", "CoreML9")
_IOS = {"iOS13": "CoreML3", "iOS14": "CoreML4", "iOS15": "CoreML5", "iOS16": "CoreML6",
        "iOS17": "CoreML7", "iOS18": "CoreML8", "iOS26": "CoreML9"}


def opset_rank(opset: str) -> int:
    """Position of an opset ("CoreML7" or "iOS17") in release order."""
    name = _IOS.get(opset, opset)
    if name not in OPSETS:
        raise UnsupportedError(f"unknown MIL opset {opset!r} (known: {', '.join(OPSETS)})")
    return OPSETS.index(name)


@dataclass(frozen=True)
class OpDef:
    name: str
    fn: Callable[..., Any]
    params: dict[str, str] = field(default_factory=dict)
    since: str = "CoreML3"
    family: str = ""


_REGISTRY: dict[str, list[OpDef]] = {}


def op(name: str, *, params: dict[str, str] | None = None, since: str = "iOS13") -> Callable:
    """Register ``fn`` as the implementation of MIL op ``name`` from opset ``since`` on."""
    params = dict(params or {})
    bad = {k: v for k, v in params.items() if v not in PARAM_KINDS}
    if bad:
        raise ValueError(f"op {name}: unknown param kinds {bad}")
    since_name = _IOS.get(since, since)
    opset_rank(since_name)

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        family = fn.__module__.rsplit(".", 1)[-1]
        defs = _REGISTRY.setdefault(name, [])
        for d in defs:
            if d.since == since_name:
                raise RuntimeError(f"op {name!r} (since {since_name}) registered twice: {d.family} and {family}")
        defs.append(OpDef(name, fn, params, since_name, family))
        defs.sort(key=lambda d: opset_rank(d.since))
        return fn

    return register


def _load_families() -> None:
    # Importing the families fills the registry; done once, on first lookup.
    from . import ops  # noqa: F401


def get(name: str, opset: str = "CoreML9") -> OpDef:
    """The implementation of ``name`` valid in ``opset``, or UnsupportedError naming both."""
    _load_families()
    defs = _REGISTRY.get(name)
    rank = opset_rank(opset)
    if defs:
        usable = [d for d in defs if opset_rank(d.since) <= rank]
        if usable:
            return usable[-1]
    raise UnsupportedError(f"MIL op {name!r} (opset {opset}) is not supported by TensorLogic")


def names() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)
