"""MIL pooling: avg_pool, l2_pool, max_pool (coremltools ``defs/iOS15/pool.py``).

Padding is applied explicitly (MIL allows asymmetric and ``same``/``same_lower`` pads, torch's
pools do not), then torch pools with no padding. ``ceil_mode`` follows the spec's output size rule
(``defs/_utils.spatial_dimensions_out_shape``); a window running past the padded input sees only
what is inside it, as in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..registry import op
from .conv import pad_spatial, resolve_pads

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_PARAMS = {"kernel_sizes": "ints", "strides": "ints", "pad_type": "str", "pad": "ints", "ceil_mode": "bool"}


def _windows(
    x: torch.Tensor,
    kernel_sizes: Sequence[int],
    strides: Sequence[int] | None,
    pad_type: str,
    pad: Sequence[int] | None,
    ceil_mode: bool,
) -> tuple[list[int], list[int], list[tuple[int, int]], list[int]]:
    """Kernel, strides, explicit (before, after) pads, and the extra room ceil mode needs past the end."""
    n = x.dim() - 2
    if n not in _AVG or len(kernel_sizes) != n:
        raise ValueError(f"kernel_sizes {list(kernel_sizes)} do not fit an input of rank {x.dim()}")
    kernel = list(kernel_sizes)
    strides = list(strides) if strides is not None else [1] * n
    pads = resolve_pads(pad_type, pad, x.shape[2:], kernel, strides, [1] * n)
    extra = []
    for d, k, s, (a, b) in zip(x.shape[2:], kernel, strides, pads):
        total = d + a + b
        if ceil_mode:
            out = math.floor((total - k + s - 1) / s) + 1
            if (out - 1) * s >= d + a and a + b > 0:
                out -= 1
        else:
            out = (total - k) // s + 1
        if out <= 0:
            raise ValueError(f"pooling window {k} with stride {s} leaves no output for spatial size {d}")
        extra.append(max(0, (out - 1) * s + k - total))
    return kernel, strides, pads, extra


def _torch_padding(pads: list[tuple[int, int]], kernel: list[int], extra: list[int]) -> list[int] | None:
    """The pads as torch's pools take them (symmetric, at most half the kernel, no ceil room), else None."""
    if any(extra) or any(a != b or 2 * a > k for (a, b), k in zip(pads, kernel)):
        return None
    return [a for a, _ in pads]


def _avg(x: torch.Tensor, kernel: list[int], strides: list[int], padding: list[int] | int = 0,
         count_include_pad: bool = True) -> torch.Tensor:
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        # CPU torch has no half avg_pool3d kernel.
        return _avg(x.float(), kernel, strides, padding, count_include_pad).to(x.dtype)
    return _AVG[len(kernel)](x, kernel, strides, padding, count_include_pad=count_include_pad)


def _window_mean(x: torch.Tensor, kernel: list[int], strides: list[int], pads, extra) -> torch.Tensor:
    """Mean over each full window of ``x`` zero-padded by ``pads`` plus ``extra`` after."""
    return _avg(pad_spatial(x, [(a, b + e) for (a, b), e in zip(pads, extra)]), kernel, strides)


def _coverage(x: torch.Tensor, kernel, strides, pads, extra, count_pads: bool) -> torch.Tensor:
    """The share of each window that counts toward its average: real elements, plus pads if ``count_pads``."""
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=torch.float32, device=x.device)
    if count_pads:
        ones = pad_spatial(ones, pads, value=1.0)
        pads = [(0, 0)] * len(kernel)
    return _window_mean(ones, kernel, strides, pads, extra)


@op("avg_pool", params={**_PARAMS, "exclude_padding_from_average": "bool"}, since="iOS15")
def avg_pool(
    x: torch.Tensor,
    *,
    kernel_sizes: Sequence[int],
    strides: Sequence[int] | None = None,
    pad_type: str = "valid",
    pad: Sequence[int] | None = None,
    exclude_padding_from_average: bool = False,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """Average pooling over 1–3 spatial dims."""
    kernel, strides, pads, extra = _windows(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    padding = _torch_padding(pads, kernel, extra)
    if padding is not None:
        return _avg(x, kernel, strides, padding, count_include_pad=not exclude_padding_from_average)
    mean = _window_mean(x, kernel, strides, pads, extra)
    if not any(extra) and not (exclude_padding_from_average and any(a or b for a, b in pads)):
        return mean
    share = _coverage(x, kernel, strides, pads, extra, not exclude_padding_from_average)
    return (mean / share).to(x.dtype)


@op("l2_pool", params=_PARAMS, since="iOS15")
def l2_pool(
    x: torch.Tensor,
    *,
    kernel_sizes: Sequence[int],
    strides: Sequence[int] | None = None,
    pad_type: str = "valid",
    pad: Sequence[int] | None = None,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """``sqrt(sum(x**2))`` over each window (padding counts as zeros); 1–3 spatial dims, not only 1–2."""
    kernel, strides, pads, extra = _windows(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    # Squares overflow fp16: sum them in float32.
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = _window_mean(xf * xf, kernel, strides, pads, extra)
    return torch.sqrt(mean * math.prod(kernel)).to(x.dtype)


@op("max_pool", params=_PARAMS, since="iOS15")
def max_pool(
    x: torch.Tensor,
    *,
    kernel_sizes: Sequence[int],
    strides: Sequence[int] | None = None,
    pad_type: str = "valid",
    pad: Sequence[int] | None = None,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """Max pooling over 1–3 spatial dims; padding never wins."""
    kernel, strides, pads, extra = _windows(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    padding = _torch_padding(pads, kernel, extra)
    if padding is not None:
        return _MAX[len(kernel)](x, kernel, strides, padding)
    xp = pad_spatial(x, [(a, b + e) for (a, b), e in zip(pads, extra)], value=-math.inf)
    return _MAX[len(kernel)](xp, kernel, strides)
