"""Layers that join, split, pad, crop, slice and mask: ``concat``/``concatND``, ``split``/``splitND``,
``stack``, ``padding``, ``constantPad``, ``crop``, ``slice``/``sliceStatic``/``sliceDynamic``/``sliceBySize``,
``reverse``, ``reverseSeq``, ``slidingWindows``, ``matrixBandPart``, ``lowerTriangular``, ``upperTriangular``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .common import indices, int_values, norm_axis
from .conv import border
from .registry import layer

Fn = Callable[..., Any]


@layer("concat")
def concat(p: Any, ctx: Any) -> Fn:
    """Concatenate along axis -3, or -5 when ``sequenceConcat``."""
    ctx.require(1, 99)
    axis = -5 if p.sequenceConcat else -3

    def run(*xs: torch.Tensor) -> torch.Tensor:
        if any(x.dim() < -axis for x in xs):
            raise ValueError(f"concat along axis {axis} needs blobs of rank at least {-axis}")
        return torch.cat(xs, dim=axis)

    return run


@layer("concatND")
def concatND(p: Any, ctx: Any) -> Fn:
    """Concatenate along ``axis``; ``interleave`` alternates the inputs' slices (equal shapes)."""
    ctx.require(1, 99)
    axis, interleave = int(p.axis), p.interleave

    def run(*xs: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, xs[0].dim())
        if not interleave:
            return torch.cat(xs, dim=a)
        stacked = torch.stack(xs, dim=a + 1)
        return stacked.reshape(*xs[0].shape[:a], -1, *xs[0].shape[a + 1:])

    return run


