"""Spatial resampling layers: ``upsample``, ``resizeBilinear``, ``cropResize``.

Bilinear layers sample each output index at a source position on the pixel-centre axis [0, X-1]
(the grids NeuralNetwork.proto defines per mode) and interpolate separably along H, then W.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .common import as_nchw, from_nchw, indices
from .registry import layer

Fn = Callable[..., torch.Tensor]
Grid = Callable[[int, int], np.ndarray]

_NN, _BILINEAR = 0, 1
_DEFAULT, _ALIGN_TRUE, _ALIGN_FALSE = 0, 1, 2


def _upsample_grid(mode: int) -> Grid:
    """UpsampleLayerParams.LinearUpsampleMode grids."""

    def grid(n_in: int, n_out: int) -> np.ndarray:
        i = np.arange(n_out, dtype=np.float64)
        if mode == _ALIGN_FALSE:
            spacing = n_in / n_out
            pos = i * spacing + 0.5 * spacing - 0.5
        elif n_out == 1:
            pos = np.zeros(1)
        elif mode == _ALIGN_TRUE:
            pos = i * (n_in - 1) / (n_out - 1)
        else:
            pos = i * (n_in - n_in / n_out) / (n_out - 1)
        return np.clip(pos, 0, n_in - 1)

    return grid


_STRICT_ALIGN, _ALIGN_ENDPOINTS, _UPSAMPLE, _ROI_ALIGN = 0, 1, 2, 3


def _sampling_grid(mode: int) -> Grid:
    """SamplingMode grids over an axis of n_in pixels."""

    def grid(n_in: int, n_out: int) -> np.ndarray:
        i = np.arange(n_out, dtype=np.float64)
        if mode in (_STRICT_ALIGN, _ALIGN_ENDPOINTS):
            if n_out == 1:
                return np.full(1, (n_in - 1) / 2 if mode == _ALIGN_ENDPOINTS else 0.0)
            pos = i * (n_in - 1) / (n_out - 1)
        elif mode == _UPSAMPLE:
            pos = i * n_in / n_out
        elif mode == _ROI_ALIGN:
            spacing = max(1, n_in - 1) / n_out
            pos = 0.5 * spacing + i * spacing
        else:
            raise ValueError(f"unknown sampling mode {mode}")
        return np.clip(pos, 0, n_in - 1)

    return grid


def lerp(x: torch.Tensor, dim: int, pos: np.ndarray) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at in-range source positions ``pos``."""
    low = np.floor(pos)
    i0 = torch.from_numpy(low.astype(np.int64)).to(x.device)
    i1 = torch.from_numpy(np.minimum(low + 1, x.shape[dim] - 1).astype(np.int64)).to(x.device)
    shape = [1] * x.dim()
    shape[dim] = len(pos)
    w = torch.from_numpy(pos - low).to(device=x.device, dtype=x.dtype).reshape(shape)
    a, b = x.index_select(dim, i0), x.index_select(dim, i1)
    return a + (b - a) * w


def _bilinear(x: torch.Tensor, out_h: int, out_w: int, grid: Grid) -> torch.Tensor:
    y = lerp(x, x.dim() - 2, grid(x.shape[-2], out_h))
    return lerp(y, y.dim() - 1, grid(x.shape[-1], out_w))


@layer("upsample")
def upsample(p: Any, ctx: Any) -> Fn:
    """Scale H and W up by integer (or, bilinear only, fractional) factors; nearest or bilinear."""
    ctx.require(1)
    ints = [int(v) for v in p.scalingFactor]
    fracs = [float(v) for v in p.fractionalScalingFactor]
    if ints and fracs:
        raise ctx.error("scalingFactor and fractionalScalingFactor are mutually exclusive")
    factors = fracs or ints or [1, 1]
    if len(factors) != 2 or min(factors) <= 0:
        raise ctx.error(f"scaling factors must be 2 positive values [H, W], got {factors}")
    nearest = p.mode == _NN
    grid = _upsample_grid(int(p.linearUpsampleMode))

    def run(x: torch.Tensor) -> torch.Tensor:
        x4, lead = as_nchw(x, "upsample")
        h, w = x4.shape[-2:]
        oh, ow = (int(np.floor(np.float32(f) * np.float32(n))) for f, n in zip(factors, (h, w)))
        if nearest and not fracs:
            y = x4.repeat_interleave(ints[0] if ints else 1, dim=2).repeat_interleave(ints[1] if ints else 1, dim=3)
        elif nearest:
            rows = torch.from_numpy(np.minimum(np.floor(np.arange(oh) / factors[0]), h - 1).astype(np.int64))
            cols = torch.from_numpy(np.minimum(np.floor(np.arange(ow) / factors[1]), w - 1).astype(np.int64))
            y = x4.index_select(2, rows.to(x.device)).index_select(3, cols.to(x.device))
        else:
            y = _bilinear(x4, oh, ow, grid)
        return from_nchw(y, lead)

    return run


