"""MIL tensor_operation family: fill, range, tile, pad, sort/top-k, concat/split/stack, NMS, ...

Ops whose output shape depends on tensor *values* (fill, range_1d, non_zero,
non_maximum_suppression) read those values back to the host; everything else stays on the device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import op


def _torch_value(value, device: torch.device | None = None) -> torch.Tensor:
    """A scalar param (numpy or Python) as a 0-d tensor of the matching dtype."""
    return torch.as_tensor(np.asarray(value), device=device)


def _full(shape, value, device: torch.device) -> torch.Tensor:
    host = _torch_value(value)
    return torch.full(tuple(shape), host.item(), dtype=host.dtype, device=device)


@op("band_part", params={"lower": "int", "upper": "int"}, since="iOS15")
def band_part(x: torch.Tensor, *, lower: int = -1, upper: int = -1) -> torch.Tensor:
    """Zero everything outside a band around the diagonal of the last two dims."""
    rows = torch.arange(x.shape[-2], device=x.device).unsqueeze(1)
    cols = torch.arange(x.shape[-1], device=x.device).unsqueeze(0)
    keep = torch.ones(x.shape[-2:], dtype=torch.bool, device=x.device)
    if lower >= 0:
        keep &= (rows - cols) <= lower
    if upper >= 0:
        keep &= (cols - rows) <= upper
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


@op("cumsum", params={"axis": "int", "exclusive": "bool", "reverse": "bool"}, since="iOS15")
def cumsum(x: torch.Tensor, *, axis: int = 0, exclusive: bool = False, reverse: bool = False) -> torch.Tensor:
    """Cumulative sum along axis; exclusive shifts by one, reverse sums from the end."""
    if reverse:
        x = x.flip(axis)
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    out = torch.cumsum(x, axis, dtype=acc).to(x.dtype)
    if exclusive:
        out = torch.cat([torch.zeros_like(out.narrow(axis, 0, 1)), out.narrow(axis, 0, out.shape[axis] - 1)], axis)
    return out.flip(axis) if reverse else out


@op("fill", params={"value": "value"}, since="iOS15")
def fill(shape: torch.Tensor, *, value: Any = 0.0) -> torch.Tensor:
    """A tensor of the given shape (read from the device) filled with value."""
    return _full(shape.tolist(), value, shape.device)


@op("fill_like", params={"value": "value"}, since="iOS16")
def fill_like(ref_tensor: torch.Tensor, *, value: Any = 0.0) -> torch.Tensor:
    """A tensor shaped like ref_tensor filled with value (value's dtype, as in the spec)."""
    return _full(ref_tensor.shape, value, ref_tensor.device)


def _iou_row(boxes: np.ndarray, i: int) -> np.ndarray:
    """IoU of box i with every box; boxes are center-size (x, y, w, h) and empty ones overlap nothing."""
    lo = boxes[:, :2] - boxes[:, 2:] / 2
    hi = boxes[:, :2] + boxes[:, 2:] / 2
    inter = np.prod(np.clip(np.minimum(hi, hi[i]) - np.maximum(lo, lo[i]), 0, None), axis=1)
    area = np.prod(boxes[:, 2:], axis=1)
    union = area + area[i] - inter
    valid = (area > 0) & (area[i] > 0)
    return np.where(valid, inter / np.where(union > 0, union, 1), 0.0)


def _nms_select(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class):
    """Greedy NMS of one batch item on the host; returns the kept box indices in score order."""
    boxes = boxes.double().cpu().numpy()
    scores = scores.double().cpu().numpy()
    best, cls = scores.max(-1), scores.argmax(-1)
    order = np.argsort(-best, kind="stable")
    suppressed = np.zeros(len(best), dtype=bool)
    kept: list[int] = []
    for i in order.tolist():
        if len(kept) == max_boxes or best[i] <= score_threshold:
            break
        if suppressed[i]:
            continue
        kept.append(i)
        hit = _iou_row(boxes, i) > iou_threshold
        suppressed |= hit & (cls == cls[i]) if per_class else hit
    # Core ML returns the single best box rather than nothing.
    return kept or order[:1].tolist()


def _nms(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class):
    n, _, k = scores.shape
    out_boxes = boxes.new_zeros(n, max_boxes, 4)
    out_scores = scores.new_zeros(n, max_boxes, k)
    out_idx = torch.full((n, max_boxes), -1, dtype=torch.int32, device=boxes.device)
    counts = []
    for b in range(n):
        kept = _nms_select(boxes[b], scores[b], iou_threshold, score_threshold, max_boxes, per_class)
        sel = torch.tensor(kept, dtype=torch.long, device=boxes.device)
        out_boxes[b, : len(kept)] = boxes[b, sel]
        out_scores[b, : len(kept)] = scores[b, sel]
        out_idx[b, : len(kept)] = sel.to(torch.int32)
        counts.append(len(kept))
    return out_boxes, out_scores, out_idx, torch.tensor(counts, dtype=torch.int32, device=boxes.device)


_NMS_PARAMS = {"iou_threshold": "float", "score_threshold": "float", "max_boxes": "int",
               "per_class_suppression": "bool"}


@op("non_maximum_suppression", params=_NMS_PARAMS, since="iOS15")
def non_maximum_suppression(boxes: torch.Tensor, scores: torch.Tensor, *, iou_threshold: float, score_threshold: float,
        max_boxes: int, per_class_suppression: bool = False) -> tuple[torch.Tensor, ...]:
    """Greedy NMS over [n, B, 4] center-size boxes; outputs padded with zeros and index -1."""
    return _nms(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class_suppression)


@op("non_maximum_suppression", params=_NMS_PARAMS, since="iOS17")
def non_maximum_suppression_ios17(boxes: torch.Tensor, scores: torch.Tensor, *, iou_threshold: float, max_boxes: int,
        per_class_suppression: bool = False) -> tuple[torch.Tensor, ...]:
    """iOS17 NMS: boxes [n, 4, B], scores [n, K, B], no score threshold, no count output."""
    out_boxes, out_scores, out_idx, _ = _nms(boxes.transpose(1, 2), scores.transpose(1, 2), iou_threshold,
                                             -math.inf, max_boxes, per_class_suppression)
    return out_boxes.transpose(1, 2), out_scores.transpose(1, 2), out_idx


@op("non_zero", since="iOS15")
def non_zero(x: torch.Tensor) -> torch.Tensor:
    """Indices [N, rank] of the non-zero elements, in row-major order."""
    return torch.nonzero(x).to(torch.int32)


@op("one_hot", params={"one_hot_vector_size": "int", "axis": "int", "on_value": "value",
                       "off_value": "value"}, since="iOS15")
def one_hot(indices: torch.Tensor, *, one_hot_vector_size: int, axis: int = -1, on_value: Any = 1,
        off_value: Any = 0) -> torch.Tensor:
    """One-hot vectors along a new axis; out-of-range indices give all off_value."""
    axis = axis % (indices.dim() + 1)
    view = [1] * (indices.dim() + 1)
    view[axis] = one_hot_vector_size
    classes = torch.arange(one_hot_vector_size, device=indices.device).reshape(view)
    hit = indices.unsqueeze(axis).long() == classes
    # 0-d host tensors act as scalars on any device (no copy, so CUDA graphs can hold the op).
    on = _torch_value(on_value)
    return torch.where(hit, on, _torch_value(off_value).to(on.dtype))


def _edge_index(n: int, before: int, after: int, mode: str, device) -> torch.Tensor:
    pos = torch.arange(-before, n + after, device=device)
    if mode == "replicate":
        return pos.clamp(0, n - 1)
    pos = pos.abs()
    return (n - 1) - ((n - 1) - pos).abs()


@op("pad", params={"pad": "ints", "mode": "str", "constant_val": "float"}, since="iOS15")
def pad(x: torch.Tensor, *, pad: tuple[int, ...], mode: str = "constant", constant_val: float = 0.0) -> torch.Tensor:
    """Pad the last len(pad)/2 dims by (before, after) pairs; reflect excludes the edge value."""
    pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]
    first = x.dim() - len(pairs)
    if mode == "constant":
        flat = [v for before, after in reversed(pairs) for v in (before, after)]
        return F.pad(x, flat, value=constant_val)
    if mode not in ("reflect", "replicate"):
        raise ValueError(f"unknown pad mode {mode!r} (expected constant, reflect or replicate)")
    for i, (before, after) in enumerate(pairs):
        if before or after:
            dim = first + i
            x = x.index_select(dim, _edge_index(x.shape[dim], before, after, mode, x.device))
    return x


