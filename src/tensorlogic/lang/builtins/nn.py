"""Neural-network layers: linear, conv2d, pooling, batch_norm, layer_norm."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..values import BuiltinError, Context, as_int, run_op, shape_arg, shape_text, tensor_arg
from . import builtin


def _pair(v: Any, what: str) -> int | tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise BuiltinError(f"{what} must be an integer or a pair [h, w]")
        return (as_int(v[0], what), as_int(v[1], what))
    return as_int(v, what)


def _opt(ctx: Context, v: Any, what: str) -> torch.Tensor | None:
    return None if v is None else tensor_arg(ctx, v, what)


@builtin(ctx=True)
def linear(ctx: Context, x: Any, weight: Any, bias: Any = None) -> torch.Tensor:
    """x @ weight.T + bias, weight shaped [out, in] as in PyTorch."""
    return run_op(F.linear, tensor_arg(ctx, x), tensor_arg(ctx, weight, "weight"), _opt(ctx, bias, "bias"))


@builtin(ctx=True)
def conv2d(
    ctx: Context, x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
    groups: Any = 1,
) -> torch.Tensor:
    """2-D convolution of x [N, C, H, W] with weight [O, C/groups, kH, kW]."""
    return run_op(
        F.conv2d, tensor_arg(ctx, x), tensor_arg(ctx, weight, "weight"), _opt(ctx, bias, "bias"),
        stride=_pair(stride, "stride"), padding=_pair(padding, "padding"), dilation=_pair(dilation, "dilation"),
        groups=as_int(groups, "groups"),
    )


@builtin(ctx=True)
def depthwise_conv2d(
    ctx: Context, x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
) -> torch.Tensor:
    """Per-channel convolution: weight [C * m, 1, kH, kW] for x [N, C, H, W]."""
    t = tensor_arg(ctx, x)
    if t.ndim != 4:
        raise BuiltinError(f"depthwise_conv2d needs x shaped [N, C, H, W], got {shape_text(t)}")
    return conv2d(ctx, t, weight, bias, stride, padding, dilation, groups=t.shape[1])


@builtin(ctx=True)
def max_pool2d(ctx: Context, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> torch.Tensor:
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    return run_op(F.max_pool2d, tensor_arg(ctx, x), k, stride=s, padding=_pair(padding, "padding"))


@builtin(ctx=True)
def avg_pool2d(ctx: Context, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> torch.Tensor:
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    return run_op(F.avg_pool2d, tensor_arg(ctx, x), k, stride=s, padding=_pair(padding, "padding"))


@builtin(ctx=True)
def batch_norm(
    ctx: Context, x: Any, mean: Any, var: Any, weight: Any = None, bias: Any = None, eps: Any = 1e-5
) -> torch.Tensor:
    """Inference batch norm over dim 1 with the given running mean and variance."""
    return run_op(
        F.batch_norm, tensor_arg(ctx, x), tensor_arg(ctx, mean, "mean"), tensor_arg(ctx, var, "var"),
        _opt(ctx, weight, "weight"), _opt(ctx, bias, "bias"), False, 0.0, float(eps),
    )


@builtin(ctx=True)
def layer_norm(
    ctx: Context, x: Any, weight: Any = None, bias: Any = None, eps: Any = 1e-5, normalized_shape: Any = None
) -> torch.Tensor:
    """Normalize over the trailing dimensions of weight's shape (the last dimension when no weight)."""
    t = tensor_arg(ctx, x)
    w, b = _opt(ctx, weight, "weight"), _opt(ctx, bias, "bias")
    if normalized_shape is not None:
        dims = shape_arg((normalized_shape,), "normalized_shape")
    elif w is not None:
        dims = list(w.shape)
    else:
        dims = [t.shape[-1]] if t.ndim else []
    return run_op(F.layer_norm, t, dims, w, b, float(eps))
