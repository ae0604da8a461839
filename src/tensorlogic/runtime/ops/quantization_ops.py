"""MIL quantization_ops family (iOS17): affine quantize and dequantize with per-tensor or per-axis params."""

from __future__ import annotations

import torch

from ..registry import op

_RANGES = {"int8": (torch.int8, -128, 127), "uint8": (torch.uint8, 0, 255)}


def _along(param: torch.Tensor, rank: int, axis: int | None) -> torch.Tensor:
    """A scalar or per-axis vector param shaped to broadcast against a tensor of the given rank."""
    if param.dim() == 0 or axis is None:
        return param
    view = [1] * rank
    view[axis % rank] = -1
    return param.reshape(view)


@op("quantize", params={"axis": "int", "output_dtype": "str"}, since="iOS17")
def quantize(input: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None, *,
        axis: int | None = None, output_dtype: str) -> torch.Tensor:
    """clip(round(input / scale) + zero_point) as int8/uint8; rounds half to even like numpy."""
    if output_dtype not in _RANGES:
        raise ValueError(f"quantize output_dtype must be int8 or uint8, got {output_dtype!r}")
    dtype, low, high = _RANGES[output_dtype]
    q = torch.round(input.float() / _along(scale.float(), input.dim(), axis))
    if zero_point is not None:
        q = q + _along(zero_point.float(), input.dim(), axis)
    return q.clamp(low, high).to(dtype)


@op("dequantize", params={"axis": "int"}, since="iOS17")
def dequantize(input: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None, *,
        axis: int | None = None) -> torch.Tensor:
    """(input - zero_point) * scale, in scale's dtype."""
    x = input.float()
    if zero_point is not None:
        x = x - _along(zero_point.float(), input.dim(), axis)
    return (x * _along(scale.float(), input.dim(), axis)).to(scale.dtype)
