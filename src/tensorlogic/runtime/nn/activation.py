"""Activation layers: ``activation`` (every ActivationParams kind), ``gelu``, ``clampedReLU``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .common import channel_param
from .registry import layer

Fn = Callable[[torch.Tensor], torch.Tensor]


def _param(ctx: Any, wp: Any, what: str) -> torch.Tensor:
    t = ctx.weight(wp, None, what)
    if t.numel() == 0:
        raise ctx.error(f"{what} has no values")
    return t


def activation_fn(a: Any, ctx: Any) -> Fn:
    """The function an ActivationParams message describes (shared with the recurrent layers)."""
    kind = a.WhichOneof("NonlinearityType")
    if kind == "linear":
        alpha, beta = a.linear.alpha, a.linear.beta
        return lambda x: x * alpha + beta
    if kind == "ReLU":
        return torch.relu
    if kind == "leakyReLU":
        alpha = a.leakyReLU.alpha
        return lambda x: torch.where(x >= 0, x, x * alpha)
    if kind == "thresholdedReLU":
        alpha = a.thresholdedReLU.alpha
        return lambda x: torch.where(x >= alpha, x, torch.zeros_like(x))
    if kind == "PReLU":
        slope = _param(ctx, a.PReLU.alpha, "PReLU alpha")
        return lambda x: torch.where(x >= 0, x, x * channel_param(slope, x))
    if kind == "tanh":
        return torch.tanh
    if kind == "scaledTanh":
        alpha, beta = a.scaledTanh.alpha, a.scaledTanh.beta
        return lambda x: alpha * torch.tanh(beta * x)
    if kind == "sigmoid":
        return torch.sigmoid
    if kind == "sigmoidHard":
        alpha, beta = a.sigmoidHard.alpha, a.sigmoidHard.beta
        return lambda x: (x * alpha + beta).clamp(0.0, 1.0)
    if kind == "ELU":
        alpha = a.ELU.alpha
        return lambda x: torch.where(x >= 0, x, alpha * torch.expm1(x))
    if kind == "softsign":
        return F.softsign
    if kind == "softplus":
        return F.softplus
    if kind == "parametricSoftplus":
        alpha = _param(ctx, a.parametricSoftplus.alpha, "parametricSoftplus alpha")
        beta = _param(ctx, a.parametricSoftplus.beta, "parametricSoftplus beta")
        return lambda x: channel_param(alpha, x) * F.softplus(channel_param(beta, x) * x)
    raise ctx.error(f"unknown activation kind {kind!r}")


@layer("activation")
def activation(p: Any, ctx: Any) -> Fn:
    """Element-wise non-linearity; PReLU and parametric softplus take one parameter per channel (axis -3)."""
    ctx.require(1)
    return activation_fn(p, ctx)


_GELU = {0: "EXACT", 1: "TANH_APPROXIMATION", 2: "SIGMOID_APPROXIMATION"}


@layer("gelu")
def gelu(p: Any, ctx: Any) -> Fn:
    """GELU: exact (erf), tanh approximation, or ``x * sigmoid(1.702 x)``."""
    ctx.require(1)
    mode = _GELU.get(p.mode)
    if mode == "EXACT":
        return F.gelu
    if mode == "TANH_APPROXIMATION":
        c = math.sqrt(2.0 / math.pi)
        return lambda x: 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * x * x * x)))
    if mode == "SIGMOID_APPROXIMATION":
        return lambda x: x * torch.sigmoid(1.702 * x)
    raise ctx.error(f"unknown GELU mode {p.mode}")


@layer("clampedReLU")
def clampedReLU(p: Any, ctx: Any) -> Fn:
    """``min(beta, x)`` for x >= 0, else ``min(beta, alpha * x)``."""
    ctx.require(1)
    alpha, beta = p.alpha, p.beta
    return lambda x: torch.where(x >= 0, x, x * alpha).clamp_max(beta)
