"""Layers that make tensors: ``loadConstant``/``loadConstantND``, ``fill*``, ``range*``, the random
distributions and ``categoricalDistribution``.

Random layers draw from torch's generator seeded with the layer's seed at every run (so a model gives
the same numbers each time, like Core ML), not from Core ML's own generator: the values differ from
Core ML's, the distributions do not. A negative seed draws from torch's global generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .common import int_values
from .registry import layer

Fn = Callable[..., torch.Tensor]

# A static shape comes from the spec alone: refuse absurd ones before allocating.
MAX_ELEMENTS = 1 << 31


def _static_shape(ctx: Any, dims: Any, what: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in dims)
    if math.prod(shape) > MAX_ELEMENTS:
        raise ctx.error(f"{what} {list(shape)} has more than {MAX_ELEMENTS} elements")
    return shape


@layer("loadConstant")
def loadConstant(p: Any, ctx: Any) -> Fn:
    """The stored [C, H, W] data as a rank-5 [1, 1, C, H, W] blob."""
    ctx.require(0)
    shape = [int(d) for d in p.shape]
    if len(shape) != 3:
        raise ctx.error(f"shape must be [C, H, W], got {shape}")
    value = ctx.weight(p.data, None, "data", tuple(shape)).reshape(1, 1, *shape)
    return lambda: value


@layer("loadConstantND")
def loadConstantND(p: Any, ctx: Any) -> Fn:
    """The stored data in ``shape``."""
    ctx.require(0)
    shape = tuple(int(d) for d in p.shape)
    value = ctx.weight(p.data, None, "data", shape)
    return lambda: value


@layer("fillLike")
def fillLike(p: Any, ctx: Any) -> Fn:
    """``value`` in the input's shape."""
    ctx.require(1)
    value = p.value
    return lambda x: torch.full(x.shape, value, dtype=ctx.dtype, device=x.device)


@layer("fillStatic")
def fillStatic(p: Any, ctx: Any) -> Fn:
    """``value`` in ``targetShape``."""
    ctx.require(0)
    out = torch.full(_static_shape(ctx, p.targetShape, "targetShape"), p.value, dtype=ctx.dtype, device=ctx.device)
    return lambda: out


@layer("fillDynamic")
def fillDynamic(p: Any, ctx: Any) -> Fn:
    """``value`` in the shape held in the input."""
    ctx.require(1)
    value = p.value
    return lambda shape: torch.full(tuple(int_values(shape)), value, dtype=ctx.dtype, device=ctx.device)


def _arange(start: float, end: float, step: float, ctx: Any) -> torch.Tensor:
    if step == 0:
        raise ValueError("range step must not be 0")
    n = max(0, math.ceil((end - start) / step))
    if n > MAX_ELEMENTS:
        raise ValueError(f"range({start:g}, {end:g}, {step:g}) has more than {MAX_ELEMENTS} elements")
    return (start + step * torch.arange(n, dtype=torch.float64, device=ctx.device)).to(ctx.dtype)


@layer("rangeStatic")
def rangeStatic(p: Any, ctx: Any) -> Fn:
    """``arange(startValue, endValue, stepSizeValue)``."""
    ctx.require(0)
    out = _arange(p.startValue, p.endValue, p.stepSizeValue, ctx)
    return lambda: out


@layer("rangeDynamic")
def rangeDynamic(p: Any, ctx: Any) -> Fn:
    """``arange(start, end, step)``: end from input 1, start and step from inputs 2 and 3 or the layer."""
    ctx.require(1, 3)
    start, step = p.startValue, p.stepSizeValue

    def run(end: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        vals = [float(t.reshape(-1)[0]) for t in rest]
        return _arange(vals[0] if vals else start, float(end.reshape(-1)[0]), vals[1] if len(vals) > 1 else step,
                       ctx)

    return run


def _generator(seed: int, device: torch.device) -> torch.Generator | None:
    if seed < 0:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


def _draw(kind: str, p: Any, shape: tuple[int, ...], ctx: Any) -> torch.Tensor:
    gen = _generator(int(p.seed), ctx.device)
    if kind == "Normal":
        out = torch.randn(shape, generator=gen, device=ctx.device) * p.stdDev + p.mean
    elif kind == "Uniform":
        out = torch.rand(shape, generator=gen, device=ctx.device) * (p.maxVal - p.minVal) + p.minVal
    else:
        out = (torch.rand(shape, generator=gen, device=ctx.device) < p.prob).float()
    return out.to(ctx.dtype)


def _random(kind: str) -> None:
    def like(p: Any, ctx: Any) -> Fn:
        ctx.require(1)
        return lambda x: _draw(kind, p, tuple(x.shape), ctx)

    def static(p: Any, ctx: Any) -> Fn:
        ctx.require(0)
        shape = _static_shape(ctx, p.outputShape, "outputShape")
        return lambda: _draw(kind, p, shape, ctx)

    def dynamic(p: Any, ctx: Any) -> Fn:
        ctx.require(1)
        return lambda shape: _draw(kind, p, tuple(int_values(shape)), ctx)

    for suffix, build, where in (("Like", like, "the input's shape"), ("Static", static, "outputShape"),
                                 ("Dynamic", dynamic, "the shape held in the input")):
        name = f"random{kind}{suffix}"
        build.__name__ = name
        build.__doc__ = f"{kind} random values in {where}."
        layer(name)(build)


for _kind in ("Normal", "Uniform", "Bernoulli"):
    _random(_kind)


@layer("categoricalDistribution")
def categoricalDistribution(p: Any, ctx: Any) -> Fn:
    """``numSamples`` class indices per row of the last axis, drawn from probabilities or
    ``softmax(logits / temperature)``."""
    ctx.require(1)
    n, logits = int(p.numSamples), p.isLogits
    temperature = p.temperature if p.temperature != 0 else 1.0

    def run(x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).float()
        probs = torch.softmax(rows / temperature, dim=-1) if logits else rows
        picks = torch.multinomial(probs, n, replacement=True, generator=_generator(int(p.seed), x.device))
        return picks.to(ctx.dtype).reshape(*x.shape[:-1], n)

    return run
