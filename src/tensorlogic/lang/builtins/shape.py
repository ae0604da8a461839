"""Shapes: shape, rank, transpose, permute, reshape, squeeze, unsqueeze, concat, stack, einsum."""

from __future__ import annotations

from typing import Any

import torch

from ..values import BuiltinError, Context, align, as_int, run_op, shape_text, tensor_arg, type_name
from . import builtin


@builtin(ctx=True, method=True)
def shape(ctx: Context, x: Any) -> list[int]:
    return list(tensor_arg(ctx, x).shape)


@builtin(ctx=True, method=True)
def rank(ctx: Context, x: Any) -> int:
    return tensor_arg(ctx, x).ndim


@builtin(ctx=True, method=True)
def transpose(ctx: Context, x: Any, dim0: Any = None, dim1: Any = None) -> torch.Tensor:
    """Swap the last two dimensions, or dim0 and dim1."""
    t = tensor_arg(ctx, x)
    if dim0 is None and dim1 is None:
        return t.transpose(-2, -1) if t.ndim >= 2 else t
    if dim0 is None or dim1 is None:
        raise BuiltinError("transpose takes no dimensions or two (dim0, dim1)")
    return t.transpose(as_int(dim0, "dim0"), as_int(dim1, "dim1"))


@builtin(ctx=True, method=True)
def permute(ctx: Context, x: Any, *dims: Any) -> torch.Tensor:
    return tensor_arg(ctx, x).permute(*_dims_list(dims))


def _dims_list(dims: tuple[Any, ...]) -> list[int]:
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = tuple(dims[0])
    return [as_int(d, "dim") for d in dims]


@builtin(ctx=True, method=True)
def reshape(ctx: Context, x: Any, *shape_: Any) -> torch.Tensor:
    """reshape(x, [2, 3]) or reshape(x, 2, 3); one size may be -1."""
    t = tensor_arg(ctx, x)
    dims = _dims_list(shape_)
    try:
        return t.reshape(dims)
    except RuntimeError:
        raise BuiltinError(f"cannot reshape a tensor of shape {shape_text(t)} ({t.numel()} values) to {dims}") from None


@builtin(ctx=True, method=True)
def squeeze(ctx: Context, x: Any, dim: Any = None) -> torch.Tensor:
    t = tensor_arg(ctx, x)
    return t.squeeze() if dim is None else t.squeeze(as_int(dim, "dim"))


@builtin(ctx=True, method=True)
def unsqueeze(ctx: Context, x: Any, dim: Any) -> torch.Tensor:
    return tensor_arg(ctx, x).unsqueeze(as_int(dim, "dim"))


def _tensor_list(ctx: Context, first: Any, more: tuple[Any, ...]) -> list[torch.Tensor]:
    items = list(first) if isinstance(first, (list, tuple)) and not more else [first, *more]
    if not items:
        raise BuiltinError("needs at least one tensor")
    return align(*[tensor_arg(ctx, t, "each item") for t in items])


@builtin(ctx=True)
def concat(ctx: Context, tensors: Any, *more: Any, dim: Any = 0) -> torch.Tensor:
    """concat([a, b], dim: 0) or concat(a, b, dim: 0)."""
    return run_op(torch.cat, _tensor_list(ctx, tensors, more), dim=as_int(dim, "dim"))


@builtin(ctx=True)
def stack(ctx: Context, tensors: Any, *more: Any, dim: Any = 0) -> torch.Tensor:
    return run_op(torch.stack, _tensor_list(ctx, tensors, more), dim=as_int(dim, "dim"))


@builtin(ctx=True)
def einsum(ctx: Context, equation: Any, *tensors: Any) -> torch.Tensor:
    """einsum("ij,jk->ik", A, B)."""
    if not isinstance(equation, str):
        raise BuiltinError(f"einsum's first argument must be an equation string, got {type_name(equation)}")
    if not tensors:
        raise BuiltinError("einsum needs at least one tensor after the equation")
    ts = align(*[tensor_arg(ctx, t, "each operand") for t in tensors])
    return run_op(torch.einsum, equation, *ts)
