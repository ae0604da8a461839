"""Core builtins: print, panic, assertions, len/get/append, ranges, conversions, cleanup and tensor buffers."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..format import format_value
from ..values import (
    APPROX_TOL,
    DTYPES,
    BuiltinError,
    Context,
    Device,
    TensorBuffer,
    Vec,
    as_int,
    dtype_arg,
    dtype_name,
    is_number,
    run_op,
    shape_arg,
    shape_text,
    tensor_arg,
    truth,
    type_name,
)
from . import builtin

# ---------------------------------------------------------------------------------------------- output


def fill_placeholders(ctx: Context, text: str, values: tuple[Any, ...]) -> str:
    """``text`` with each ``{}`` replaced by the next value, as the original's print and panic do.

    Too few values is an error; values beyond the placeholders are not shown (the original drops them
    silently; we also warn).
    """
    pieces = text.split("{}")
    wanted = len(pieces) - 1
    holes = f"{wanted} '{{}}' placeholder" + ("" if wanted == 1 else "s")
    if len(values) < wanted:
        raise BuiltinError(f"the format string has {holes} but {len(values)} values follow")
    if len(values) > wanted:
        ctx.warn(f"{len(values)} values for {holes}; the extra values are not shown")
    return pieces[0] + "".join(format_value(v) + p for v, p in zip(values, pieces[1:]))


@builtin(ctx=True)
def print_(ctx: Context, *values: Any) -> None:
    """print(a, b, ...) prints the values joined by spaces; print("x = {}, y = {}", x, y) fills the placeholders
    when the first value is a string containing {} (as in the original, values beyond the placeholders are
    dropped, with a warning)."""
    if values and isinstance(values[0], str) and "{}" in values[0] and len(values) > 1:
        text = fill_placeholders(ctx, values[0], values[1:])
    else:
        text = " ".join(format_value(v) for v in values)
    out = ctx.stdout()
    out.write(text + "\n")
    out.flush()


@builtin(ctx=True)
def panic(ctx: Context, message: Any, *values: Any) -> None:
    """panic("bad value {}", x) stops the script with the formatted message as its error (tl exits with status 2)."""
    if not isinstance(message, str):
        raise BuiltinError(format_value(message))
    raise BuiltinError(fill_placeholders(ctx, message, values) if values else message)


# ---------------------------------------------------------------------------------------------- assertions


@builtin()
def assert_(cond: Any, message: Any = None) -> None:
    """assert(cond) or assert(cond, "message") stops the script when cond is false (the original takes no
    message)."""
    if not truth(cond):
        raise BuiltinError("assertion failed" if message is None else format_value(message))


def _as_compared(v: Any) -> Any:
    """A Vec compares as the list of its items."""
    return v.items if isinstance(v, Vec) else v


def _equal(a: Any, b: Any) -> bool:
    a, b = _as_compared(a), _as_compared(b)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        try:
            ta, tb = (torch.as_tensor(x).detach().cpu() for x in (a, b))
        except (TypeError, ValueError, RuntimeError):  # a tensor against a string, a list of strings...
            return False
        if ta.shape != tb.shape:
            return False
        wide = torch.complex128 if ta.is_complex() or tb.is_complex() else torch.float64
        return bool(torch.equal(ta.to(wide), tb.to(wide)))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if is_number(a) and is_number(b):
        return a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@builtin()
def assert_eq(left: Any, right: Any) -> None:
    """assert_eq(a, b): numbers by value (1 == 1.0, unlike the original), strings, lists and Vecs item by item,
    tensors by shape and exact values (any dtypes)."""
    if not _equal(left, right):
        raise BuiltinError(f"assertion failed: {format_value(left, True)} != {format_value(right, True)}")


@builtin(ctx=True)
def assert_about_eq(ctx: Context, left: Any, right: Any, tol: Any = None) -> None:
    """assert_about_eq(a, b, tol): every |a - b| < tol, for numbers or tensors of one shape. Without tol
    (the original requires it) the dtype's tolerance of '≈' applies: |a - b| <= atol + rtol * |b|."""
    operands = []
    for v in (left, right):
        v = _as_compared(v)
        if not (is_number(v) or isinstance(v, (torch.Tensor, list))) or isinstance(v, bool):
            raise BuiltinError(f"compares numbers or tensors, got {type_name(v)}")
        operands.append(tensor_arg(ctx, v) if not is_number(v) else v)
    a, b = operands
    ta = torch.as_tensor(a).detach().cpu()
    tb = torch.as_tensor(b).detach().cpu()
    shown = f"{format_value(left, True)} and {format_value(right, True)}"
    if ta.shape != tb.shape:
        raise BuiltinError(f"assertion failed: {shown} have different shapes {shape_text(ta)} and {shape_text(tb)}")
    diff = (ta.double() - tb.double()).abs()
    if tol is None:
        narrowest = min((t.dtype for t in (ta, tb) if t.dtype in APPROX_TOL), key=lambda d: d.itemsize, default=None)
        rtol, atol = APPROX_TOL.get(narrowest, (1e-9, 1e-12))
        ok = bool((diff <= atol + rtol * tb.double().abs()).all())
        within = f"the {dtype_name(narrowest)} tolerance" if narrowest else "1e-9"
    else:
        if not is_number(tol) or isinstance(tol, bool) or tol < 0:
            raise BuiltinError(f"the tolerance must be a number >= 0, got {format_value(tol, True)}")
        ok = bool((diff < tol).all())
        within = f"{tol}"
    if not ok:
        raise BuiltinError(f"assertion failed: {shown} differ by up to {float(diff.max()):g} (within {within})")