@op("range_1d", since="iOS15")
def range_1d(end: torch.Tensor, start: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """numpy.arange(start, end, step); the bounds are read back to the host."""
    s, e, d = start.item(), end.item(), step.item()
    return torch.arange(s, e, d, dtype=start.dtype, device=start.device)


@op("tile", params={"reps": "ints"}, since="iOS15")
def tile(x: torch.Tensor, *, reps: tuple[int, ...]) -> torch.Tensor:
    """Repeat x reps[i] times along dim i."""
    return x.repeat(*reps)


@op("argsort", params={"axis": "int", "ascending": "bool"}, since="iOS15")
def argsort(x: torch.Tensor, *, axis: int = -1, ascending: bool = False) -> torch.Tensor:
    """Indices that sort x along axis (descending unless ascending); ties keep input order."""
    return torch.argsort(x, dim=axis, descending=not ascending, stable=True).to(torch.int32)


@op("topk", params={"k": "int", "axis": "int", "ascending": "bool", "sort": "bool", "return_indices": "bool",
                    "output_indices_dtype": "str"}, since="iOS15")
def topk(x: torch.Tensor, *, k: int = 1, axis: int = -1, ascending: bool = False, sort: bool = True,
        return_indices: bool = True,
        output_indices_dtype: str = "int32") -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The k largest (or smallest) values along axis, always sorted; k=-1 keeps all (iOS17)."""
    values, indices = torch.sort(x, dim=axis, descending=not ascending, stable=True)
    if k != -1:
        values, indices = values.narrow(axis, 0, k), indices.narrow(axis, 0, k)
    if not return_indices:
        return values
    return values, indices.to(torch.int32)


@op("flatten2d", params={"axis": "int"}, since="iOS15")
def flatten2d(x: torch.Tensor, *, axis: int = 1) -> torch.Tensor:
    """Collapse the dims before and from axis into a 2-D tensor."""
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("shape", since="iOS15")
def shape(x: torch.Tensor) -> torch.Tensor:
    """The shape of x as an int32 vector."""
    return torch.tensor(x.shape, dtype=torch.int32, device=x.device)


@op("concat", params={"axis": "int", "interleave": "bool"}, since="iOS15")
def concat(values: tuple[torch.Tensor, ...], *, axis: int, interleave: bool = False) -> torch.Tensor:
    """Join tensors along axis; interleave alternates their slices (all shapes equal)."""
    if values[0].dim() == 0:
        return torch.stack(values)
    axis = axis % values[0].dim()
    if not interleave:
        return torch.cat(values, axis)
    stacked = torch.stack(values, axis + 1)
    return stacked.flatten(axis, axis + 1)


@op("split", params={"axis": "int", "num_splits": "int", "split_sizes": "ints"}, since="iOS15")
def split(x: torch.Tensor, *, axis: int, num_splits: int | None = None,
        split_sizes: tuple[int, ...] | None = None) -> tuple[torch.Tensor, ...]:
    """Split x along axis into num_splits equal parts or parts of split_sizes."""
    if split_sizes is None:
        if num_splits is None:
            raise ValueError("split needs num_splits or split_sizes")
        split_sizes = [x.shape[axis] // num_splits] * num_splits
    return tuple(torch.split(x, list(split_sizes), dim=axis))


@op("stack", params={"axis": "int"}, since="iOS15")
def stack(values: tuple[torch.Tensor, ...], *, axis: int) -> torch.Tensor:
    """Stack equal-shaped tensors along a new axis."""
    return torch.stack(values, axis)


@op("identity", since="iOS15")
def identity(x: torch.Tensor) -> Any:
    """x unchanged."""
    return x
