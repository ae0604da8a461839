"""MIL linear algebra ops: linear, matmul, einsum (coremltools ``defs/iOS15|iOS17/linear.py``).

iOS17 lets weights (linear) or one const operand (matmul) have another dtype than the activations:
operands are brought to a common dtype before multiplying; the interpreter casts the result to the
declared output dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import op


def _is_int(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex())


def _int_compute_dtype(t: torch.Tensor) -> torch.dtype:
    # Integer GEMM is missing on CUDA; float64 holds every int32 product sum exactly (MPS lacks it).
    return torch.float32 if t.device.type == "mps" else torch.float64


@op("linear", since="iOS15")
def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias``."""
    if _is_int(x):
        dt = _int_compute_dtype(x)
        out = F.linear(x.to(dt), weight.to(dt), None if bias is None else bias.to(dt))
        return out.round().to(torch.int64)
    w = weight.to(x.dtype)
    return F.linear(x, w, None if bias is None else bias.to(x.dtype))


@op("matmul", params={"transpose_x": "bool", "transpose_y": "bool"}, since="iOS15")
def matmul(
    x: torch.Tensor, y: torch.Tensor, *, transpose_x: bool = False, transpose_y: bool = False
) -> torch.Tensor:
    """numpy-style batched matmul; a transpose flag on a rank-1 operand has no effect."""
    if transpose_x and x.dim() >= 2:
        x = x.transpose(-1, -2)
    if transpose_y and y.dim() >= 2:
        y = y.transpose(-1, -2)
    if _is_int(x) and _is_int(y):
        dt = _int_compute_dtype(x)
        return torch.matmul(x.to(dt), y.to(dt)).round().to(torch.int64)
    dt = torch.promote_types(x.dtype, y.dtype)
    return torch.matmul(x.to(dt), y.to(dt))


@op("einsum", params={"equation": "str"}, since="iOS15")
def einsum(values: tuple[torch.Tensor, ...], *, equation: str) -> torch.Tensor:
    """Einstein summation; size-1 dims broadcast. Accepts any equation torch does, not only MIL's two."""
    dt = values[0].dtype
    for v in values[1:]:
        dt = torch.promote_types(dt, v.dtype)
    return torch.einsum(equation, *(v.to(dt) for v in values))