# ---------------------------------------------------------------------------------------------- collections


@builtin()
def len_(x: Any) -> int:
    """len(x): items of a list or Vec, characters of a string, the first dimension of a tensor."""
    if isinstance(x, torch.Tensor):
        if x.ndim == 0:
            raise BuiltinError("a scalar tensor has no length; use numel or shape")
        return int(x.shape[0])
    if isinstance(x, (list, tuple, str, dict, range, Vec)):
        return len(x)
    raise BuiltinError(f"needs a list, Vec, string or tensor, got {type_name(x)}")


@builtin()
def get(collection: Any, index: Any) -> Any:
    """get(list_or_vec, i): the item at i; negative i counts from the end."""
    if isinstance(collection, Vec):
        return collection[index]
    if not isinstance(collection, (list, tuple)):
        raise BuiltinError(f"needs a list or a Vec, got {type_name(collection)}")
    i, n = as_int(index, "the index"), len(collection)
    if not -n <= i < n:
        raise BuiltinError(f"index {i} is out of range for a list of length {n}")
    return collection[i]


@builtin()
def append(collection: Any, value: Any) -> list:
    """append(list, x) returns a new list with x at the end (the list itself is unchanged). The original's
    append works on token-id lists only; on a Vec use v.push(x)."""
    if isinstance(collection, Vec):
        raise BuiltinError(f"does not change an {collection.name}; use v.push(x)")
    if not isinstance(collection, (list, tuple)):
        raise BuiltinError(f"needs a list, got {type_name(collection)}")
    return [*collection, value]


@builtin()
def range_(*bounds: Any) -> list[int]:
    """range(n), range(start, stop) or range(start, stop, step): a list of ints (not in the original)."""
    if not 1 <= len(bounds) <= 3:
        raise BuiltinError(f"takes 1 to 3 integers, got {len(bounds)} arguments")
    ints = [as_int(b, "a range bound") for b in bounds]
    if len(ints) == 3 and ints[2] == 0:
        raise BuiltinError("the step cannot be 0")
    return list(range(*ints))


@builtin()
def range_i(start: Any, end: Any = None) -> list[int]:
    """range_i(n) is [0, 1, ..., n-1]; range_i(start, end) is [start, ..., end-1]."""
    lo, hi = (0, start) if end is None else (start, end)
    return list(range(as_int(lo, "start"), as_int(hi, "end")))


# ---------------------------------------------------------------------------------------------- conversions


@builtin(method=True)
def item(x: Any) -> Any:
    """The single value of a one-element tensor as a number."""
    if not isinstance(x, torch.Tensor):
        return x
    if x.numel() != 1:
        raise BuiltinError(f"needs a tensor with one element, got shape {shape_text(x)}")
    return x.item()


def _integral(v: float) -> int:
    if not math.isfinite(v):
        raise BuiltinError(f"cannot convert {format_value(v)} to int")
    return int(v)  # truncates toward zero, as the original's `as i64`


@builtin("int")
def int_(x: Any) -> int:
    """int(x): a number, one-element tensor or numeric string as an int (floats truncate toward zero)."""
    v = item(x)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise BuiltinError(f"cannot convert {v!r} to int") from None
    if isinstance(v, float):
        return _integral(v)
    if isinstance(v, int):
        return int(v)
    raise BuiltinError(f"cannot convert {type_name(v)} to int")


