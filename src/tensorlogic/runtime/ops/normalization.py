"""MIL normalization ops (coremltools ``defs/iOS15|iOS17/normalization.py``).

Statistics are computed in float32 at least, so fp16 activations neither overflow in their
squares nor lose the mean; the result comes back in ``x``'s dtype. iOS17 only lets the
parameters have another float dtype than ``x``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..registry import op


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _channel(p: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A [C] parameter shaped to broadcast along axis 1 of ``x``."""
    return p.to(device=x.device, dtype=dtype).reshape((1, -1) + (1,) * (x.dim() - 2))


def _standardize(x: torch.Tensor, dims: tuple[int, ...], epsilon: float) -> torch.Tensor:
    """``(x - mean) / sqrt(var + epsilon)`` over ``dims`` (biased variance), in float32 at least."""
    xf = _wide(x)
    var, mean = torch.var_mean(xf, dim=dims, correction=0, keepdim=True)
    return (xf - mean) * torch.rsqrt(var + epsilon)


@op("batch_norm", params={"epsilon": "float"}, since="iOS15")
def batch_norm(
    x: torch.Tensor,
    mean: torch.Tensor,
    variance: torch.Tensor,
    gamma: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    *,
    epsilon: float = 1e-5,
) -> torch.Tensor:
    """``gamma * (x - mean) / sqrt(variance + epsilon) + beta`` per channel (axis 1)."""
    wide = _wide(x).dtype
    scale = torch.rsqrt(_channel(variance, x, wide) + epsilon)
    if gamma is not None:
        scale = scale * _channel(gamma, x, wide)
    shift = -_channel(mean, x, wide) * scale
    if beta is not None:
        shift = shift + _channel(beta, x, wide)
    # One fused multiply-add in x's dtype; scale and shift were folded in float32.
    return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


@op("instance_norm", params={"epsilon": "float"}, since="iOS15")
def instance_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    *,
    epsilon: float = 1e-5,
) -> torch.Tensor:
    """Normalize each (batch, channel) over its spatial dims, then scale and shift per channel."""
    y = _standardize(x, tuple(range(2, x.dim())), epsilon)
    if gamma is not None:
        y = y * _channel(gamma, x, y.dtype)
    if beta is not None:
        y = y + _channel(beta, x, y.dtype)
    return y.to(x.dtype)


@op("l2_norm", params={"epsilon": "float"}, since="iOS15")
def l2_norm(x: torch.Tensor, *, epsilon: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x**2) + epsilon)`` over the last three dims, leading dims as batch."""
    if x.dim() < 3:
        raise ValueError(f"l2_norm needs rank >= 3, got rank {x.dim()}")
    xf = _wide(x)
    sq = torch.sum(xf * xf, dim=(-3, -2, -1), keepdim=True)
    return (xf * torch.rsqrt(sq + epsilon)).to(x.dtype)


@op("layer_norm", params={"axes": "ints", "epsilon": "float"}, since="iOS15")
def layer_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    *,
    axes: Sequence[int] | None = None,
    epsilon: float = 1e-5,
) -> torch.Tensor:
    """Normalize over ``axes`` (all if None), then ``* gamma + beta`` shaped like ``x.shape[axes]``."""
    rank = x.dim()
    dims = tuple(range(rank)) if axes is None else tuple(sorted({a + rank if a < 0 else a for a in axes}))
    if not dims:
        raise ValueError("layer_norm: axes is empty")
    if dims == tuple(range(rank - len(dims), rank)):
        # Trailing axes: torch's fused kernel (it accumulates fp16 in float32 itself).
        shape = tuple(x.shape[rank - len(dims):])
        g = None if gamma is None else gamma.to(x.dtype).reshape(shape)
        b = None if beta is None else beta.to(x.dtype).reshape(shape)
        return F.layer_norm(x, shape, g, b, epsilon)
    y = _standardize(x, dims, epsilon)
    bshape = [x.shape[i] if i in dims else 1 for i in range(rank)]
    if gamma is not None:
        y = y * gamma.to(y.dtype).reshape(bshape)
    if beta is not None:
        y = y + beta.to(y.dtype).reshape(bshape)
    return y.to(x.dtype)


@op("local_response_norm", params={"size": "int", "alpha": "float", "beta": "float", "k": "float"}, since="iOS15")
def local_response_norm(
    x: torch.Tensor, *, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> torch.Tensor:
    """``x / (k + alpha / size * sum(x**2 over size channels)) ** beta``; channels are axis -3 (Core ML's)."""
    # Core ML normalizes across axis -3: for rank 3 that is axis 0, not the spec's axis 1 (coremltools'
    # own rank-3 expectations show it). The window is PyTorch's: size//2 before, (size-1)//2 after.
    if x.dim() < 3:
        raise ValueError(f"local_response_norm needs rank >= 3, got rank {x.dim()}")
    y = F.local_response_norm(_wide(x).reshape((-1,) + tuple(x.shape[-3:])), size, alpha=alpha, beta=beta, k=k)
    return y.reshape(x.shape).to(x.dtype)
