"""MIL reductions (coremltools ``defs/iOS15|iOS17/reduction.py``).

``axes`` None reduces every axis; an empty ``axes`` reduces none (numpy's ``axis=()``). Integer
inputs of float-valued reductions (mean, norms, logs) compute in float; the interpreter casts the
result to the declared int32. iOS17's ``output_dtype`` of the arg ops is the declared output
dtype, which the interpreter applies, so one registration serves every opset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..registry import op

_AXES = {"axes": "ints", "keep_dims": "bool"}
_AXIS = {"axis": "int", "keep_dims": "bool", "output_dtype": "str"}


def _float(x: torch.Tensor) -> torch.Tensor:
    """``x`` in a float dtype that sums without fp16 overflow."""
    if x.dtype in (torch.float16, torch.bfloat16) or not x.is_floating_point():
        return x.to(torch.float32)
    return x


def _reduce(
    x: torch.Tensor,
    axes: Sequence[int] | None,
    keep_dims: bool,
    fn: Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor],
) -> torch.Tensor:
    """Apply ``fn(x, dims, keepdim)`` with MIL's axes conventions."""
    if axes is None:
        dims = tuple(range(x.dim()))
    else:
        dims = tuple(sorted({a + x.dim() if a < 0 else a for a in axes}))
    if not dims:
        # Nothing to reduce (rank 0, or axes=[]): reduce a new unit axis so every fn applies unchanged.
        return fn(x.unsqueeze(0), (0,), False)
    return fn(x, dims, keep_dims)


def _prod(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    for d in reversed(dims):
        x = torch.prod(x, dim=d, keepdim=keep)
    return x


@op("reduce_sum", params=_AXES, since="iOS15")
def reduce_sum(x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False) -> torch.Tensor:
    """Sum over ``axes``."""
    return _reduce(x, axes, keep_dims, lambda t, d, k: torch.sum(t, dim=d, keepdim=k))


@op("reduce_mean", params=_AXES, since="iOS15")
def reduce_mean(x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False) -> torch.Tensor:
    """Mean over ``axes``."""
    x = x if x.is_floating_point() else x.to(torch.float64 if x.device.type != "mps" else torch.float32)
    return _reduce(x, axes, keep_dims, lambda t, d, k: torch.mean(t, dim=d, keepdim=k))


@op("reduce_max", params=_AXES, since="iOS15")
def reduce_max(x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False) -> torch.Tensor:
    """Maximum over ``axes``."""
    return _reduce(x, axes, keep_dims, lambda t, d, k: torch.amax(t, dim=d, keepdim=k))


@op("reduce_min", params=_AXES, since="iOS15")
def reduce_min(x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False) -> torch.Tensor:
    """Minimum over ``axes``."""
    return _reduce(x, axes, keep_dims, lambda t, d, k: torch.amin(t, dim=d, keepdim=k))


@op("reduce_prod", params=_AXES, since="iOS15")
def reduce_prod(x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False) -> torch.Tensor:
    """Product over ``axes``."""
    return _reduce(x, axes, keep_dims, _prod)


@op("reduce_l1_norm", params=_AXES, since="iOS15")
def reduce_l1_norm(x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False) -> torch.Tensor:
    """``sum(|x|)`` over ``axes``."""
    return _reduce(x, axes, keep_dims, lambda t, d, k: torch.sum(torch.abs(t), dim=d, keepdim=k))


@op("reduce_l2_norm", params=_AXES, since="iOS15")
def reduce_l2_norm(x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False) -> torch.Tensor:
    """``sqrt(sum(x**2))`` over ``axes`` (summed in float32 at least)."""
    return _reduce(_float(x), axes, keep_dims, lambda t, d, k: torch.linalg.vector_norm(t, 2, dim=d, keepdim=k))


@op("reduce_sum_square", params=_AXES, since="iOS15")
def reduce_sum_square(
    x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False
) -> torch.Tensor:
    """``sum(x**2)`` over ``axes`` (float inputs summed in float32 at least)."""
    xs = x if not x.is_floating_point() else _float(x)
    return _reduce(xs * xs, axes, keep_dims, lambda t, d, k: torch.sum(t, dim=d, keepdim=k))


@op("reduce_log_sum", params=_AXES, since="iOS15")
def reduce_log_sum(x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False) -> torch.Tensor:
    """``log(sum(x))`` over ``axes``."""
    return _reduce(_float(x), axes, keep_dims, lambda t, d, k: torch.log(torch.sum(t, dim=d, keepdim=k)))


@op("reduce_log_sum_exp", params=_AXES, since="iOS15")
def reduce_log_sum_exp(
    x: torch.Tensor, *, axes: Sequence[int] | None = None, keep_dims: bool = False
) -> torch.Tensor:
    """``log(sum(exp(x)))`` over ``axes``, max-shifted."""
    xf = x if x.is_floating_point() else x.to(torch.float32)
    return _reduce(xf, axes, keep_dims, lambda t, d, k: torch.logsumexp(t, dim=d, keepdim=k))


@op("reduce_argmax", params=_AXIS, since="iOS15")
def reduce_argmax(
    x: torch.Tensor, *, axis: int = -1, keep_dims: bool = False, output_dtype: str = "int32"
) -> torch.Tensor:
    """Index of the first maximum along ``axis``."""
    return torch.argmax(x, dim=axis, keepdim=keep_dims)


@op("reduce_argmin", params=_AXIS, since="iOS15")
def reduce_argmin(
    x: torch.Tensor, *, axis: int = -1, keep_dims: bool = False, output_dtype: str = "int32"
) -> torch.Tensor:
    """Index of the first minimum along ``axis``."""
    return torch.argmin(x, dim=axis, keepdim=keep_dims)
