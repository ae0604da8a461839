"""Element-wise math, activations, softmax, rounding, clamp, and the arithmetic builtins (add, matmul, ...).

Each element-wise builtin takes a tensor (or a list, made a tensor) and keeps its dtype, or a plain number and
returns a number: abs(-3) is 3, floor(2.7) is 2 (an int, as in the original), sqrt(2.0) a float computed in
float64. The original accepts only tensors for exp/log/sqrt/sin/cos/tan/tanh/sigmoid/relu/gelu/pow and only
numbers for abs/floor/ceil/round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import torch
import torch.nn.functional as F

from ..values import (
    DEFAULT_DTYPE,
    BuiltinError,
    Context,
    as_int,
    is_number,
    narrow,
    run_op,
    shape_text,
    tensor_arg,
    to_tensor,
    type_name,
)
from . import builtin

HALF_TYPES = (torch.float16, torch.bfloat16)


def _is_num(x: Any) -> bool:
    return is_number(x) and not isinstance(x, bool)


def _via_float64(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Any], float]:
    """The number version of a tensor function, evaluated in float64 so that it gives nan/inf where the
    tensor version does (log(-1.0) is nan, exp(1000.0) is inf) instead of raising."""

    def number_fn(v: Any) -> float:
        return float(fn(torch.tensor(float(v), dtype=torch.float64)).item())

    return number_fn


def _finite(v: float, what: str) -> float:
    if not math.isfinite(v):
        raise BuiltinError(f"cannot {what} {v} to an integer")
    return v


def _floor_number(v: Any) -> int:
    return v if isinstance(v, int) else math.floor(_finite(v, "floor"))


def _ceil_number(v: Any) -> int:
    return v if isinstance(v, int) else math.ceil(_finite(v, "ceil"))


def _relu_number(v: Any) -> Any:
    return v if v > 0 else type(v)(0)


def _gelu(t: torch.Tensor) -> torch.Tensor:
    return F.gelu(t, approximate="tanh")


def larger_number(a: Any, b: Any) -> Any:
    """The larger of two numbers; a float if either is one (max(2, 1.5) is 2.0, as in the original)."""
    v = a if a >= b else b
    return float(v) if isinstance(a, float) or isinstance(b, float) else v


def smaller_number(a: Any, b: Any) -> Any:
    v = a if a <= b else b
    return float(v) if isinstance(a, float) or isinstance(b, float) else v


def _unary(name: str, tensor_fn: Callable, number_fn: Callable[[Any], Any], doc: str) -> None:
    def op(ctx: Context, x: Any) -> Any:
        if _is_num(x):
            return number_fn(x)
        return run_op(tensor_fn, tensor_arg(ctx, x))

    op.__doc__ = doc
    op.__name__ = name
    builtin(name, ctx=True, method=True)(op)


for _name, _tensor_fn, _number_fn, _doc in (
    ("relu", torch.relu, _relu_number, "relu(x): max(x, 0) element-wise"),
    ("gelu", _gelu, _via_float64(_gelu), "gelu(x): the original's tanh form 0.5x(1 + tanh(0.79788(x + 0.044715x^3)))"),
    ("sigmoid", torch.sigmoid, _via_float64(torch.sigmoid), "sigmoid(x): 1 / (1 + exp(-x))"),
    ("tanh", torch.tanh, _via_float64(torch.tanh), "tanh(x): hyperbolic tangent"),
    ("exp", torch.exp, _via_float64(torch.exp), "exp(x): e ** x"),
    ("log", torch.log, _via_float64(torch.log), "log(x): natural logarithm (nan below 0)"),
    ("sqrt", torch.sqrt, _via_float64(torch.sqrt), "sqrt(x): square root (nan below 0)"),
    ("sin", torch.sin, _via_float64(torch.sin), "sin(x): sine of radians"),
    ("cos", torch.cos, _via_float64(torch.cos), "cos(x): cosine of radians"),
    ("tan", torch.tan, _via_float64(torch.tan), "tan(x): tangent of radians"),
    ("abs", torch.abs, abs, "abs(x): absolute value; an int stays an int"),
    ("neg", torch.neg, lambda v: -v, "neg(x): -x"),
    ("floor", torch.floor, _floor_number, "floor(x): rounded down; a number gives an int"),
    ("ceil", torch.ceil, _ceil_number, "ceil(x): rounded up; a number gives an int"),
):
    _unary(_name, _tensor_fn, _number_fn, _doc)


def _round_number(v: Any, d: int) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        if d <= 0:
            raise BuiltinError(f"cannot round {v} to an integer")
        return v
    # Decimal's ROUND_HALF_UP sends ties away from zero (2.5 -> 3, -2.5 -> -3), as Rust's f64::round does.
    q = Decimal(repr(v) if isinstance(v, float) else v).quantize(Decimal(1).scaleb(-d), rounding=ROUND_HALF_UP)
    return int(q) if d <= 0 or isinstance(v, int) else float(q)


@builtin("round", ctx=True, method=True)
def round_(ctx: Context, x: Any, decimals: Any = 0) -> Any:
    """round(x) or round(x, decimals): ties away from zero (2.5 -> 3) as in the original; a number rounded to
    0 decimals is an int; tensors keep their dtype (decimals are our extension)."""
    d = as_int(decimals, "decimals")
    if _is_num(x):
        return _round_number(x, d)
    t = tensor_arg(ctx, x)
    if not t.is_floating_point():
        return t
    scale = 10.0**d
    wide = t.double()
    return (torch.sign(wide) * torch.floor(wide.abs() * scale + 0.5) / scale).to(t.dtype)


@builtin(ctx=True, method=True)
def clamp(ctx: Context, x: Any, min: Any = None, max: Any = None) -> Any:
    """clamp(x, lo, hi), clamp(x, min: 0.0): values limited to [min, max] (not in the original)."""
    # The parameters are named min and max because scripts pass them by those names.
    lo, hi = min, max
    if lo is None and hi is None:
        raise BuiltinError("needs min, max or both")
    for bound in (lo, hi):
        if bound is not None and not _is_num(bound):
            raise BuiltinError(f"the bounds must be numbers, got {type_name(bound)}")
    if lo is not None and hi is not None and lo > hi:
        raise BuiltinError(f"min {lo} is above max {hi}")
    if _is_num(x):
        v = x if lo is None or x >= lo else lo
        return v if hi is None or v <= hi else hi
    return run_op(torch.clamp, tensor_arg(ctx, x), min=lo, max=hi)


def _soft(ctx: Context, fn: Callable, x: Any, dim: Any) -> torch.Tensor:
    t = tensor_arg(ctx, x)
    if not t.is_floating_point():
        t = t.to(DEFAULT_DTYPE)
    d = as_int(dim, "dim")
    if t.ndim and not -t.ndim <= d < t.ndim:
        raise BuiltinError(f"dim {d} is out of range for a tensor of shape {shape_text(t)}")
    # Exponentials and their sum in float32, the result in the input's dtype.
    wide = fn(t.float() if t.dtype in HALF_TYPES else t, dim=d)
    return wide.to(t.dtype)


@builtin(ctx=True, method=True)
def softmax(ctx: Context, x: Any, dim: Any = -1) -> torch.Tensor:
    """softmax(x, dim=-1): exp(x) / sum(exp(x)) along dim (the original ignores dim and uses the last)."""
    return _soft(ctx, F.softmax, x, dim)


@builtin(ctx=True, method=True)
def log_softmax(ctx: Context, x: Any, dim: Any = -1) -> torch.Tensor:
    """log_softmax(x, dim=-1): log of softmax, computed stably (not in the original)."""
    return _soft(ctx, F.log_softmax, x, dim)


# ---------------------------------------------------------------------------------------------- binary


def _operand(ctx: Context, v: Any, other: torch.Tensor) -> torch.Tensor:
    """The non-tensor side of a binary op: a list becomes a tensor of the other side's dtype, a number a 0-d
    tensor (which, as in torch, does not change the other side's dtype within its kind)."""
    if isinstance(v, (list, tuple)):
        return to_tensor(ctx, v, other.dtype).to(other.device)
    if is_number(v):
        return torch.tensor(v, device=other.device)
    raise BuiltinError(f"needs tensors or numbers, got {type_name(v)}")


def binary_op(ctx: Context, fn: Callable, a: Any, b: Any) -> Any:
    """Apply a torch binary op to tensors, lists and numbers; with no tensor, lists become float16 tensors."""
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        a = tensor_arg(ctx, a, "a")
    if not isinstance(b, torch.Tensor):
        b = _operand(ctx, b, a)
    elif not isinstance(a, torch.Tensor):
        a = _operand(ctx, a, b)
    return run_op(fn, a, b)


def _divide_numbers(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        if b == 0:
            raise BuiltinError("integer division by zero")
        q = abs(a) // abs(b)  # truncates toward zero, as the original's integer division
        return q if (a >= 0) == (b >= 0) else -q
    return float(torch.tensor(float(a), dtype=torch.float64) / float(b))


def _power_numbers(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        return a**b
    return float(torch.tensor(float(a), dtype=torch.float64) ** float(b))


def _binary(name: str, tensor_fn: Callable, number_fn: Callable[[Any, Any], Any], doc: str) -> None:
    def op(ctx: Context, a: Any, b: Any) -> Any:
        if _is_num(a) and _is_num(b):
            return number_fn(a, b)
        return binary_op(ctx, tensor_fn, a, b)

    op.__doc__ = doc
    op.__name__ = name
    builtin(name, ctx=True, method=True)(op)


for _name, _tensor_fn, _number_fn, _doc in (
    ("add", torch.add, lambda a, b: a + b, "add(a, b): a + b; x.add(y)"),
    ("sub", torch.sub, lambda a, b: a - b, "sub(a, b): a - b"),
    ("mul", torch.mul, lambda a, b: a * b, "mul(a, b): a * b element-wise"),
    ("div", torch.div, _divide_numbers, "div(a, b): a / b element-wise; two ints truncate toward zero"),
    ("pow", torch.pow, _power_numbers, "pow(x, e): x ** e element-wise; x and e may be tensors or numbers"),
    ("maximum", torch.maximum, larger_number, "maximum(a, b): the larger, element-wise"),
    ("minimum", torch.minimum, smaller_number, "minimum(a, b): the smaller, element-wise"),
):
    _binary(_name, _tensor_fn, _number_fn, _doc)


@builtin(ctx=True, method=True)
def matmul(ctx: Context, a: Any, b: Any) -> torch.Tensor:
    """matmul(a, b): the matrix product (batched over leading dims); float16 operands are multiplied and
    summed in float32 and the result cast back (kept in float32, with a warning, if float16 overflows)."""
    ta, tb = tensor_arg(ctx, a, "a"), tensor_arg(ctx, b, "b")
    if ta.ndim == 0 or tb.ndim == 0:
        raise BuiltinError(f"needs tensors with at least one dimension, got {shape_text(ta)} and {shape_text(tb)}")
    k_a, k_b = ta.shape[-1], tb.shape[-2] if tb.ndim > 1 else tb.shape[0]
    if k_a != k_b:
        raise BuiltinError(f"shapes {shape_text(ta)} and {shape_text(tb)} do not match ({k_a} vs {k_b})")
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    if dtype in HALF_TYPES:
        return narrow(ctx, "matmul", run_op(torch.matmul, ta.float(), tb.float()), dtype)
    return run_op(torch.matmul, ta.to(dtype), tb.to(dtype))
