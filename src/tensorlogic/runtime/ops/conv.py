"""MIL convolutions: conv, conv_transpose, conv_quantized (coremltools ``defs/iOS15|iOS17/conv.py``).

Padding follows ``coremltools ... defs/_utils.aggregated_pad``: ``same`` pads a total of
``max(0, (ceil(d/s) - 1) * s + k_eff - d)`` with the odd element after (as TensorFlow and
PyTorch do), ``same_lower`` puts it before. iOS17 lets weights and bias be non-const and of
another float dtype than ``x``; they are cast to ``x``'s dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..registry import op

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_PARAMS = {"strides": "ints", "pad_type": "str", "pad": "ints", "dilations": "ints", "groups": "int"}


def _spatial(x: torch.Tensor, name: str) -> int:
    n = x.dim() - 2
    if n not in _CONV:
        raise ValueError(f"{name} takes 1 to 3 spatial dimensions (rank 3 to 5), got rank {x.dim()}")
    return n


def same_pads(
    sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], lower: bool
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim for pad_type ``same`` / ``same_lower``."""
    pads = []
    for d, k, s, dil in zip(sizes, kernel, strides, dilations):
        k_eff = (k - 1) * dil + 1
        total = max(0, (math.ceil(d / s) - 1) * s + k_eff - d)
        small = total // 2
        pads.append((total - small, small) if lower else (small, total - small))
    return pads


def resolve_pads(
    pad_type: str,
    pad: Sequence[int] | None,
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim for any MIL pad_type."""
    n = len(sizes)
    pad_type = pad_type.lower()
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type in ("same", "same_lower"):
        return same_pads(sizes, kernel, strides, dilations, pad_type == "same_lower")
    if pad_type == "custom":
        p = list(pad) if pad is not None else [0] * (2 * n)
        if len(p) != 2 * n:
            raise ValueError(f"pad has {len(p)} values, expected {2 * n} for {n} spatial dims")
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    raise ValueError(f"unknown pad_type {pad_type!r} (expected valid, same, same_lower or custom)")


def pad_spatial(x: torch.Tensor, pads: Sequence[tuple[int, int]], value: float = 0.0) -> torch.Tensor:
    """Pad the trailing spatial dims of ``x``; negative amounts crop."""
    flat = [a for before_after in reversed(pads) for a in before_after]
    if not any(flat):
        return x
    return F.pad(x, flat, value=value)


@op("conv", params=_PARAMS, since="iOS15")
def conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    strides: Sequence[int] | None = None,
    pad_type: str = "valid",
    pad: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    groups: int = 1,
) -> torch.Tensor:
    """N-d convolution; weight ``[C_out, C_in/groups, *K]``."""
    n = _spatial(x, "conv")
    strides = list(strides) if strides is not None else [1] * n
    dilations = list(dilations) if dilations is not None else [1] * n
    pads = resolve_pads(pad_type, pad, x.shape[2:], weight.shape[2:], strides, dilations)
    w = weight.to(x.dtype)
    b = None if bias is None else bias.to(x.dtype)
    if all(a == b_ for a, b_ in pads):
        padding: list[int] | int = [a for a, _ in pads]
    else:
        x, padding = pad_spatial(x, pads), 0
    return _CONV[n](x, w, b, stride=strides, padding=padding, dilation=dilations, groups=groups)


@op("conv_quantized", params={**_PARAMS, "quantization_type": "str", "nbits": "int"}, since="iOS15")
def conv_quantized(
    x: torch.Tensor,
    weight: torch.Tensor,
    quant_scale: torch.Tensor,
    quant_bias: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    quantization_type: str,
    nbits: int = 8,
    strides: Sequence[int] | None = None,
    pad_type: str = "valid",
    pad: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    groups: int = 1,
) -> torch.Tensor:
    """conv with ``weight * quant_scale + quant_bias``; ``lut`` (left undefined by the spec) is refused."""
    if quantization_type != "linear":
        raise ValueError(f"quantization_type {quantization_type!r} is not supported (only 'linear')")
    shape = (-1,) + (1,) * (weight.dim() - 1)
    scale = quant_scale.to(x.dtype)
    offset = quant_bias.to(x.dtype)
    if scale.numel() > 1:
        scale = scale.reshape(shape)
    if offset.numel() > 1:
        offset = offset.reshape(shape)
    w = weight.to(x.dtype) * scale + offset
    return conv(x, w, bias, strides=strides, pad_type=pad_type, pad=pad, dilations=dilations, groups=groups)


def _transpose_window(
    pad_type: str, pad: Sequence[int] | None, sizes: Sequence[int], strides: Sequence[int], full: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Where the output starts in the full transposed result, and its size, per spatial dim."""
    n = len(sizes)
    kind = pad_type.lower()
    if kind == "custom":
        p = list(pad) if pad is not None else [0] * (2 * n)
        before = [p[2 * i] for i in range(n)]
        return before, [f - p[2 * i] - p[2 * i + 1] for i, f in enumerate(full)]
    if kind == "valid":
        return [0] * n, list(full)
    if kind in ("same", "same_lower"):
        out = [d * s for d, s in zip(sizes, strides)]
        totals = [f - o for f, o in zip(full, out)]
        return [t - t // 2 if kind == "same_lower" else t // 2 for t in totals], out
    raise ValueError(f"unknown pad_type {pad_type!r} (expected valid, same, same_lower or custom)")


@op("conv_transpose", params={**_PARAMS, "output_shape": "ints"}, since="iOS15")
def conv_transpose(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    pad: Sequence[int] | None = None,
    output_shape: Sequence[int] | None = None,
    pad_type: str = "valid",
    strides: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    groups: int = 1,
) -> torch.Tensor:
    """Transposed convolution; weight ``[C_in, C_out/groups, *K]``; ``output_shape`` fixes the spatial size."""
    n = _spatial(x, "conv_transpose")
    strides = list(strides) if strides is not None else [1] * n
    dilations = list(dilations) if dilations is not None else [1] * n
    full = [(d - 1) * s + (k - 1) * dil + 1 for d, s, k, dil in zip(x.shape[2:], strides, weight.shape[2:], dilations)]
    before, out = _transpose_window(pad_type, pad, x.shape[2:], strides, full)
    if output_shape is not None:
        out = list(output_shape)[-n:]
    w = weight.to(x.dtype)
    b = None if bias is None else bias.to(x.dtype)
    extra = [o - (f - 2 * bf) for o, f, bf in zip(out, full, before)]
    if all(bf >= 0 for bf in before) and all(0 <= e < max(s, d) for e, s, d in zip(extra, strides, dilations)):
        # torch crops ``before`` at both ends and adds ``extra`` (output_padding) at the end itself.
        return _CONV_T[n](x, w, b, stride=strides, padding=before, output_padding=extra, dilation=dilations,
                          groups=groups)
    y = _CONV_T[n](x, w, None, stride=strides, dilation=dilations, groups=groups)
    # Crop the full result to [before, before + out); room outside it gets no contribution, only bias.
    y = pad_spatial(y, [(-bf, o + bf - f) for bf, o, f in zip(before, out, full)])
    return y if b is None else y + b.reshape((1, -1) + (1,) * n)
