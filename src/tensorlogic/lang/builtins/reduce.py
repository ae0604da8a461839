"""Reductions: sum, mean, max, min, argmax, argmin, topk.

sum/mean/max/min of a whole tensor give a number, as in the original (a 0-d tensor when the input carries a
gradient, so that training objectives stay differentiable); with ``dim`` (one or a list) they reduce those
dimensions, ``keepdim`` keeping them as size 1 (the original has no dim for these). float16 is summed in
float32; a float16 result that would overflow (sum(ones(300, 300)) is 90000 > 65504) is kept in float32,
with a warning naming the script line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..values import (
    DEFAULT_DTYPE,
    BuiltinError,
    Context,
    Record,
    as_int,
    int_list,
    is_number,
    narrow,
    run_op,
    shape_text,
    tensor_arg,
)
from . import builtin
from .math import HALF_TYPES, binary_op, larger_number, smaller_number


def _dims(t: torch.Tensor, dim: Any) -> list[int]:
    dims = int_list(dim, "dim") if isinstance(dim, (list, tuple, torch.Tensor)) else [as_int(dim, "dim")]
    n = max(t.ndim, 1)
    for d in dims:
        if not -n <= d < n:
            raise BuiltinError(f"dim {d} is out of range for a tensor of shape {shape_text(t)}")
    if len({d % n for d in dims}) != len(dims):
        raise BuiltinError(f"dims {dims} name a dimension twice")
    return dims


def _accumulate(
    ctx: Context, name: str, fn: Callable, t: torch.Tensor, dim: Any, keepdim: Any, out_dtype: torch.dtype
) -> torch.Tensor:
    """fn over all of t or over dim, computed in float32 for half types and narrowed back to out_dtype."""
    wide = t.float() if t.dtype in HALF_TYPES or out_dtype in HALF_TYPES else t
    if dim is None:
        out = fn(wide, dim=list(range(t.ndim)), keepdim=True) if keepdim and t.ndim else fn(wide)
    else:
        out = fn(wide, dim=_dims(t, dim), keepdim=bool(keepdim))
    out = narrow(ctx, name, out, out_dtype) if out_dtype in HALF_TYPES else out
    return _scalar(out) if dim is None and not keepdim else out


def _scalar(t: torch.Tensor) -> Any:
    """A whole-tensor reduction is a number, as in the original (``sum(x) -> Number``); a result that
    carries a gradient stays a 0-d tensor so that training objectives can be differentiated."""
    if t.requires_grad:
        return t
    value = t.item()
    return float(value) if t.is_floating_point() else value


@builtin(ctx=True, method=True)
def sum_(ctx: Context, x: Any, dim: Any = None, keepdim: Any = False) -> Any:
    """sum(x): a number (int for int tensors); sum(x, dim[, keepdim]): a tensor, int and bool tensors sum to
    int64, floats keep their dtype. Half types accumulate in float32."""
    t = tensor_arg(ctx, x)
    return _accumulate(ctx, "sum", torch.sum, t, dim, keepdim, t.dtype)


@builtin(ctx=True, method=True)
def mean(ctx: Context, x: Any, dim: Any = None, keepdim: Any = False) -> Any:
    """mean(x): a float; mean(x, dim[, keepdim]): a tensor (of an int tensor: float16, the default dtype)."""
    t = tensor_arg(ctx, x)
    out_dtype = t.dtype if t.is_floating_point() else DEFAULT_DTYPE
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return _accumulate(ctx, "mean", torch.mean, t, dim, keepdim, out_dtype)


def _extreme(ctx: Context, name: str, x: Any, dim: Any, keepdim: Any, pick: Callable, reduce: Callable) -> Any:
    numbers = [v for v in (x, dim) if v is not None]
    if all(is_number(v) and not isinstance(v, bool) for v in numbers):
        return numbers[0] if len(numbers) == 1 else pick(x, dim)
    # max(x, y) of a tensor and another tensor or a float is element-wise; an int second argument is a dim.
    if isinstance(dim, (torch.Tensor, float)) or (is_number(x) and dim is not None):
        return binary_op(ctx, torch.maximum if name == "max" else torch.minimum, x, dim)
    t = tensor_arg(ctx, x)
    if t.numel() == 0:
        raise BuiltinError("the tensor is empty")
    if dim is None and not keepdim:
        return _scalar(run_op(reduce, t))
    return _accumulate(ctx, name, reduce, t, dim, keepdim, t.dtype)


@builtin(ctx=True, method=True)
def max_(ctx: Context, x: Any, dim: Any = None, keepdim: Any = False) -> Any:
    """max(x): the largest value (a number); max(x, dim[, keepdim]): along dim; max(a, b) of two numbers is
    a number (an int if both are ints), of a tensor and a tensor or float the element-wise maximum."""
    return _extreme(ctx, "max", x, dim, keepdim, larger_number, torch.amax)


@builtin(ctx=True, method=True)
def min_(ctx: Context, x: Any, dim: Any = None, keepdim: Any = False) -> Any:
    """min(x): the smallest value; min(x, dim[, keepdim]); min(a, b) of numbers; element-wise like max."""
    return _extreme(ctx, "min", x, dim, keepdim, smaller_number, torch.amin)


def _arg_reduce(ctx: Context, x: Any, dim: Any, keepdim: Any, fn: Callable) -> Any:
    t = tensor_arg(ctx, x)
    if t.numel() == 0:
        raise BuiltinError("the tensor is empty")
    if dim is None:
        flat = int(run_op(fn, t).item())
        return torch.full([1] * t.ndim, flat, dtype=torch.int64, device=t.device) if keepdim else flat
    if isinstance(dim, (list, tuple)):
        raise BuiltinError("takes one dim, not a list")
    (d,) = _dims(t, dim)
    return run_op(fn, t, dim=d, keepdim=bool(keepdim))


@builtin(ctx=True, method=True)
def argmax(ctx: Context, x: Any, dim: Any = None, keepdim: Any = False) -> Any:
    """argmax(x): the index of the largest value in the flattened tensor, an int; argmax(x, dim[, keepdim]):
    an int64 tensor of indices along dim (the original returns float indices and ignores keepdim: true)."""
    return _arg_reduce(ctx, x, dim, keepdim, torch.argmax)


@builtin(ctx=True, method=True)
def argmin(ctx: Context, x: Any, dim: Any = None, keepdim: Any = False) -> Any:
    """argmin(x) / argmin(x, dim[, keepdim]): like argmax, for the smallest value."""
    return _arg_reduce(ctx, x, dim, keepdim, torch.argmin)


@builtin(ctx=True, method=True)
def topk(ctx: Context, x: Any, k: Any, dim: Any = -1, largest: Any = True) -> Record:
    """topk(x, k, dim=-1): the k largest values along dim, a record with .values and .indices (not in the
    original)."""
    t = tensor_arg(ctx, x)
    if t.ndim == 0:
        raise BuiltinError("needs a tensor with at least one dimension")
    n = as_int(k, "k")
    (d,) = _dims(t, dim)
    d %= t.ndim
    size = t.shape[d]
    if not 0 <= n <= size:
        raise BuiltinError(f"k={n} but dimension {d} has only {size} values")
    out = run_op(torch.topk, t, n, dim=d, largest=bool(largest))
    return Record(values=out.values, indices=out.indices)
