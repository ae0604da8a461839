"""Layers that rearrange data: the legacy ``reshape``/``flatten``/``permute``/``reorganizeData``, the
iOS13 ``transpose``, ``reshape*``, ``rankPreservingReshape``, ``flattenTo2D``, ``squeeze``,
``expandDims``, ``getShape``, ``broadcastTo*``, ``tile``, ``sequenceRepeat``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .common import int_values, norm_axis
from .registry import layer

Fn = Callable[..., torch.Tensor]

CHANNEL_FIRST = 0


def _to_rank5(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() > 5:
        raise ValueError(f"{name} takes a rank-5 [Seq, B, C, H, W] blob, got shape {list(x.shape)}")
    return x.reshape((1,) * (5 - x.dim()) + tuple(x.shape))


@layer("reshape")
def reshape(p: Any, ctx: Any) -> Fn:
    """Legacy rank-5 reshape: target [C, H, W] keeps Seq, [Seq, C, H, W] replaces it; CHANNEL_LAST
    flattens and refills each item in [H, W, C] order."""
    ctx.require(1)
    target = [int(d) for d in p.targetShape]
    if len(target) not in (3, 4):
        raise ctx.error(f"targetShape must have 3 or 4 values, got {target}")
    channel_last = p.mode != CHANNEL_FIRST

    def run(x: torch.Tensor) -> torch.Tensor:
        x = _to_rank5(x, "reshape")
        s, b = x.shape[:2]
        if channel_last:
            x = x.permute(0, 1, 3, 4, 2)
        chw = target[-3:]
        if len(target) == 3:
            y = x.reshape(s, b, -1).reshape(s, b, *([chw[1], chw[2], chw[0]] if channel_last else chw))
        else:
            y = x.transpose(0, 1).reshape(b, -1).reshape(b, target[0], *([chw[1], chw[2], chw[0]] if channel_last
                                                                         else chw)).transpose(0, 1)
        return y.permute(0, 1, 4, 2, 3) if channel_last else y

    return run


@layer("flatten")
def flatten(p: Any, ctx: Any) -> Fn:
    """[..., C, H, W] → [..., C*H*W, 1, 1], in C-major or (CHANNEL_LAST) H-major order."""
    ctx.require(1)
    channel_last = p.mode != CHANNEL_FIRST

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"flatten needs a blob of rank at least 3, got {list(x.shape)}")
        if channel_last:
            x = x.movedim(-3, -1)
        return x.reshape(*x.shape[:-3], -1, 1, 1)

    return run


@layer("permute")
def permute(p: Any, ctx: Any) -> Fn:
    """Permute the [Seq, C, H, W] axes of a rank-5 blob; the batch axis stays in place."""
    ctx.require(1)
    axes = [int(a) for a in p.axis] or [0, 1, 2, 3]
    if sorted(axes) != [0, 1, 2, 3]:
        raise ctx.error(f"axis must be a permutation of [0, 1, 2, 3], got {axes}")
    where = {0: 0, 1: 2, 2: 3, 3: 4}
    order = [where[axes[0]], 1, where[axes[1]], where[axes[2]], where[axes[3]]]
    return lambda x: _to_rank5(x, "permute").permute(order)


_SPACE_TO_DEPTH, _DEPTH_TO_SPACE, _PIXEL_SHUFFLE = 0, 1, 2


@layer("reorganizeData")
def reorganizeData(p: Any, ctx: Any) -> Fn:
    """Space-to-depth, depth-to-space (block-major channels) or pixel shuffle (channel-major) on [..., C, H, W]."""
    ctx.require(1)
    bs = int(p.blockSize)
    mode = int(p.mode)
    if bs < 2 or mode not in (0, 1, 2):
        raise ctx.error(f"needs blockSize > 1 and a known mode, got blockSize {bs}, mode {mode}")

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"reorganizeData needs a blob of rank at least 3, got {list(x.shape)}")
        *lead, c, h, w = x.shape
        x = x.reshape(-1, c, h, w)
        n = x.shape[0]
        if mode == _SPACE_TO_DEPTH:
            y = x.reshape(n, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
            y = y.reshape(n, c * bs * bs, h // bs, w // bs)
        elif mode == _DEPTH_TO_SPACE:
            y = x.reshape(n, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
            y = y.reshape(n, c // (bs * bs), h * bs, w * bs)
        else:
            y = torch.pixel_shuffle(x, bs)
        return y.reshape(*lead, *y.shape[1:])

    return run


@layer("transpose")
def transpose(p: Any, ctx: Any) -> Fn:
    """Permute the axes by ``axes``."""
    ctx.require(1)
    axes = [int(a) for a in p.axes]

    def run(x: torch.Tensor) -> torch.Tensor:
        if sorted(axes) != list(range(x.dim())):
            raise ValueError(f"axes {axes} are not a permutation of the {x.dim()} input axes")
        return x.permute(axes)

    return run


def _reshape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return x.reshape(tuple(shape))


@layer("reshapeStatic")
def reshapeStatic(p: Any, ctx: Any) -> Fn:
    """Reshape to ``targetShape`` (one -1 is inferred)."""
    ctx.require(1)
    target = [int(d) for d in p.targetShape]
    return lambda x: _reshape(x, target)


@layer("reshapeLike")
def reshapeLike(p: Any, ctx: Any) -> Fn:
    """Reshape the first input to the second input's shape."""
    ctx.require(2)
    return lambda x, like: _reshape(x, like.shape)