@layer("resizeBilinear")
def resizeBilinear(p: Any, ctx: Any) -> Fn:
    """Bilinear resize of H and W to ``targetSize`` on the SamplingMode grid."""
    ctx.require(1)
    size = [int(v) for v in p.targetSize] or [1, 1]
    if len(size) != 2:
        raise ctx.error(f"targetSize must be [H, W], got {size}")
    grid = _sampling_grid(int(p.mode.samplingMethod))

    def run(x: torch.Tensor) -> torch.Tensor:
        x4, lead = as_nchw(x, "resizeBilinear")
        return from_nchw(_bilinear(x4, size[0], size[1], grid), lead)

    return run


_CORNERS_HW, _CORNERS_WH, _CENTER_HW, _CENTER_WH = 0, 1, 2, 3


def _corners(boxes: torch.Tensor, mode: int) -> torch.Tensor:
    """[N, 4] boxes as (h_start, w_start, h_end, w_end)."""
    a, b, c, d = boxes.unbind(-1)
    if mode == _CORNERS_HW:
        return boxes
    if mode == _CORNERS_WH:
        return torch.stack([b, a, d, c], -1)
    if mode == _CENTER_HW:
        return torch.stack([a - c / 2, b - d / 2, a + c / 2, b + d / 2], -1)
    if mode == _CENTER_WH:
        return torch.stack([b - d / 2, a - c / 2, b + d / 2, a + c / 2], -1)
    raise ValueError(f"unknown box coordinates mode {mode}")


def _box_grid(start: torch.Tensor, end: torch.Tensor, n: int, mode: int) -> torch.Tensor:
    """[N, n] source positions in each box, the box [start, end] playing the axis [0, X-1]."""
    i = torch.arange(n, dtype=start.dtype, device=start.device)
    s, span = start.unsqueeze(1), (end - start).unsqueeze(1)
    if mode in (_STRICT_ALIGN, _ALIGN_ENDPOINTS):
        if n == 1:
            return s + span / 2 if mode == _ALIGN_ENDPOINTS else s.expand(-1, 1)
        return s + span * i / (n - 1)
    if mode == _UPSAMPLE:
        offset = i * (span + 1) / n
    elif mode == _ROI_ALIGN:
        spacing = span.clamp(min=1) / n
        offset = 0.5 * spacing + i * spacing
    else:
        raise ValueError(f"unknown sampling mode {mode}")
    return s + torch.minimum(offset, span.clamp(min=0))


def _sample(img: torch.Tensor, pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Interpolate [N, C, H, W] along ``dim`` (2 or 3) at per-image positions [N, K]."""
    n = img.shape[dim]
    p = pos.clamp(0, n - 1)
    low = p.floor()
    view = [pos.shape[0], 1, 1, 1]
    view[dim] = pos.shape[1]
    shape = list(img.shape)
    shape[dim] = pos.shape[1]
    i0 = low.long().reshape(view).expand(shape)
    i1 = (low.long() + 1).clamp(max=n - 1).reshape(view).expand(shape)
    w = (p - low).to(img.dtype).reshape(view)
    a, b = img.gather(dim, i0), img.gather(dim, i1)
    return a + (b - a) * w


@layer("cropResize")
def cropResize(p: Any, ctx: Any) -> Fn:
    """Bilinear crops of ROI boxes [N, 1, 4|5, 1, 1] from [1, B, C, H, W]: [N, B, C, th, tw], or with a
    batch index per box, [N, 1, C, th, tw]."""
    ctx.require(2)
    th, tw = [int(v) for v in p.targetSize] or [1, 1]
    normalized = p.normalizedCoordinates
    mode, box_mode = int(p.mode.samplingMethod), int(p.boxIndicesMode.boxMode)
    scale = p.spatialScale if p.spatialScale != 0 else 1.0

    def run(x: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
        img = x.reshape(-1, *x.shape[-3:])
        rois = roi.reshape(roi.shape[0], -1)
        if rois.shape[1] not in (4, 5):
            raise ValueError(f"boxes must be [N, 1, 4 or 5, 1, 1], got {list(roi.shape)}")
        b, n = img.shape[0], rois.shape[0]
        if rois.shape[1] == 5:
            which, boxes, per = indices(rois[:, 0]), rois[:, 1:], 1
        else:
            which, boxes, per = torch.arange(b, device=x.device).repeat(n), rois.repeat_interleave(b, 0), b
        c = _corners(boxes, box_mode) * scale
        h, w = img.shape[-2:]
        if normalized:
            c = c * c.new_tensor([h - 1, w - 1, h - 1, w - 1])
        ys, xs = _box_grid(c[:, 0], c[:, 2], th, mode), _box_grid(c[:, 1], c[:, 3], tw, mode)
        out = _sample(_sample(img[which], ys, 2), xs, 3)
        return out.reshape(n, per, *out.shape[1:])

    return run
