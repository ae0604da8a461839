"""Element-wise layers over several inputs: the legacy add/multiply/average/max/min, the iOS13
broadcastable arithmetic, comparisons, logical layers, ``whereBroadcastable``, ``dot``, ``bias``, ``scale``.

Comparison and logical results are 1.0 / 0.0 in the network's float dtype, as the spec defines them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .common import as_float, truth
from .registry import layer

Fn = Callable[..., torch.Tensor]


def _fold(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Fn:
    return lambda *xs: functools.reduce(op, xs)


@layer("add")
def add(p: Any, ctx: Any) -> Fn:
    """Sum of the inputs (broadcast), or ``x + alpha`` for one input."""
    ctx.require(1, 99)
    if ctx.n_inputs == 1:
        alpha = p.alpha
        return lambda x: x + alpha
    return _fold(torch.add)


@layer("multiply")
def multiply(p: Any, ctx: Any) -> Fn:
    """Product of the inputs (broadcast), or ``alpha * x`` for one input."""
    ctx.require(1, 99)
    if ctx.n_inputs == 1:
        alpha = p.alpha
        return lambda x: x * alpha
    return _fold(torch.mul)


@layer("average")
def average(p: Any, ctx: Any) -> Fn:
    """Mean of the inputs (broadcast)."""
    ctx.require(1, 99)
    n = ctx.n_inputs
    return lambda *xs: functools.reduce(torch.add, xs) / n


@layer("max")
def max_(p: Any, ctx: Any) -> Fn:
    """Element-wise maximum of the inputs (broadcast)."""
    ctx.require(1, 99)
    return _fold(torch.maximum)


@layer("min")
def min_(p: Any, ctx: Any) -> Fn:
    """Element-wise minimum of the inputs (broadcast)."""
    ctx.require(1, 99)
    return _fold(torch.minimum)


def _binary(name: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], doc: str, n: int = 2) -> None:
    def build(p: Any, ctx: Any) -> Fn:
        ctx.require(n, 99 if n == 2 and name in _VARIADIC else n)
        return _fold(fn) if name in _VARIADIC else fn

    build.__name__ = name
    build.__doc__ = doc
    layer(name)(build)


# Core ML lets these broadcastable layers take more than two inputs and folds them left to right.
_VARIADIC = {"addBroadcastable", "multiplyBroadcastable", "maxBroadcastable", "minBroadcastable"}

for _name, _fn, _doc in (
    ("addBroadcastable", torch.add, "a + b (numpy broadcasting)."),
    ("subtractBroadcastable", torch.sub, "a - b (numpy broadcasting)."),
    ("multiplyBroadcastable", torch.mul, "a * b (numpy broadcasting)."),
    ("divideBroadcastable", torch.div, "a / b (numpy broadcasting)."),
    ("maxBroadcastable", torch.maximum, "max(a, b) (numpy broadcasting)."),
    ("minBroadcastable", torch.minimum, "min(a, b) (numpy broadcasting)."),
    ("powBroadcastable", torch.pow, "a ** b (numpy broadcasting)."),
    ("modBroadcastable", torch.remainder, "a mod b with the sign of b, as numpy's mod (numpy broadcasting)."),
    ("floorDivBroadcastable", lambda a, b: torch.floor(a / b), "floor(a / b) (numpy broadcasting)."),
):
    _binary(_name, _fn, _doc)


def _compare(name: str, fn: Callable[[torch.Tensor, Any], torch.Tensor]) -> None:
    def build(p: Any, ctx: Any) -> Fn:
        ctx.require(1, 2)
        if ctx.n_inputs == 1:
            alpha = p.alpha
            return lambda x: as_float(fn(x, alpha), x)
        return lambda a, b: as_float(fn(a, b), a)

    build.__name__ = name
    build.__doc__ = f"1.0 where {name}(a, b) holds, else 0.0; one input compares with alpha."
    layer(name)(build)


for _name, _fn in (
    ("equal", torch.eq), ("notEqual", torch.ne), ("lessThan", torch.lt), ("lessEqual", torch.le),
    ("greaterThan", torch.gt), ("greaterEqual", torch.ge),
):
    _compare(_name, _fn)


def _logical(name: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    def build(p: Any, ctx: Any) -> Fn:
        ctx.require(2)
        return lambda a, b: as_float(fn(truth(a), truth(b)), a)

    build.__name__ = name
    build.__doc__ = f"{name} of the inputs' truth (non-zero), as 1.0 / 0.0."
    layer(name)(build)


for _name, _fn in (
    ("logicalAnd", torch.logical_and), ("logicalOr", torch.logical_or), ("logicalXor", torch.logical_xor),
):
    _logical(_name, _fn)


@layer("logicalNot")
def logicalNot(p: Any, ctx: Any) -> Fn:
    """1.0 where the input is zero, else 0.0."""
    ctx.require(1)
    return lambda x: as_float(x == 0, x)


@layer("whereBroadcastable")
def whereBroadcastable(p: Any, ctx: Any) -> Fn:
    """``x`` where the condition is non-zero, else ``y`` (all three broadcast)."""
    ctx.require(3)
    return lambda cond, x, y: torch.where(truth(cond), x, y)


@layer("dot")
def dot(p: Any, ctx: Any) -> Fn:
    """Dot product over axis -3 of two [..., C, 1, 1] blobs; cosine similarity when asked."""
    ctx.require(2)
    cosine = p.cosineSimilarity

    def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.dim() < 3:
            raise ValueError(f"dot needs blobs of rank at least 3, got {list(a.shape)}")
        va, vb = a.flatten(-3), b.flatten(-3)
        if cosine:
            va, vb = F.normalize(va, dim=-1, eps=1e-12), F.normalize(vb, dim=-1, eps=1e-12)
        return (va * vb).sum(-1).reshape(*va.shape[:-1], 1, 1, 1)

    return run


def _shaped(ctx: Any, wp: Any, shape: list[int], what: str) -> torch.Tensor:
    """A bias or scale of shape [1], [C], [1, H, W] or [C, H, W], shaped to broadcast over [..., C, H, W]."""
    dims = [int(d) for d in shape] or [1]
    if len(dims) not in (1, 3):
        raise ctx.error(f"{what} shape {dims} must be [1], [C], [1, H, W] or [C, H, W]")
    t = ctx.weight(wp, int(torch.tensor(dims).prod()), what)
    return t.reshape(()) if dims == [1] else t.reshape(dims[0], 1, 1) if len(dims) == 1 else t.reshape(dims)


@layer("bias")
def bias(p: Any, ctx: Any) -> Fn:
    """``x + b`` with b of shape [1], [C], [1, H, W] or [C, H, W]."""
    ctx.require(1)
    b = _shaped(ctx, p.bias, list(p.shape), "bias")
    return lambda x: x + b


@layer("scale")
def scale(p: Any, ctx: Any) -> Fn:
    """``x * s (+ b)`` with s and b each of shape [1], [C], [1, H, W] or [C, H, W]."""
    ctx.require(1)
    s = _shaped(ctx, p.scale, list(p.shapeScale), "scale")
    if not p.hasBias:
        return lambda x: x * s
    b = _shaped(ctx, p.bias, list(p.shapeBias), "bias")
    return lambda x: x * s + b
