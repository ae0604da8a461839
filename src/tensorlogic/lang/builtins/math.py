"""Element-wise math, activations, softmax and the binary operators on tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..values import Builtin, Context, as_int, run_op, tensor_arg, to_tensor
from . import BUILTINS, builtin


def _unary(name: str, fn: Callable[[torch.Tensor], torch.Tensor], doc: str) -> None:
    def op(ctx: Context, x: Any) -> torch.Tensor:
        return run_op(fn, tensor_arg(ctx, x))

    op.__doc__ = doc
    op.__name__ = name
    BUILTINS[name] = Builtin(name, op, True, True)


for _name, _fn, _doc in (
    ("relu", torch.relu, "max(x, 0)"),
    ("gelu", F.gelu, "GELU (exact, erf form)"),
    ("sigmoid", torch.sigmoid, "1 / (1 + exp(-x))"),
    ("tanh", torch.tanh, "hyperbolic tangent"),
    ("exp", torch.exp, "e ** x"),
    ("log", torch.log, "natural logarithm"),
    ("sqrt", torch.sqrt, "square root"),
    ("abs", torch.abs, "absolute value"),
    ("sin", torch.sin, "sine"),
    ("cos", torch.cos, "cosine"),
    ("neg", torch.neg, "-x"),
    ("flatten", torch.flatten, "all dimensions in one"),
):
    _unary(_name, _fn, _doc)


@builtin(ctx=True, method=True)
def softmax(ctx: Context, x: Any, dim: Any = -1) -> torch.Tensor:
    return run_op(F.softmax, tensor_arg(ctx, x), dim=as_int(dim, "dim"))


@builtin(ctx=True, method=True)
def log_softmax(ctx: Context, x: Any, dim: Any = -1) -> torch.Tensor:
    return run_op(F.log_softmax, tensor_arg(ctx, x), dim=as_int(dim, "dim"))


def _binary(name: str, fn: Callable, doc: str) -> None:
    def op(ctx: Context, a: Any, b: Any) -> torch.Tensor:
        return binary_op(ctx, fn, a, b)

    op.__doc__ = doc
    op.__name__ = name
    BUILTINS[name] = Builtin(name, op, True, True)


def binary_op(ctx: Context, fn: Callable, a: Any, b: Any) -> Any:
    """Apply a torch binary op; lists become tensors of the other operand's dtype (float16 by default)."""
    if isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and isinstance(b, (list, tuple)):
        b = to_tensor(ctx, b, a.dtype, None).to(a.device)
    elif isinstance(b, torch.Tensor) and not isinstance(a, torch.Tensor) and isinstance(a, (list, tuple)):
        a = to_tensor(ctx, a, b.dtype, None).to(b.device)
    elif not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        a = tensor_arg(ctx, a, "a")
    return run_op(fn, a, b)


for _name, _fn, _doc in (
    ("add", torch.add, "a + b"),
    ("sub", torch.sub, "a - b"),
    ("mul", torch.mul, "a * b"),
    ("div", torch.div, "a / b"),
    ("matmul", torch.matmul, "a @ b"),
    ("pow", torch.pow, "a ** b"),
    ("maximum", torch.maximum, "elementwise larger of a and b"),
    ("minimum", torch.minimum, "elementwise smaller of a and b"),
):
    _binary(_name, _fn, _doc)
