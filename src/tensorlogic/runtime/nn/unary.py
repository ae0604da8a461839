"""Element-wise unary layers: ``unary`` (UnaryFunctionLayer), the iOS13 math layers, ``clip``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .registry import layer

Fn = Callable[[torch.Tensor], torch.Tensor]

# UnaryFunctionLayerParams.Operation
_SQRT, _RSQRT, _INVERSE, _POWER, _EXP, _LOG, _ABS, _THRESHOLD = range(8)


@layer("unary")
def unary(p: Any, ctx: Any) -> Fn:
    """``f(scale * x + shift)``; scale 0 means 1 and epsilon 0 means 1e-6, as the spec says. LOG adds epsilon
    too (``log(x + epsilon)``), as coremltools' MIL ``log`` lowering relies on."""
    ctx.require(1)
    scale = p.scale if p.scale != 0 else 1.0
    shift = p.shift
    eps = p.epsilon if p.epsilon != 0 else 1e-6
    alpha = p.alpha
    funcs: dict[int, Fn] = {
        _SQRT: torch.sqrt,
        _RSQRT: lambda x: torch.rsqrt(x + eps),
        _INVERSE: lambda x: 1.0 / (x + eps),
        _POWER: lambda x: torch.pow(x, alpha),
        _EXP: torch.exp,
        _LOG: lambda x: torch.log(x + eps),
        _ABS: torch.abs,
        _THRESHOLD: lambda x: torch.clamp_min(x, alpha),
    }
    f = funcs.get(p.type)
    if f is None:
        raise ctx.error(f"unknown unary function type {p.type}")
    if scale == 1.0 and shift == 0.0:
        return f
    return lambda x: f(x * scale + shift)


def _simple(name: str, fn: Fn, doc: str) -> None:
    def build(p: Any, ctx: Any) -> Fn:
        ctx.require(1)
        return fn

    build.__name__ = name
    build.__doc__ = doc
    layer(name)(build)


for _name, _fn in (
    ("sin", torch.sin), ("cos", torch.cos), ("tan", torch.tan),
    ("asin", torch.asin), ("acos", torch.acos), ("atan", torch.atan),
    ("sinh", torch.sinh), ("cosh", torch.cosh), ("tanh", torch.tanh),
    ("asinh", torch.asinh), ("acosh", torch.acosh), ("atanh", torch.atanh),
    ("erf", torch.erf), ("exp2", torch.exp2),
    ("ceil", torch.ceil), ("floor", torch.floor), ("sign", torch.sign),
):
    _simple(_name, _fn, f"Element-wise {_name}.")

_simple("round", torch.round, "Round to nearest, ties to even (numpy's rule, which the reference tests use).")


@layer("clip")
def clip(p: Any, ctx: Any) -> Fn:
    """``min(max(x, minVal), maxVal)``."""
    ctx.require(1)
    lo, hi = p.minVal, p.maxVal
    return lambda x: x.clamp(lo, hi)
