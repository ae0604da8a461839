"""MIL elementwise unary ops and ``cast`` (coremltools ``defs/iOS15|iOS17/elementwise_unary.py``).

iOS17 only widens dtypes (cast to/from int8/uint8/int16/uint16, epsilon of another float type)
and validates ``clip``'s bounds, so one registration serves every opset.
"""

from __future__ import annotations

import torch

from ..registry import op


def _float(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if floating point, else as float32 (integer inputs of float-valued ops)."""
    return x if x.is_floating_point() else x.to(torch.float32)


@op("abs", since="iOS15")
def abs_(x: torch.Tensor) -> torch.Tensor:
    """``|x|``."""
    return torch.abs(x)


@op("acos", since="iOS15")
def acos(x: torch.Tensor) -> torch.Tensor:
    """Inverse cosine."""
    return torch.acos(x)


@op("asin", since="iOS15")
def asin(x: torch.Tensor) -> torch.Tensor:
    """Inverse sine."""
    return torch.asin(x)


@op("atan", since="iOS15")
def atan(x: torch.Tensor) -> torch.Tensor:
    """Inverse tangent."""
    return torch.atan(x)


@op("atanh", since="iOS15")
def atanh(x: torch.Tensor) -> torch.Tensor:
    """Inverse hyperbolic tangent."""
    return torch.atanh(x)


@op("ceil", since="iOS15")
def ceil(x: torch.Tensor) -> torch.Tensor:
    """Round toward positive infinity."""
    return torch.ceil(x)


@op("clip", params={"alpha": "float", "beta": "float"}, since="iOS15")
def clip(x: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """``min(max(x, alpha), beta)``."""
    return torch.clamp(x, alpha, beta)


@op("cos", since="iOS15")
def cos(x: torch.Tensor) -> torch.Tensor:
    """Cosine."""
    return torch.cos(x)


@op("cosh", since="iOS15")
def cosh(x: torch.Tensor) -> torch.Tensor:
    """Hyperbolic cosine."""
    return torch.cosh(x)


@op("erf", since="iOS15")
def erf(x: torch.Tensor) -> torch.Tensor:
    """Gauss error function."""
    return torch.erf(x)


@op("exp", since="iOS15")
def exp(x: torch.Tensor) -> torch.Tensor:
    """``e ** x``."""
    return torch.exp(x)


@op("exp2", since="iOS15")
def exp2(x: torch.Tensor) -> torch.Tensor:
    """``2 ** x`` (integer inputs compute in float; the declared int32 output truncates)."""
    return torch.exp2(_float(x))


@op("floor", since="iOS15")
def floor(x: torch.Tensor) -> torch.Tensor:
    """Round toward negative infinity."""
    return torch.floor(x)


@op("inverse", params={"epsilon": "float"}, since="iOS15")
def inverse(x: torch.Tensor, *, epsilon: float = 1e-4) -> torch.Tensor:
    """``1 / (x + epsilon)``."""
    return torch.reciprocal(x + epsilon)


@op("log", params={"epsilon": "float"}, since="iOS15")
def log(x: torch.Tensor, *, epsilon: float = 1e-45) -> torch.Tensor:
    """``log(x + epsilon)``."""
    return torch.log(x + epsilon)


@op("logical_not", since="iOS15")
def logical_not(x: torch.Tensor) -> torch.Tensor:
    """``NOT x`` (nonzero is true)."""
    return torch.logical_not(x)


@op("round", since="iOS15")
def round_(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties to even (``0.5 -> 0``, as the spec and numpy's reference do)."""
    return torch.round(x)


@op("rsqrt", params={"epsilon": "float"}, since="iOS15")
def rsqrt(x: torch.Tensor, *, epsilon: float = 1e-12) -> torch.Tensor:
    """``1 / sqrt(x + epsilon)``."""
    return torch.rsqrt(x + epsilon)


@op("sign", since="iOS15")
def sign(x: torch.Tensor) -> torch.Tensor:
    """-1, 0 or 1 by the sign of ``x``."""
    return torch.sign(x)


@op("sin", since="iOS15")
def sin(x: torch.Tensor) -> torch.Tensor:
    """Sine."""
    return torch.sin(x)


@op("sinh", since="iOS15")
def sinh(x: torch.Tensor) -> torch.Tensor:
    """Hyperbolic sine."""
    return torch.sinh(x)


@op("sqrt", since="iOS15")
def sqrt(x: torch.Tensor) -> torch.Tensor:
    """Square root."""
    return torch.sqrt(x)


@op("square", since="iOS15")
def square(x: torch.Tensor) -> torch.Tensor:
    """``x * x``."""
    return x * x


@op("tan", since="iOS15")
def tan(x: torch.Tensor) -> torch.Tensor:
    """Tangent."""
    return torch.tan(x)


@op("tanh", since="iOS15")
def tanh(x: torch.Tensor) -> torch.Tensor:
    """Hyperbolic tangent."""
    return torch.tanh(x)


@op("threshold", params={"alpha": "float"}, since="iOS15")
def threshold(x: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """``max(x, alpha)``."""
    if not x.is_floating_point() and float(alpha).is_integer():
        return torch.clamp_min(x, int(alpha))
    return torch.clamp_min(x, alpha)


@op("cast", params={"dtype": "dtype"}, since="iOS15")
def cast(x: torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
    """Convert to ``dtype`` (the MIL dtype after the precision policy); float to int truncates toward zero."""
    return x.to(dtype)
