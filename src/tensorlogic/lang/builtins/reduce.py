"""Reductions: sum, mean, max, min, argmax, argmin, topk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..values import DEFAULT_DTYPE, BuiltinError, Context, Record, as_int, run_op, tensor_arg
from . import builtin


def _reduce(ctx: Context, x: Any, dim: Any, keepdim: Any, fn: Callable, values_only: bool) -> torch.Tensor:
    t = tensor_arg(ctx, x)
    if dim is None:
        return run_op(fn, t)
    d = _dims(dim)
    if values_only:
        if len(d) != 1:
            raise BuiltinError("max/min reduce one dimension at a time")
        return run_op(fn, t, dim=d[0], keepdim=bool(keepdim)).values
    return run_op(fn, t, dim=d, keepdim=bool(keepdim))


def _dims(dim: Any) -> list[int]:
    return [as_int(d, "dim") for d in dim] if isinstance(dim, (list, tuple)) else [as_int(dim, "dim")]


@builtin(ctx=True, method=True)
def sum_(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    """Sum of all elements, or along dim."""
    return _reduce(ctx, x, dim, keepdim, torch.sum, False)


@builtin(ctx=True, method=True)
def mean(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    t = tensor_arg(ctx, x)
    if not t.is_floating_point():
        t = t.to(DEFAULT_DTYPE)
    return _reduce(ctx, t, dim, keepdim, torch.mean, False)


@builtin(ctx=True, method=True)
def max_(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    return _reduce(ctx, x, dim, keepdim, torch.max, True)


@builtin(ctx=True, method=True)
def min_(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    return _reduce(ctx, x, dim, keepdim, torch.min, True)


def _arg_reduce(ctx: Context, x: Any, dim: Any, keepdim: Any, fn: Callable) -> Any:
    t = tensor_arg(ctx, x)
    if t.numel() == 0:
        raise BuiltinError("argmax/argmin of an empty tensor")
    if dim is None:
        return int(run_op(fn, t).item())
    return run_op(fn, t, dim=as_int(dim, "dim"), keepdim=bool(keepdim))


@builtin(ctx=True, method=True)
def argmax(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    """Index of the largest value (of the flattened tensor, as an int), or per dim (a tensor)."""
    return _arg_reduce(ctx, x, dim, keepdim, torch.argmax)


@builtin(ctx=True, method=True)
def argmin(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    return _arg_reduce(ctx, x, dim, keepdim, torch.argmin)


@builtin(ctx=True, method=True)
def topk(ctx: Context, x: Any, k: Any, dim: Any = -1, largest: bool = True) -> Record:
    """The k largest values along dim (the last by default): a record with .values and .indices."""
    t = tensor_arg(ctx, x)
    n, d = as_int(k, "k"), as_int(dim, "dim")
    if t.ndim == 0:
        raise BuiltinError("topk needs a tensor with at least one dimension")
    size = t.shape[d]
    if not 0 <= n <= size:
        raise BuiltinError(f"topk: k={n} but dimension {d} has only {size} values")
    out = run_op(torch.topk, t, n, dim=d, largest=bool(largest))
    return Record(values=out.values, indices=out.indices)
