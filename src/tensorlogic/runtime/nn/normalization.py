"""Normalization layers: ``batchnorm``, ``mvn``, ``l2normalize``, ``lrn``, ``softmax``, ``softmaxND``,
``layerNormalization``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .common import as_nchw, from_nchw, norm_axis
from .registry import layer

Fn = Callable[[torch.Tensor], torch.Tensor]


def _standardize(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


@layer("batchnorm")
def batchnorm(p: Any, ctx: Any) -> Fn:
    """Per-channel (axis -3) normalization with stored statistics, or statistics computed over the
    batch (or per instance, for instance normalization) and the spatial axes."""
    ctx.require(1)
    c = int(p.channels)
    eps = p.epsilon if p.epsilon != 0 else 1e-5
    gamma = ctx.weight(p.gamma, c, "gamma").reshape(c, 1, 1)
    beta = ctx.weight(p.beta, c, "beta").reshape(c, 1, 1)
    if not p.computeMeanVar:
        mean = ctx.weight(p.mean, c, "mean").reshape(c, 1, 1)
        scale = gamma / torch.sqrt(ctx.weight(p.variance, c, "variance").reshape(c, 1, 1) + eps)
        shift = beta - mean * scale
        return lambda x: x * scale + shift
    instance = p.instanceNormalization

    def run(x: torch.Tensor) -> torch.Tensor:
        x4, lead = as_nchw(x, "batchnorm")
        y = _standardize(x4, (2, 3) if instance else (0, 2, 3), eps)
        return from_nchw(y * gamma + beta, lead)

    return run


@layer("mvn")
def mvn(p: Any, ctx: Any) -> Fn:
    """Mean (and variance) normalization over [H, W], or over [C, H, W] when ``acrossChannels``:
    ``(x - mean) / sqrt(var + epsilon)``, epsilon 0 meaning 1e-6."""
    ctx.require(1)
    eps = p.epsilon if p.epsilon != 0 else 1e-6
    dims = (-3, -2, -1) if p.acrossChannels else (-2, -1)
    variance = p.normalizeVariance

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"mvn needs a blob of rank at least 3, got {list(x.shape)}")
        if variance:
            return _standardize(x, dims, eps)
        return x - x.mean(dim=dims, keepdim=True)

    return run


@layer("l2normalize")
def l2normalize(p: Any, ctx: Any) -> Fn:
    """``x / sqrt(sum(x**2) + epsilon)`` over the last three axes; epsilon 0 means 1e-6."""
    ctx.require(1)
    eps = p.epsilon if p.epsilon != 0 else 1e-6

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"l2normalize needs a blob of rank at least 3, got {list(x.shape)}")
        return x / torch.sqrt((x * x).sum(dim=(-3, -2, -1), keepdim=True) + eps)

    return run


@layer("lrn")
def lrn(p: Any, ctx: Any) -> Fn:
    """Local response normalization across channels, window placed as PyTorch's; k 0 means 1."""
    ctx.require(1)
    size = int(p.localSize)
    if size < 1:
        raise ctx.error(f"localSize must be positive, got {size}")
    alpha, beta, k = p.alpha, p.beta, (p.k if p.k != 0 else 1.0)

    def run(x: torch.Tensor) -> torch.Tensor:
        x4, lead = as_nchw(x, "lrn")
        return from_nchw(F.local_response_norm(x4, size, alpha=alpha, beta=beta, k=k), lead)

    return run


@layer("softmax")
def softmax(p: Any, ctx: Any) -> Fn:
    """Softmax along axis -3."""
    ctx.require(1)

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"softmax needs a blob of rank at least 3, got {list(x.shape)}")
        return torch.softmax(x, dim=-3)

    return run


@layer("softmaxND")
def softmaxND(p: Any, ctx: Any) -> Fn:
    """Softmax along ``axis``."""
    ctx.require(1)
    axis = int(p.axis)
    return lambda x: torch.softmax(x, dim=norm_axis(axis, x.dim()))


@layer("layerNormalization")
def layerNormalization(p: Any, ctx: Any) -> Fn:
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` over the trailing ``normalizedShape`` axes."""
    ctx.require(1)
    shape = tuple(int(d) for d in p.normalizedShape)
    n = int(torch.tensor(shape).prod()) if shape else 1
    gamma = ctx.weight(p.gamma, n, "gamma").reshape(shape)
    beta = ctx.weight(p.beta, n, "beta").reshape(shape)
    eps = p.eps

    def run(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[x.dim() - len(shape):]) != shape:
            raise ValueError(f"normalizedShape {list(shape)} does not end the input shape {list(x.shape)}")
        return F.layer_norm(x, shape, gamma, beta, eps)

    return run
