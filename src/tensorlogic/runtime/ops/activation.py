"""MIL activation ops (coremltools ``defs/iOS15/activation.py``; iOS17 only widens the alpha/beta dtypes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import op


def _per_channel(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [C] parameter shaped to broadcast along axis 1 of ``x``, in ``x``'s dtype."""
    return p.to(device=x.device, dtype=x.dtype).reshape((1, -1) + (1,) * (x.dim() - 2))


@op("clamped_relu", params={"alpha": "float", "beta": "float"}, since="iOS15")
def clamped_relu(x: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """``min(beta, x)`` for x >= 0, else ``min(beta, alpha * x)``."""
    return torch.where(x >= 0, x, x * alpha).clamp_max(beta)


@op("elu", params={"alpha": "float"}, since="iOS15")
def elu(x: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """``x`` for x > 0, else ``alpha * (exp(x) - 1)``."""
    return F.elu(x, alpha=alpha)


_GELU_MODES = ("EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION")


@op("gelu", params={"mode": "str"}, since="iOS15")
def gelu(x: torch.Tensor, *, mode: str = "EXACT") -> torch.Tensor:
    """Gaussian error linear unit: erf form, tanh approximation or ``x * sigmoid(1.702 x)``."""
    if mode == "EXACT":
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(f"unknown gelu mode {mode!r} (expected one of {', '.join(_GELU_MODES)})")


@op("leaky_relu", params={"alpha": "float"}, since="iOS15")
def leaky_relu(x: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """``x`` for x >= 0, else ``alpha * x``."""
    return F.leaky_relu(x, negative_slope=alpha)


@op("linear_activation", params={"alpha": "float", "beta": "float"}, since="iOS15")
def linear_activation(x: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """``alpha * x + beta``."""
    return x * alpha + beta


@op("prelu", since="iOS15")
def prelu(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Per-channel (axis 1) leaky relu; any rank ≥ 2 is accepted, not only 3–5."""
    return torch.where(x > 0, x, x * _per_channel(alpha, x))


@op("relu", since="iOS15")
def relu(x: torch.Tensor) -> torch.Tensor:
    """``max(x, 0)``."""
    return torch.relu(x)


@op("relu6", since="iOS15")
def relu6(x: torch.Tensor) -> torch.Tensor:
    """``min(max(x, 0), 6)``."""
    return x.clamp(0, 6)


@op("scaled_tanh", params={"alpha": "float", "beta": "float"}, since="iOS15")
def scaled_tanh(x: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """``alpha * tanh(beta * x)``."""
    return torch.tanh(x * beta) * alpha


@op("sigmoid", since="iOS15")
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp(-x))``."""
    return torch.sigmoid(x)


@op("sigmoid_hard", params={"alpha": "float", "beta": "float"}, since="iOS15")
def sigmoid_hard(x: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """``min(max(alpha * x + beta, 0), 1)``."""
    return (x * alpha + beta).clamp(0, 1)


@op("silu", since="iOS15")
def silu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)``."""
    return F.silu(x)


@op("softplus", since="iOS15")
def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))``, computed without overflow."""
    return F.softplus(x)


@op("softplus_parametric", since="iOS15")
def softplus_parametric(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``alpha_c * log(1 + exp(beta_c * x))`` per channel (axis 1), computed without overflow."""
    return _per_channel(alpha, x) * F.softplus(x * _per_channel(beta, x))


@op("softmax", params={"axis": "int"}, since="iOS15")
def softmax(x: torch.Tensor, *, axis: int = -1) -> torch.Tensor:
    """``exp(x) / sum(exp(x), axis)``, max-shifted."""
    return torch.softmax(x, dim=axis)


@op("softsign", since="iOS15")
def softsign(x: torch.Tensor) -> torch.Tensor:
    """``x / (1 + |x|)``."""
    return F.softsign(x)


@op("thresholded_relu", params={"alpha": "float"}, since="iOS15")
def thresholded_relu(x: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """``x`` where x >= alpha, else 0."""
    return torch.where(x >= alpha, x, torch.zeros((), dtype=x.dtype, device=x.device))
