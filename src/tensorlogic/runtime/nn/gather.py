"""Index-driven layers: ``gather``/``scatter`` (and their ND and along-axis forms), ``whereNonZero``,
``oneHot``, ``NonMaximumSuppression``. Indices arrive as float values and negative indices count from
the end, as the spec allows."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .common import indices, int_values, norm_axis
from .registry import layer

Fn = Callable[..., Any]

# ScatterMode
_UPDATE, _ADD, _SUB, _MUL, _DIV, _MAX, _MIN = range(7)
_REDUCE = {_MUL: "prod", _DIV: "prod", _MAX: "amax", _MIN: "amin"}


def _wrap(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Negative indices from the end; anything still out of range is an error, not a crash."""
    idx = torch.where(idx < 0, idx + n, idx)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"an index is out of range for an axis of size {n}")
    return idx


def _check_mode(ctx: Any, mode: int) -> int:
    if not 0 <= mode <= _MIN:
        raise ctx.error(f"unknown scatter mode {mode}")
    return mode


def _scatter_rows(c: torch.Tensor, idx: torch.Tensor, u: torch.Tensor, mode: int) -> torch.Tensor:
    """Combine rows ``u[i]`` into rows ``idx[i]`` of ``c`` (axis 0) by the scatter mode."""
    out = c.clone()
    if mode == _UPDATE:
        out[idx] = u
    elif mode in (_ADD, _SUB):
        out.index_add_(0, idx, -u if mode == _SUB else u)
    else:
        out.index_reduce_(0, idx, 1.0 / u if mode == _DIV else u, _REDUCE[mode], include_self=True)
    return out


@layer("gather")
def gather(p: Any, ctx: Any) -> Fn:
    """``take`` along ``axis``: output shape data.shape[:axis] + indices.shape + data.shape[axis+1:]."""
    ctx.require(2)
    axis = int(p.axis)

    def run(data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, data.dim())
        i = _wrap(indices(idx), data.shape[a])
        out = data.index_select(a, i.reshape(-1))
        return out.reshape(*data.shape[:a], *i.shape, *data.shape[a + 1:])

    return run


@layer("scatter")
def scatter(p: Any, ctx: Any) -> Fn:
    """Inverse of gather: rows of ``updates`` combined into ``container`` at ``indices`` along ``axis``."""
    ctx.require(3)
    axis, mode = int(p.axis), _check_mode(ctx, int(p.mode))

    def run(c: torch.Tensor, idx: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, c.dim())
        i = _wrap(indices(idx), c.shape[a]).reshape(-1)
        k = idx.dim()
        rows = u.movedim(tuple(range(a, a + k)), tuple(range(k)))
        rows = rows.reshape(i.numel(), *c.shape[:a], *c.shape[a + 1:])
        return _scatter_rows(c.movedim(a, 0), i, rows, mode).movedim(0, a)

    return run


@layer("gatherAlongAxis")
def gatherAlongAxis(p: Any, ctx: Any) -> Fn:
    """``take_along_axis``: output[..., i, ...] = data[..., indices[..., i, ...], ...]."""
    ctx.require(2)
    axis = int(p.axis)

    def run(data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, data.dim())
        return torch.gather(data, a, _wrap(indices(idx), data.shape[a]))

    return run


@layer("scatterAlongAxis")
def scatterAlongAxis(p: Any, ctx: Any) -> Fn:
    """``put_along_axis`` combining by the scatter mode."""
    ctx.require(3)
    axis, mode = int(p.axis), _check_mode(ctx, int(p.mode))

    def run(c: torch.Tensor, idx: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, c.dim())
        i = _wrap(indices(idx), c.shape[a])
        if mode == _UPDATE:
            return c.scatter(a, i, u)
        if mode in (_ADD, _SUB):
            return c.scatter_add(a, i, -u if mode == _SUB else u)
        return c.scatter_reduce(a, i, 1.0 / u if mode == _DIV else u, _REDUCE[mode], include_self=True)

    return run


