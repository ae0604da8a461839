"""Tensor creation: tensor, zeros, ones, full, eye, arange, rand, randn, seed, and the typed constructors
f32::zeros, f16::ones, f32::arange, f32::from_array, ... (also under Tensor::, same as the plain names)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..values import (
    DEFAULT_DTYPE,
    BuiltinError,
    Context,
    as_int,
    dtype_arg,
    dtype_name,
    shape_arg,
    to_tensor,
    type_name,
)
from . import builtin
from .core import item

# The original's plain arange makes float32 tensors (it is f32::arange); so do we, unless a dtype is given.
ARANGE_DTYPE = torch.float32


@builtin(ctx=True)
def tensor(ctx: Context, data: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """tensor(data, dtype: float32, device: gpu); float16 by default."""
    return to_tensor(ctx, data, dtype_arg(dtype, None), device)


def _filled(
    ctx: Context, fill: Callable[..., torch.Tensor], shape: tuple, dtype: torch.dtype, device: Any
) -> torch.Tensor:
    return fill(shape_arg(shape), dtype=dtype, device=ctx.torch_device(device))


@builtin(ctx=True)
def zeros(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """zeros([2, 3]) or zeros(2, 3); float16 unless dtype says otherwise."""
    return _filled(ctx, torch.zeros, shape, dtype_arg(dtype), device)


@builtin(ctx=True)
def ones(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """ones([2, 3]) or ones(2, 3); float16 unless dtype says otherwise."""
    return _filled(ctx, torch.ones, shape, dtype_arg(dtype), device)


@builtin(ctx=True)
def full(ctx: Context, shape: Any, value: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """full([2, 3], 7.5): every element the value; float16 unless dtype says otherwise (not in the original)."""
    return torch.full(shape_arg((shape,)), item(value), dtype=dtype_arg(dtype), device=ctx.torch_device(device))


@builtin(ctx=True)
def eye(ctx: Context, n: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """eye(n): the n x n identity matrix (not in the original)."""
    return torch.eye(as_int(n, "n"), dtype=dtype_arg(dtype), device=ctx.torch_device(device))


def _arange(ctx: Context, start: Any, end: Any, step: Any, dtype: torch.dtype, device: Any) -> torch.Tensor:
    lo, hi = (0, start) if end is None else (start, end)
    bounds = [item(v) for v in (lo, hi, step)]
    for b in bounds:
        if isinstance(b, bool) or not isinstance(b, (int, float)):
            raise BuiltinError(f"start, end and step must be numbers, got {type_name(b)}")
    if bounds[2] == 0:
        raise BuiltinError("the step cannot be 0")
    return torch.arange(*bounds, dtype=dtype, device=ctx.torch_device(device))


@builtin(ctx=True)
def arange(
    ctx: Context, start: Any, end: Any = None, step: Any = 1, dtype: Any = None, device: Any = None
) -> torch.Tensor:
    """arange(n) or arange(start, end[, step]): [start, start+step, ...) below end; float32 like the
    original's, unless a dtype is given (the step is our extension)."""
    return _arange(ctx, start, end, step, dtype_arg(dtype, ARANGE_DTYPE), device)


def _random(ctx: Context, fn: Callable, shape: tuple, dtype: Any, device: Any, seed: Any) -> torch.Tensor:
    if seed is not None:
        ctx.generator.manual_seed(as_int(seed, "seed"))
    dt = dtype_arg(dtype)
    if not dt.is_floating_point:
        raise BuiltinError(f"random values need a floating dtype, got {dtype_name(dt)}")
    # Drawn on the CPU in float32 from the script's own generator, so a seed gives the same values everywhere.
    values = fn(shape_arg(shape), generator=ctx.generator, dtype=torch.float32)
    return values.to(dtype=dt, device=ctx.torch_device(device))


@builtin(ctx=True)
def rand(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None, seed: Any = None) -> torch.Tensor:
    """rand([2, 3]): uniform [0, 1) values; seed: n (or seed(n) first) makes them reproducible."""
    return _random(ctx, torch.rand, shape, dtype, device, seed)


@builtin(ctx=True)
def randn(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None, seed: Any = None) -> torch.Tensor:
    """randn([2, 3]): standard normal values; seedable like rand."""
    return _random(ctx, torch.randn, shape, dtype, device, seed)


@builtin(ctx=True)
def seed(ctx: Context, n: Any) -> None:
    """seed(n) makes the following rand/randn draws reproducible."""
    ctx.generator.manual_seed(as_int(n, "seed"))


# ---------------------------------------------------------------------------------------------- Type::name


def _register_typed(ns: str, dtype: torch.dtype) -> None:
    """f32::zeros(shape), f32::ones(shape), f32::arange(n | start, end), f32::from_array(data) for one dtype.
    The original has zeros, ones and arange; from_array is used by its examples but missing there."""
    kind = dtype_name(dtype)

    def zeros_typed(ctx: Context, *shape: Any, device: Any = None) -> torch.Tensor:
        return _filled(ctx, torch.zeros, shape, dtype, device)

    def ones_typed(ctx: Context, *shape: Any, device: Any = None) -> torch.Tensor:
        return _filled(ctx, torch.ones, shape, dtype, device)

    def arange_typed(ctx: Context, start: Any, end: Any = None, step: Any = 1, device: Any = None) -> torch.Tensor:
        return _arange(ctx, start, end, step, dtype, device)

    def from_array_typed(ctx: Context, data: Any, device: Any = None) -> torch.Tensor:
        return to_tensor(ctx, data, dtype, device)

    docs = {
        zeros_typed: f"{ns}::zeros(shape): a {kind} tensor of zeros",
        ones_typed: f"{ns}::ones(shape): a {kind} tensor of ones",
        arange_typed: f"{ns}::arange(n) or {ns}::arange(start, end[, step]): a {kind} range",
        from_array_typed: f"{ns}::from_array([...]): a {kind} tensor of the (nested) list's values",
    }
    for fn, doc in docs.items():
        fn.__doc__ = doc
        builtin(f"{ns}::{fn.__name__.removesuffix('_typed')}", ctx=True)(fn)


_register_typed("f32", torch.float32)
_register_typed("f16", torch.float16)
builtin("Tensor::zeros", ctx=True)(zeros)
builtin("Tensor::ones", ctx=True)(ones)
builtin("Tensor::arange", ctx=True)(arange)


@builtin("Tensor::from_array", ctx=True)
def from_array(ctx: Context, data: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """Tensor::from_array([...]): a tensor of the list's values, float16 unless dtype says otherwise."""
    return to_tensor(ctx, data, dtype_arg(dtype, DEFAULT_DTYPE), device)