@builtin()
def to_int(x: Any) -> int:
    """to_int(x): int, float (truncated toward zero), one-element tensor or numeric string as an int."""
    if isinstance(x, bool) or not (is_number(x) or isinstance(x, (str, torch.Tensor))):
        raise BuiltinError(f"needs a number, a one-element tensor or a string, got {type_name(x)}")
    return int_(x)


@builtin("float")
def float_(x: Any) -> float:
    """float(x): a number, one-element tensor or numeric string as a float."""
    v = item(x)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise BuiltinError(f"cannot convert {format_value(v, True)} to float") from None


@builtin(ctx=True, method=True)
def to(ctx: Context, x: Any, target: Any) -> torch.Tensor:
    """x.to(float32) casts; x.to(gpu) / x.to(cpu) moves."""
    t = tensor_arg(ctx, x)
    if isinstance(target, (Device, str)) and not (isinstance(target, str) and target in DTYPES):
        return t.to(ctx.torch_device(target))
    return t.to(dtype_arg(target))


@builtin(ctx=True)
def cast(ctx: Context, x: Any, dtype: Any) -> torch.Tensor:
    """cast(x, float32): x converted to the dtype."""
    return tensor_arg(ctx, x).to(dtype_arg(dtype))


@builtin(ctx=True, method=True)
def describe(ctx: Context, x: Any) -> str:
    """A one-line description: Tensor<float16>(shape=[4, 2], device=cpu), or the value's type and value."""
    if isinstance(x, torch.Tensor):
        return f"Tensor<{dtype_name(x.dtype)}>(shape={list(x.shape)}, device={x.device.type})"
    return f"{type_name(x)} {format_value(x, nested=True)}"


@builtin(ctx=True, method=True)
def clone(ctx: Context, x: Any) -> torch.Tensor:
    """A copy that later index assignments to x do not change."""
    return tensor_arg(ctx, x).detach().clone()


@builtin(ctx=True, method=True)
def any_(ctx: Context, x: Any) -> bool:
    """any(x): whether some element is non-zero."""
    return bool(run_op(torch.any, tensor_arg(ctx, x)).item())


@builtin(ctx=True, method=True)
def all_(ctx: Context, x: Any) -> bool:
    """all(x): whether every element is non-zero."""
    return bool(run_op(torch.all, tensor_arg(ctx, x)).item())


# ---------------------------------------------------------------------------------------------- memory


@builtin()
def cleanup(*keep: Any) -> None:
    """cleanup("a", "b"): accepted for the original's scripts; Python frees unused tensors by itself."""
    for name in keep:
        if not isinstance(name, str):
            raise BuiltinError(f"takes variable names as strings, got {type_name(name)}")


@builtin()
def new_tensor_buffer(capacity: Any) -> TensorBuffer:
    """new_tensor_buffer(bytes): a TensorBuffer; buf.alloc(shape, count, elem_size) reserves slots,
    buf.zeros(shape) / buf.ones(shape) make float16 tensors, print(buf) shows capacity and use in MB."""
    n = as_int(capacity, "the capacity")
    if n < 0:
        raise BuiltinError(f"the capacity must be >= 0 bytes, got {n}")
    return TensorBuffer(n)


def _buffer_shape(shape: Any) -> tuple[int, ...]:
    return tuple(shape_arg((shape,)))


def _buffer_zeros(ctx: Context, buf: TensorBuffer, shape: Any) -> torch.Tensor:
    dims = _buffer_shape(shape)
    buf.take(dims, 2)
    return torch.zeros(dims, dtype=torch.float16, device=ctx.torch_device())


def _buffer_ones(ctx: Context, buf: TensorBuffer, shape: Any) -> torch.Tensor:
    dims = _buffer_shape(shape)
    buf.take(dims, 2)
    return torch.ones(dims, dtype=torch.float16, device=ctx.torch_device())


def _buffer_alloc(ctx: Context, buf: TensorBuffer, shape: Any, count: Any, elem_size: Any) -> None:
    dims = _buffer_shape(shape)
    n, size = as_int(count, "count"), as_int(elem_size, "elem_size")
    if n < 0 or size <= 0:
        raise BuiltinError(f"needs count >= 0 and elem_size > 0, got {n} and {size}")
    buf.reserve(math.prod(dims) * size * n)
    # Like the original, a new alloc for a shape replaces the slots reserved for it before.
    buf.slots[dims] = n


# Methods of a TensorBuffer value (attrs.get_attr binds them): all take the run's context first.
TENSOR_BUFFER_METHODS = {"zeros": _buffer_zeros, "ones": _buffer_ones, "alloc": _buffer_alloc}
