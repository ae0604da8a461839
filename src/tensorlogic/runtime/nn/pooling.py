"""Pooling layers: ``pooling`` (max / average / L2, global, valid / same / include-last-pixel padding),
``pooling3d``, ``globalPooling3d``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .common import as_nchw, from_nchw
from .conv import border, same_pads
from .registry import layer

Fn = Callable[[torch.Tensor], torch.Tensor]

_MAX, _AVERAGE, _L2 = 0, 1, 2


def _flat(pads: Sequence[tuple[int, int]]) -> list[int]:
    """F.pad's order (last axis first) from per-axis (start, end) pairs in axis order."""
    return [v for pair in reversed(pads) for v in pair]


def pool(x: torch.Tensor, kind: int, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[tuple[int, int]],
         extra: Sequence[int], exclude_padding: bool) -> torch.Tensor:
    """Pool the trailing 2 or 3 axes of a [N, C, ...] tensor.

    ``pads`` are real padding (counted in averages unless ``exclude_padding``); ``extra`` is padding
    added at the end of each axis only so the last window fits (include-last-pixel), never counted.
    """
    total = [(a, b + e) for (a, b), e in zip(pads, extra)]
    maxf, avgf = (F.max_pool2d, F.avg_pool2d) if len(kernel) == 2 else (F.max_pool3d, F.avg_pool3d)
    if kind == _MAX:
        xp = F.pad(x, _flat(total), value=float("-inf")) if any(_flat(total)) else x
        return maxf(xp, kernel, stride)
    src = x * x if kind == _L2 else x
    sums = avgf(F.pad(src, _flat(total)), kernel, stride, divisor_override=1)
    if kind == _L2:
        return torch.sqrt(sums)
    mask = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    counted = F.pad(mask, _flat(pads), value=0.0 if exclude_padding else 1.0)
    counted = F.pad(counted, _flat([(0, e) for e in extra]))
    counts = avgf(counted, kernel, stride, divisor_override=1)
    return sums / counts


def _last_pixel(size: int, kernel: int, stride: int, pad: int) -> int:
    """Extra end padding so include-last-pixel's output size is reached (Caffe's ceil mode)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return max(0, (out - 1) * stride + kernel - (size + 2 * pad))


@layer("pooling")
def pooling(p: Any, ctx: Any) -> Fn:
    """2-D pooling over [..., C, H, W]; averages divide by the window's real pixels when
    ``avgPoolExcludePadding``, else by the window size within the padded input."""
    ctx.require(1)
    kind = int(p.type)
    if kind not in (_MAX, _AVERAGE, _L2):
        raise ctx.error(f"unknown pooling type {kind}")
    kernel = [int(k) for k in p.kernelSize] or [3, 3]
    stride = [int(s) for s in p.stride] or [1, 1]
    if len(kernel) != 2 or len(stride) != 2:
        raise ctx.error(f"kernelSize and stride need 2 values [H, W], got {kernel} and {stride}")
    padding = p.WhichOneof("PoolingPaddingType")
    exclude = bool(p.avgPoolExcludePadding)

    def run(x: torch.Tensor) -> torch.Tensor:
        x4, lead = as_nchw(x, "pooling")
        h, w = x4.shape[2:]
        if p.globalPooling:
            return from_nchw(pool(x4, kind, (h, w), (1, 1), [(0, 0)] * 2, (0, 0), exclude), lead)
        extra = (0, 0)
        if padding == "same":
            mode = p.same.asymmetryMode
            pads = [same_pads(h, kernel[0], stride[0], mode), same_pads(w, kernel[1], stride[1], mode)]
        elif padding == "includeLastPixel":
            ph, pw = [int(v) for v in p.includeLastPixel.paddingAmounts] or [0, 0]
            pads = [(ph, ph), (pw, pw)]
            extra = (_last_pixel(h, kernel[0], stride[0], ph), _last_pixel(w, kernel[1], stride[1], pw))
        else:
            top, bottom, left, right = border(p.valid.paddingAmounts)
            pads = [(top, bottom), (left, right)]
        return from_nchw(pool(x4, kind, kernel, stride, pads, extra, exclude), lead)

    return run


_CUSTOM, _VALID, _SAME = 0, 1, 2


@layer("pooling3d")
def pooling3d(p: Any, ctx: Any) -> Fn:
    """3-D max or average pooling over [..., C, D, H, W] with custom, valid or same padding."""
    ctx.require(1)
    kind = int(p.type)
    if kind not in (_MAX, _AVERAGE):
        raise ctx.error(f"unknown pooling3d type {kind}")
    kernel = (int(p.kernelDepth) or 1, int(p.kernelHeight) or 1, int(p.kernelWidth) or 1)
    stride = (int(p.strideDepth) or 1, int(p.strideHeight) or 1, int(p.strideWidth) or 1)
    custom = [(int(p.customPaddingFront), int(p.customPaddingBack)), (int(p.customPaddingTop),
              int(p.customPaddingBottom)), (int(p.customPaddingLeft), int(p.customPaddingRight))]
    mode = int(p.paddingType)

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 4:
            raise ValueError(f"pooling3d needs a blob of rank at least 4, got {list(x.shape)}")
        x5 = x.reshape(-1, *x.shape[-4:])
        if mode == _SAME:
            pads = [same_pads(n, k, s, 0) for n, k, s in zip(x5.shape[2:], kernel, stride)]
        else:
            pads = custom if mode == _CUSTOM else [(0, 0)] * 3
        y = pool(x5, kind, kernel, stride, pads, (0, 0, 0), bool(p.countExcludePadding))
        return y.reshape(*x.shape[:-4], *y.shape[1:])

    return run


@layer("globalPooling3d")
def globalPooling3d(p: Any, ctx: Any) -> Fn:
    """Max or average over the last three axes of [..., C, D, H, W], keeping them as 1."""
    ctx.require(1)
    kind = int(p.type)
    if kind not in (_MAX, _AVERAGE):
        raise ctx.error(f"unknown globalPooling3d type {kind}")
    if kind == _MAX:
        return lambda x: x.amax(dim=(-3, -2, -1), keepdim=True)
    return lambda x: x.mean(dim=(-3, -2, -1), keepdim=True)