@layer("split")
def split(p: Any, ctx: Any) -> Fn:
    """Split axis -3 into equal parts, one per output."""
    ctx.require(1, outputs=(1, 99))
    n = int(p.nOutputs) or ctx.n_outputs
    if n != ctx.n_outputs:
        raise ctx.error(f"nOutputs is {n}, the layer lists {ctx.n_outputs} outputs")

    def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dim() < 3 or x.shape[-3] % n:
            raise ValueError(f"cannot split axis -3 of shape {list(x.shape)} into {n} equal parts")
        return tuple(torch.split(x, x.shape[-3] // n, dim=-3))

    return run


@layer("splitND")
def splitND(p: Any, ctx: Any) -> Fn:
    """Split along ``axis`` by ``splitSizes``, or into ``numSplits`` parts, the first ones one larger when the
    size does not divide (numpy's ``array_split``)."""
    ctx.require(1, outputs=(1, 99))
    axis = int(p.axis)
    sizes = [int(s) for s in p.splitSizes]
    n = len(sizes) or int(p.numSplits) or ctx.n_outputs
    if n != ctx.n_outputs:
        raise ctx.error(f"splits into {n} parts, the layer lists {ctx.n_outputs} outputs")

    def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = norm_axis(axis, x.dim())
        if sizes:
            if sum(sizes) != x.shape[a]:
                raise ValueError(f"split sizes {sizes} do not add up to axis {axis} of size {x.shape[a]}")
            return tuple(torch.split(x, sizes, dim=a))
        size, extra = divmod(x.shape[a], n)
        if not size:
            raise ValueError(f"cannot split axis {axis} of size {x.shape[a]} into {n} parts")
        return tuple(torch.split(x, [size + (i < extra) for i in range(n)], dim=a))

    return run


@layer("stack")
def stack(p: Any, ctx: Any) -> Fn:
    """Stack equally shaped inputs along a new ``axis``."""
    ctx.require(1, 99)
    axis = int(p.axis)
    return lambda *xs: torch.stack(xs, dim=norm_axis(axis, xs[0].dim() + 1))


@layer("padding")
def padding(p: Any, ctx: Any) -> Fn:
    """Pad the last two axes with a constant, by reflection, or by replication."""
    ctx.require(1)
    top, bottom, left, right = border(p.paddingAmounts)
    kind = p.WhichOneof("PaddingType") or "constant"
    value = p.constant.value

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"padding needs a blob of rank at least 2, got {list(x.shape)}")
        if kind == "constant":
            return F.pad(x, (left, right, top, bottom), value=value)
        mode = "reflect" if kind == "reflection" else "replicate"
        flat = x.reshape(-1, *x.shape[-2:])
        y = F.pad(flat, (left, right, top, bottom), mode=mode)
        return y.reshape(*x.shape[:-2], *y.shape[-2:])

    return run


@layer("constantPad")
def constantPad(p: Any, ctx: Any) -> Fn:
    """Pad every axis with ``value`` by (before, after) amounts, from the layer or a second input;
    ``padToGivenOutputSizeMode`` reads the non-zero amount of each axis as its output size."""
    ctx.require(1, 2)
    amounts = [int(a) for a in p.padAmounts]
    to_size, value = p.padToGivenOutputSizeMode, p.value

    def run(x: torch.Tensor, dynamic: torch.Tensor | None = None) -> torch.Tensor:
        pads = int_values(dynamic) if dynamic is not None else amounts
        if len(pads) != 2 * x.dim():
            raise ValueError(f"{len(pads)} pad amounts for a rank-{x.dim()} input (need {2 * x.dim()})")
        pairs = [(pads[2 * i], pads[2 * i + 1]) for i in range(x.dim())]
        if to_size:
            pairs = [(max(0, a - n) if a else 0, max(0, b - n) if b else 0) for (a, b), n in zip(pairs, x.shape)]
        return F.pad(x, [v for pair in reversed(pairs) for v in pair], value=value)

    return run


@layer("crop")
def crop(p: Any, ctx: Any) -> Fn:
    """Crop the last two axes by border amounts, or (two inputs) to the second input's [H, W] at ``offset``."""
    ctx.require(1, 2)
    top, bottom, left, right = border(p.cropAmounts)
    offset = [int(o) for o in p.offset] or [0, 0]

    def run(x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        if like is None:
            if top + bottom > h or left + right > w:
                raise ValueError(f"crop amounts exceed the input's [H, W] = [{h}, {w}]")
            return x[..., top:h - bottom, left:w - right]
        th, tw = like.shape[-2:]
        if offset[0] + th > h or offset[1] + tw > w:
            raise ValueError(f"cropping [{th}, {tw}] at offset {offset} exceeds the input's [H, W] = [{h}, {w}]")
        return x[..., offset[0]:offset[0] + th, offset[1]:offset[1] + tw]

    return run


def _take(x: torch.Tensor, axis: int, start: int | None, stop: int | None, step: int) -> torch.Tensor:
    """``x[..., start:stop:step, ...]`` along ``axis`` with Python's rules, negative steps included."""
    if step == 0:
        raise ValueError("slice stride must not be 0")
    idx = range(*slice(start, stop, step).indices(x.shape[axis]))
    if step > 0 and len(idx):
        span = x.narrow(axis, idx.start, idx[-1] - idx.start + 1)
        return span[(slice(None),) * axis + (slice(None, None, step),)] if step > 1 else span
    return x.index_select(axis, torch.tensor(list(idx), dtype=torch.long, device=x.device))


_AXES = {0: -3, 1: -2, 2: -1}


@layer("slice")
def slice_(p: Any, ctx: Any) -> Fn:
    """``x[start:end:stride]`` along axis -3, -2 or -1 (negative indices count from the end)."""
    ctx.require(1)
    axis = _AXES.get(int(p.axis))
    if axis is None:
        raise ctx.error(f"unknown slice axis {p.axis}")
    start, end, stride = int(p.startIndex), int(p.endIndex), int(p.stride) or 1

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < -axis:
            raise ValueError(f"slicing axis {axis} needs a blob of rank at least {-axis}, got {list(x.shape)}")
        return _take(x, x.dim() + axis, start, end, stride)

    return run


def strided_slice(x: torch.Tensor, begin: Sequence[int], end: Sequence[int], strides: Sequence[int],
                  begin_mask: Sequence[bool], end_mask: Sequence[bool], squeeze: Sequence[bool]) -> torch.Tensor:
    """Slice every axis; masked begins/ends run to the edge, squeezed axes keep only ``begin``."""
    r = x.dim()
    for name, v in (("begin", begin), ("end", end), ("strides", strides)):
        if len(v) != r:
            raise ValueError(f"{name} has {len(v)} values for a rank-{r} input")
    begin_mask = list(begin_mask) or [False] * r
    end_mask = list(end_mask) or [False] * r
    squeeze = list(squeeze) or [False] * r
    drop = []
    for a in range(r):
        if squeeze[a]:
            i = begin[a] + x.shape[a] if begin[a] < 0 else begin[a]
            x = x.narrow(a, i, 1)
            drop.append(a)
            continue
        x = _take(x, a, None if begin_mask[a] else begin[a], None if end_mask[a] else end[a], strides[a] or 1)
    if drop:
        keep = [d for i, d in enumerate(x.shape) if i not in drop]
        x = x.reshape(keep or [1])
    return x


@layer("sliceStatic")
def sliceStatic(p: Any, ctx: Any) -> Fn:
    """Strided slice of every axis (numpy rules, negative strides allowed; masks and squeezes per axis)."""
    ctx.require(1)
    args = ([int(v) for v in p.beginIds], [int(v) for v in p.endIds], [int(v) for v in p.strides],
            list(p.beginMasks), list(p.endMasks), list(p.squeezeMasks))
    return lambda x: strided_slice(x, *args)


@layer("sliceDynamic")
def sliceDynamic(p: Any, ctx: Any) -> Fn:
    """Strided slice whose begins (and optionally ends, strides, masks) come as inputs 2 to 7."""
    ctx.require(2, 7)
    static = [[int(v) for v in p.endIds], [int(v) for v in p.strides], list(p.beginMasks), list(p.endMasks),
              list(p.squeezeMasks)]

    def run(x: torch.Tensor, begin: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        given = [int_values(t) for t in rest[:2]] + [[bool(v) for v in int_values(t)] for t in rest[2:]]
        # coremltools' builder writes 5-entry default strides and masks whatever the rank: use the leading ones.
        args = given + [list(v[: x.dim()]) for v in static[len(given):]]
        if not args[0]:
            args[0] = [0] * x.dim()
            args[3] = [True] * x.dim()
        if not args[1]:
            args[1] = [1] * x.dim()
        return strided_slice(x, int_values(begin), *args)

    return run


@layer("sliceBySize")
def sliceBySize(p: Any, ctx: Any) -> Fn:
    """``size`` elements of ``axis`` from the begin index held in the second input."""
    ctx.require(2)
    axis, size = int(p.axis), int(p.size)

    def run(x: torch.Tensor, begin: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, x.dim())
        b = int_values(begin)[0]
        b = b + x.shape[a] if b < 0 else b
        n = x.shape[a] - b if size < 0 else size
        if b < 0 or b + n > x.shape[a]:
            raise ValueError(f"slice [{b}, {b + n}) is outside axis {axis} of size {x.shape[a]}")
        return x.narrow(a, b, n)

    return run


@layer("reverse")
def reverse(p: Any, ctx: Any) -> Fn:
    """Flip the axes whose ``reverseDim`` entry is true."""
    ctx.require(1)
    flags = list(p.reverseDim)

    def run(x: torch.Tensor) -> torch.Tensor:
        if len(flags) != x.dim():
            raise ValueError(f"reverseDim has {len(flags)} entries for a rank-{x.dim()} input")
        dims = [i for i, f in enumerate(flags) if f]
        return torch.flip(x, dims) if dims else x

    return run


@layer("reverseSeq")
def reverseSeq(p: Any, ctx: Any) -> Fn:
    """Reverse the first ``lengths[b]`` entries along ``sequenceAxis`` of each batch item ``b``."""
    ctx.require(2)
    batch_axis, seq_axis = int(p.batchAxis), int(p.sequenceAxis)

    def run(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, s = norm_axis(batch_axis, x.dim()), norm_axis(seq_axis, x.dim())
        n = indices(lengths.reshape(-1)).clamp(0, x.shape[s])
        t = torch.arange(x.shape[s], device=x.device)
        src = torch.where(t < n[:, None], n[:, None] - 1 - t, t)  # [B, T]
        shape = [1] * x.dim()
        shape[b], shape[s] = src.shape[0], src.shape[1]
        view = src.reshape(shape) if b < s else src.t().reshape(shape)
        return torch.gather(x, s, view.expand(x.shape))

    return run


@layer("slidingWindows")
def slidingWindows(p: Any, ctx: Any) -> Fn:
    """Windows of ``windowSize`` every ``step`` along ``axis``: [..., L, ...] → [..., M, W, ...]."""
    ctx.require(1)
    axis, size, step = int(p.axis), int(p.windowSize), int(p.step) or 1

    def run(x: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, x.dim())
        return x.unfold(a, size, step).movedim(-1, a + 1)

    return run


@layer("matrixBandPart")
def matrixBandPart(p: Any, ctx: Any) -> Fn:
    """Zero everything outside the band ``numLower`` below and ``numUpper`` above the diagonal (negative: all)."""
    ctx.require(1)
    lower, upper = int(p.numLower), int(p.numUpper)

    def run(x: torch.Tensor) -> torch.Tensor:
        m, n = x.shape[-2:]
        i = torch.arange(m, device=x.device)[:, None]
        j = torch.arange(n, device=x.device)[None, :]
        keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
        return torch.where(keep, x, torch.zeros_like(x))

    return run


@layer("lowerTriangular")
def lowerTriangular(p: Any, ctx: Any) -> Fn:
    """Zero the elements above diagonal ``k`` of the last two axes."""
    ctx.require(1)
    k = int(p.k)
    return lambda x: torch.tril(x, k)


@layer("upperTriangular")
def upperTriangular(p: Any, ctx: Any) -> Fn:
    """Zero the elements below diagonal ``k`` of the last two axes."""
    ctx.require(1)
    k = int(p.k)
    return lambda x: torch.triu(x, k)
