"""Tensor creation: tensor, zeros, ones, full, eye, arange, rand, randn, seed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..values import BuiltinError, Context, as_int, dtype_arg, dtype_name, shape_arg, to_tensor
from . import builtin
from .core import item


@builtin(ctx=True)
def tensor(ctx: Context, data: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """tensor(data, dtype: float32, device: gpu); float16 by default."""
    return to_tensor(ctx, data, dtype_arg(dtype, None), device)


def _filled(ctx: Context, fill: Callable[..., torch.Tensor], shape: tuple, dtype: Any, device: Any) -> torch.Tensor:
    return fill(shape_arg(shape), dtype=dtype_arg(dtype), device=ctx.torch_device(device))


@builtin(ctx=True)
def zeros(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    return _filled(ctx, torch.zeros, shape, dtype, device)


@builtin(ctx=True)
def ones(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    return _filled(ctx, torch.ones, shape, dtype, device)


@builtin(ctx=True)
def full(ctx: Context, shape: Any, value: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    return torch.full(shape_arg((shape,)), item(value), dtype=dtype_arg(dtype), device=ctx.torch_device(device))


@builtin(ctx=True)
def eye(ctx: Context, n: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    return torch.eye(as_int(n, "n"), dtype=dtype_arg(dtype), device=ctx.torch_device(device))


@builtin(ctx=True)
def arange(ctx: Context, start: Any, end: Any = None, step: Any = 1, dtype: Any = None, device: Any = None):
    """arange(n) or arange(start, end, step); float16 unless a dtype is given."""
    lo, hi = (0, start) if end is None else (start, end)
    return torch.arange(item(lo), item(hi), item(step), dtype=dtype_arg(dtype), device=ctx.torch_device(device))


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
    """Uniform [0, 1) values; seed: n (or seed(n) first) makes them reproducible."""
    return _random(ctx, torch.rand, shape, dtype, device, seed)


@builtin(ctx=True)
def randn(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None, seed: Any = None) -> torch.Tensor:
    """Standard normal values; seedable like rand."""
    return _random(ctx, torch.randn, shape, dtype, device, seed)


@builtin(ctx=True)
def seed(ctx: Context, n: Any) -> None:
    """Seed rand/randn for reproducible scripts."""
    ctx.generator.manual_seed(as_int(n, "seed"))