def _linear_index(idx: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """[..., K] multi-indices into the first K axes of ``shape`` as flat row numbers [...]."""
    k = idx.shape[-1]
    if k > len(shape):
        raise IndexError(f"indices address {k} axes of a rank-{len(shape)} tensor")
    flat = torch.zeros(idx.shape[:-1], dtype=torch.long, device=idx.device)
    for j in range(k):
        flat = flat * shape[j] + _wrap(idx[..., j], shape[j])
    return flat


@layer("gatherND")
def gatherND(p: Any, ctx: Any) -> Fn:
    """output[i..j] = params[indices[i..j, :]]: shape indices.shape[:-1] + params.shape[K:]."""
    ctx.require(2)

    def run(params: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        i = indices(idx)
        k = i.shape[-1]
        rows = params.reshape(math.prod(params.shape[:k]), *params.shape[k:])
        return rows[_linear_index(i, params.shape)]

    return run


@layer("scatterND")
def scatterND(p: Any, ctx: Any) -> Fn:
    """Inverse of gatherND, combining by the scatter mode."""
    ctx.require(3)
    mode = _check_mode(ctx, int(p.mode))

    def run(c: torch.Tensor, idx: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        i = indices(idx)
        k = i.shape[-1]
        rows = c.reshape(math.prod(c.shape[:k]), *c.shape[k:])
        flat = _linear_index(i, c.shape).reshape(-1)
        return _scatter_rows(rows, flat, u.reshape(flat.numel(), *c.shape[k:]), mode).reshape(c.shape)

    return run


@layer("whereNonZero")
def whereNonZero(p: Any, ctx: Any) -> Fn:
    """[N, rank] float indices of the non-zero elements, row-major."""
    ctx.require(1)
    return lambda x: torch.nonzero(x).to(x.dtype)


@layer("oneHot")
def oneHot(p: Any, ctx: Any) -> Fn:
    """One-hot vectors along a new ``axis`` of the output; out-of-range indices give all offValue."""
    ctx.require(1, 2)
    size_static, axis, on, off = int(p.oneHotVectorSize), int(p.axis), p.onValue, p.offValue

    def run(x: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        n = int_values(depth)[0] if depth is not None else size_static
        a = norm_axis(axis, x.dim() + 1)
        hot = indices(x).unsqueeze(-1) == torch.arange(n, device=x.device)
        out = torch.where(hot, torch.tensor(on, dtype=x.dtype, device=x.device),
                          torch.tensor(off, dtype=x.dtype, device=x.device))
        return out.movedim(-1, a)

    return run


def _iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """IoU of one center-size box [4] with boxes [M, 4]."""
    lo = torch.maximum(box[:2] - box[2:] / 2, others[:, :2] - others[:, 2:] / 2)
    hi = torch.minimum(box[:2] + box[2:] / 2, others[:, :2] + others[:, 2:] / 2)
    inter = (hi - lo).clamp(min=0).prod(-1)
    union = box[2:].prod() + others[:, 2:].prod(-1) - inter
    return inter / union


def _nms_one(boxes: torch.Tensor, scores: torch.Tensor, iou: float, thr: float, limit: int,
             per_class: bool) -> list[int]:
    best, cls = scores.max(-1)
    order = torch.argsort(best, descending=True, stable=True).tolist()
    kept: list[int] = []
    for i in order:
        if float(best[i]) <= thr or len(kept) == limit:
            continue
        rivals = [k for k in kept if not per_class or int(cls[k]) == int(cls[i])]
        if rivals and float(_iou(boxes[i], boxes[rivals]).max()) > iou:
            continue
        kept.append(i)
    return kept or [int(torch.argmax(best))]


@layer("NonMaximumSuppression")
def NonMaximumSuppression(p: Any, ctx: Any) -> Fn:
    """Greedy NMS per batch over center-size boxes: (boxes, scores, indices (-1 padded), counts); when no
    box clears the score threshold the best box is returned alone."""
    ctx.require(2, 5, outputs=(1, 4))
    params = (p.iouThreshold, p.scoreThreshold, int(p.maxBoxes), p.perClassSuppression)

    def run(boxes: torch.Tensor, scores: torch.Tensor, *overrides: torch.Tensor) -> tuple[torch.Tensor, ...]:
        iou, thr, limit, per_class = params
        given = [float(t.reshape(-1)[0]) for t in overrides]
        iou = given[0] if len(given) > 0 else iou
        thr = given[1] if len(given) > 1 else thr
        limit = int(given[2]) if len(given) > 2 else limit
        b, _, c = scores.shape
        out_boxes = boxes.new_zeros(b, limit, 4)
        out_scores = scores.new_zeros(b, limit, c)
        out_idx = boxes.new_full((b, limit), -1.0)
        counts = boxes.new_zeros(b)
        for k in range(b):
            kept = torch.tensor(_nms_one(boxes[k], scores[k], iou, thr, limit, per_class)[:limit],
                                dtype=torch.long, device=boxes.device)
            n = kept.numel()
            out_boxes[k, :n], out_scores[k, :n] = boxes[k, kept], scores[k, kept]
            out_idx[k, :n], counts[k] = kept.to(boxes.dtype), n
        return out_boxes, out_scores, out_idx, counts

    return run
