"""Core builtins: print, len, conversions, assertions, truth."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..format import format_value
from ..values import (
    DTYPES,
    BuiltinError,
    Context,
    Device,
    as_int,
    dtype_arg,
    dtype_name,
    is_number,
    run_op,
    shape_text,
    tensor_arg,
    type_name,
)
from . import builtin


@builtin(ctx=True)
def print_(ctx: Context, *values: Any) -> None:
    """print(a, b, ...) joins values with spaces; print("x = {}", x) fills {} placeholders."""
    out = ctx.stdout()
    if values and isinstance(values[0], str) and "{}" in values[0] and len(values) > 1:
        pieces = values[0].split("{}")
        if len(pieces) - 1 != len(values) - 1:
            raise BuiltinError(
                f"the format string has {len(pieces) - 1} '{{}}' placeholders but {len(values) - 1} values follow"
            )
        text = pieces[0] + "".join(format_value(v) + p for v, p in zip(values[1:], pieces[1:]))
    else:
        text = " ".join(format_value(v) for v in values)
    out.write(text + "\n")
    out.flush()


@builtin()
def range_(*args: Any) -> range:
    """range(n), range(start, stop) or range(start, stop, step)."""
    if not 1 <= len(args) <= 3:
        raise BuiltinError(f"range takes 1 to 3 integers, got {len(args)} arguments")
    ints = [as_int(a, "a range bound") for a in args]
    if len(ints) == 3 and ints[2] == 0:
        raise BuiltinError("range step cannot be 0")
    return range(*ints)


@builtin()
def len_(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        if x.ndim == 0:
            raise BuiltinError("len() of a scalar tensor; use numel or shape")
        return int(x.shape[0])
    if isinstance(x, (list, tuple, str, dict, range)):
        return len(x)
    raise BuiltinError(f"len() needs a tensor, list, string or dict, got {type_name(x)}")


@builtin(method=True)
def item(x: Any) -> Any:
    """The single value of a one-element tensor as a number."""
    if not isinstance(x, torch.Tensor):
        return x
    if x.numel() != 1:
        raise BuiltinError(f"item() needs a tensor with one element, got shape {shape_text(x)}")
    return x.item()


@builtin("int")
def int_(x: Any) -> int:
    v = item(x)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            raise BuiltinError(f"cannot convert {v!r} to int") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise BuiltinError(f"cannot convert {v} to int")
    return int(v)


@builtin("float")
def float_(x: Any) -> float:
    v = item(x)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise BuiltinError(f"cannot convert {format_value(v, True)} to float") from None


@builtin("str")
def str_(x: Any) -> str:
    return format_value(x)


@builtin(ctx=True, method=True)
def round_(ctx: Context, x: Any, decimals: int = 0) -> Any:
    """round(x, 2): numbers or tensors, half to even like torch."""
    d = as_int(decimals, "decimals")
    if isinstance(x, torch.Tensor):
        return run_op(torch.round, x, decimals=d)
    if is_number(x):
        return round(x, d) if d else int(round(x))
    return run_op(torch.round, tensor_arg(ctx, x), decimals=d)


@builtin(ctx=True, method=True)
def to(ctx: Context, x: Any, target: Any) -> torch.Tensor:
    """x.to(float32) casts; x.to(gpu) / x.to(cpu) moves."""
    t = tensor_arg(ctx, x)
    if isinstance(target, (Device, str)) and not (isinstance(target, str) and target in DTYPES):
        return t.to(ctx.torch_device(target))
    return t.to(dtype_arg(target))


@builtin(ctx=True)
def cast(ctx: Context, x: Any, dtype: Any) -> torch.Tensor:
    return tensor_arg(ctx, x).to(dtype_arg(dtype))


@builtin(ctx=True, method=True)
def describe(ctx: Context, x: Any) -> str:
    """A one-line description: Tensor<float16>(shape=[4, 2], device=cpu), or the value's type."""
    if isinstance(x, torch.Tensor):
        return f"Tensor<{dtype_name(x.dtype)}>(shape={list(x.shape)}, device={x.device.type})"
    return f"{type_name(x)} {format_value(x, nested=True)}"


@builtin()
def assert_(cond: Any, message: str = "condition is false") -> None:
    """assert(cond, "message") stops the script with the message when cond is false."""
    if not truth(cond):
        raise BuiltinError(format_value(message))


@builtin(ctx=True, method=True)
def clone(ctx: Context, x: Any) -> torch.Tensor:
    """A copy that later index assignments to x do not change."""
    return tensor_arg(ctx, x).detach().clone()


@builtin(ctx=True, method=True)
def any_(ctx: Context, x: Any) -> bool:
    return bool(run_op(torch.any, tensor_arg(ctx, x)).item())


@builtin(ctx=True, method=True)
def all_(ctx: Context, x: Any) -> bool:
    return bool(run_op(torch.all, tensor_arg(ctx, x)).item())


def truth(v: Any) -> bool:
    """Truth of a condition: a tensor must hold exactly one value."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise BuiltinError(
                f"a condition must be a single value, got a tensor of shape {shape_text(v)}; use all(...) or any(...)"
            )
        return bool(v.item())
    if v is None:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict, range)):
        return bool(v)
    return True
