"""MIL elementwise binary ops with numpy broadcasting (coremltools ``defs/iOS15/elementwise_binary.py``).

Integer semantics follow the spec's Python operators: ``floor_div`` rounds toward negative infinity,
``mod`` takes the sign of the divisor, ``real_div`` of two integers truncates toward zero (the ML
Program backend's int32 result).
"""

from __future__ import annotations

import torch

from ..registry import op


def _is_int(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


@op("add", since="iOS15")
def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y``."""
    return torch.add(x, y)


@op("sub", since="iOS15")
def sub(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x - y``."""
    return torch.sub(x, y)


@op("mul", since="iOS15")
def mul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x * y``."""
    return torch.mul(x, y)


@op("real_div", since="iOS15")
def real_div(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x / y``; two integer inputs give the quotient truncated toward zero."""
    if _is_int(x) and _is_int(y):
        return torch.div(x, y, rounding_mode="trunc")
    return torch.div(x, y)


@op("floor_div", since="iOS15")
def floor_div(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x / y`` rounded toward negative infinity."""
    return torch.div(x, y, rounding_mode="floor")


@op("mod", since="iOS15")
def mod(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x - floor(x / y) * y`` (Python's ``%``: the result has the sign of ``y``)."""
    return torch.remainder(x, y)


@op("pow", since="iOS15")
def pow_(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x ** y``."""
    return torch.pow(x, y)


@op("maximum", since="iOS15")
def maximum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x > y ? x : y``."""
    return torch.maximum(x, y)


@op("minimum", since="iOS15")
def minimum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x > y ? y : x``."""
    return torch.minimum(x, y)


@op("equal", since="iOS15")
def equal(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x == y`` as bool."""
    return torch.eq(x, y)


@op("not_equal", since="iOS15")
def not_equal(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x != y`` as bool."""
    return torch.ne(x, y)


@op("greater", since="iOS15")
def greater(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x > y`` as bool."""
    return torch.gt(x, y)


@op("greater_equal", since="iOS15")
def greater_equal(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x >= y`` as bool."""
    return torch.ge(x, y)


@op("less", since="iOS15")
def less(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x < y`` as bool."""
    return torch.lt(x, y)


@op("less_equal", since="iOS15")
def less_equal(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x <= y`` as bool."""
    return torch.le(x, y)


@op("logical_and", since="iOS15")
def logical_and(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x AND y`` (nonzero is true)."""
    return torch.logical_and(x, y)


@op("logical_or", since="iOS15")
def logical_or(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x OR y`` (nonzero is true)."""
    return torch.logical_or(x, y)


@op("logical_xor", since="iOS15")
def logical_xor(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x XOR y`` (nonzero is true)."""
    return torch.logical_xor(x, y)