@layer("reshapeDynamic")
def reshapeDynamic(p: Any, ctx: Any) -> Fn:
    """Reshape the first input to the shape held in the second (one -1 is inferred)."""
    ctx.require(2)
    return lambda x, shape: _reshape(x, int_values(shape))


@layer("rankPreservingReshape")
def rankPreservingReshape(p: Any, ctx: Any) -> Fn:
    """Reshape keeping the rank: 0 keeps the input's size, one -1 is inferred."""
    ctx.require(1)
    target = [int(d) for d in p.targetShape]

    def run(x: torch.Tensor) -> torch.Tensor:
        if len(target) != x.dim():
            raise ValueError(f"targetShape {target} does not have the input's rank {x.dim()}")
        return _reshape(x, [x.shape[i] if d == 0 else d for i, d in enumerate(target)])

    return run


@layer("flattenTo2D")
def flattenTo2D(p: Any, ctx: Any) -> Fn:
    """[prod(shape[:axis]), prod(shape[axis:])]."""
    ctx.require(1)
    axis = int(p.axis)

    def run(x: torch.Tensor) -> torch.Tensor:
        a = axis + x.dim() if axis < 0 else axis
        if not 0 <= a <= x.dim():
            raise ValueError(f"axis {axis} is out of range for rank {x.dim()}")
        return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))

    return run


@layer("squeeze")
def squeeze(p: Any, ctx: Any) -> Fn:
    """Drop the size-1 ``axes`` (or all size-1 axes); the result keeps at least rank 1."""
    ctx.require(1)
    axes = [int(a) for a in p.axes]
    squeeze_all = p.squeezeAll

    def run(x: torch.Tensor) -> torch.Tensor:
        if squeeze_all:
            keep = [d for d in x.shape if d != 1]
        else:
            drop = {norm_axis(a, x.dim()) for a in axes}
            bad = [a for a in drop if x.shape[a] != 1]
            if bad:
                raise ValueError(f"cannot squeeze axis {bad[0]} of size {x.shape[bad[0]]}")
            keep = [d for i, d in enumerate(x.shape) if i not in drop]
        return x.reshape(keep or [1])

    return run


@layer("expandDims")
def expandDims(p: Any, ctx: Any) -> Fn:
    """Insert size-1 axes at ``axes`` (indices into the output)."""
    ctx.require(1)
    axes = [int(a) for a in p.axes]

    def run(x: torch.Tensor) -> torch.Tensor:
        rank = x.dim() + len(axes)
        where = sorted({norm_axis(a, rank) for a in axes})
        shape = list(x.shape)
        for a in where:
            shape.insert(a, 1)
        return x.reshape(shape)

    return run


@layer("getShape")
def getShape(p: Any, ctx: Any) -> Fn:
    """The input's shape as a rank-1 tensor."""
    ctx.require(1)
    dtype, device = ctx.dtype, ctx.device
    return lambda x: torch.tensor(list(x.shape), dtype=dtype, device=device)


@layer("broadcastToLike")
def broadcastToLike(p: Any, ctx: Any) -> Fn:
    """Broadcast the first input to the second input's shape."""
    ctx.require(2)
    return lambda x, like: x.broadcast_to(torch.broadcast_shapes(x.shape, like.shape)).contiguous()


@layer("broadcastToStatic")
def broadcastToStatic(p: Any, ctx: Any) -> Fn:
    """Broadcast to ``targetShape``."""
    ctx.require(1)
    target = tuple(int(d) for d in p.targetShape)
    return lambda x: x.broadcast_to(torch.broadcast_shapes(x.shape, target)).contiguous()


@layer("broadcastToDynamic")
def broadcastToDynamic(p: Any, ctx: Any) -> Fn:
    """Broadcast the first input to the shape held in the second."""
    ctx.require(2)
    return lambda x, shape: x.broadcast_to(torch.broadcast_shapes(x.shape, tuple(int_values(shape)))).contiguous()


@layer("tile")
def tile(p: Any, ctx: Any) -> Fn:
    """Repeat the input ``reps`` times along each axis (reps padded with leading 1s), or by a second input."""
    ctx.require(1, 2)
    reps = [int(r) for r in p.reps]
    if ctx.n_inputs == 1 and not reps:
        raise ctx.error("needs reps (or a second input holding them)")

    def run(x: torch.Tensor, dynamic: torch.Tensor | None = None) -> torch.Tensor:
        r = int_values(dynamic) if dynamic is not None else reps
        return x.repeat(*([1] * (x.dim() - len(r)) + r))

    return run


@layer("sequenceRepeat")
def sequenceRepeat(p: Any, ctx: Any) -> Fn:
    """Repeat the whole blob ``nRepetitions`` times along axis -5 (0 means 1)."""
    ctx.require(1)
    n = int(p.nRepetitions) or 1

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 5:
            raise ValueError(f"sequenceRepeat needs a blob of rank at least 5, got {list(x.shape)}")
        reps = [1] * x.dim()
        reps[-5] = n
        return x.repeat(*reps)

    return run
