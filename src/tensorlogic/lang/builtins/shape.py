"""Shapes and indexing: shape, rank, reshape, flatten, squeeze, unsqueeze, transpose, permute, broadcast_to,
concat, stack, split, chunk, slice, slice_last, gather, scatter, index_select, einsum.

Results never share memory with their arguments (``fresh``): scripts assign into tensors in place.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from ..values import (
    BuiltinError,
    Context,
    align,
    as_int,
    fresh,
    int_list,
    is_number,
    narrow,
    run_op,
    shape_arg,
    shape_text,
    tensor_arg,
    type_name,
)
from . import builtin


def _dim(d: Any, ndim: int, what: str = "dim", extra: int = 0) -> int:
    """A dimension index in range for a tensor of ``ndim`` dims (+``extra`` for inserting); negatives count
    from the end."""
    k = as_int(d, what)
    n = ndim + extra
    if not -max(n, 1) <= k < max(n, 1):
        raise BuiltinError(f"{what} {k} is out of range for a {ndim}-D tensor")
    return k % max(n, 1)


def _ints(args: tuple[Any, ...], what: str) -> list[int]:
    """Integers given as one list / tensor / x.shape() or as several arguments; negatives allowed."""
    if len(args) == 1 and not is_number(args[0]):
        return int_list(args[0], what)
    return [as_int(a, what) for a in args]


@builtin(ctx=True, method=True)
def shape(ctx: Context, x: Any) -> list[int]:
    """shape(x) or x.shape(): the sizes as a list of ints."""
    return list(tensor_arg(ctx, x).shape)


@builtin(ctx=True, method=True)
def rank(ctx: Context, x: Any) -> int:
    """rank(x): the number of dimensions (not in the original)."""
    return tensor_arg(ctx, x).ndim


@builtin(ctx=True, method=True)
def reshape(ctx: Context, x: Any, *new_shape: Any) -> torch.Tensor:
    """reshape(x, [2, 3]) or reshape(x, 2, 3); the shape may also be a tensor or x.shape(); one size may
    be -1."""
    t = tensor_arg(ctx, x)
    dims = _ints(new_shape, "the shape")
    try:
        return fresh(t.reshape(dims), t)
    except RuntimeError:
        raise BuiltinError(f"cannot reshape a tensor of shape {shape_text(t)} ({t.numel()} values) to {dims}") from None


@builtin(ctx=True, method=True)
def flatten(ctx: Context, x: Any) -> torch.Tensor:
    """flatten(x): all values in one dimension."""
    t = tensor_arg(ctx, x)
    return fresh(t.reshape(-1), t)


@builtin(ctx=True, method=True)
def squeeze(ctx: Context, x: Any, dim: Any = None) -> torch.Tensor:
    """squeeze(x) drops every size-1 dimension; squeeze(x, d) drops dimension d, which must have size 1."""
    t = tensor_arg(ctx, x)
    if dim is None:
        return fresh(t.squeeze(), t)
    d = _dim(dim, t.ndim)
    if t.ndim and t.shape[d] != 1:
        raise BuiltinError(f"dimension {d} has size {t.shape[d]}; only size-1 dimensions can be squeezed")
    return fresh(t.squeeze(d), t)


@builtin(ctx=True, method=True)
def unsqueeze(ctx: Context, x: Any, dim: Any) -> torch.Tensor:
    """unsqueeze(x, d): a new size-1 dimension at position d (0..rank; negatives count from the end)."""
    t = tensor_arg(ctx, x)
    return fresh(t.unsqueeze(_dim(dim, t.ndim, extra=1)), t)


@builtin(ctx=True, method=True)
def transpose(ctx: Context, x: Any, dim0: Any = None, dim1: Any = None) -> torch.Tensor:
    """transpose(x) swaps the last two dimensions (the original: 2-D only); transpose(x, d0, d1) swaps d0, d1."""
    t = tensor_arg(ctx, x)
    if dim0 is None and dim1 is None:
        if t.ndim < 2:
            raise BuiltinError(f"needs at least 2 dimensions, got shape {shape_text(t)}")
        return fresh(t.transpose(-2, -1), t)
    if dim0 is None or dim1 is None:
        raise BuiltinError("takes no dimensions or two (dim0, dim1)")
    return fresh(t.transpose(_dim(dim0, t.ndim, "dim0"), _dim(dim1, t.ndim, "dim1")), t)


@builtin(ctx=True, method=True)
def permute(ctx: Context, x: Any, *dims: Any) -> torch.Tensor:
    """permute(x, [2, 0, 1]) or permute(x, 2, 0, 1): dimension i of the result is dimension dims[i] of x."""
    t = tensor_arg(ctx, x)
    order = _ints(dims, "dims")
    if sorted(d % t.ndim if t.ndim else d for d in order) != list(range(t.ndim)):
        raise BuiltinError(f"{order} is not an order of the {t.ndim} dimensions of a tensor of shape {shape_text(t)}")
    return fresh(t.permute(*order), t)


@builtin(ctx=True, method=True)
def broadcast_to(ctx: Context, x: Any, target_shape: Any) -> torch.Tensor:
    """broadcast_to(x, [4, 2, 3]): x repeated along new leading or size-1 dimensions."""
    t = tensor_arg(ctx, x)
    dims = shape_arg((target_shape,), "the target shape")
    try:
        return t.broadcast_to(dims).contiguous()
    except RuntimeError:
        raise BuiltinError(f"cannot broadcast shape {shape_text(t)} to {dims}") from None


# ---------------------------------------------------------------------------------------------- joining


def _tensors_and_dim(ctx: Context, args: tuple[Any, ...], dim: Any) -> tuple[list[torch.Tensor], Any]:
    """The tensors of concat/stack: a list ([a, b], dim) or separate arguments (a, b, dim); a trailing number
    is the dimension (the original writes concat(a, b, 0.0))."""
    items = list(args)
    if dim is None and len(items) >= 2 and is_number(items[-1]):
        dim = items.pop()
    if len(items) == 1 and isinstance(items[0], (list, tuple)):
        items = list(items[0])
    if not items:
        raise BuiltinError("needs at least one tensor")
    return align(*[tensor_arg(ctx, t, "each item") for t in items]), 0 if dim is None else dim


@builtin(ctx=True)
def concat(ctx: Context, *tensors: Any, dim: Any = None) -> torch.Tensor:
    """concat(a, b, dim) as in the original, also concat(a, b, c, dim), concat([a, b], dim: 0); dim 0 if
    omitted."""
    ts, d = _tensors_and_dim(ctx, tensors, dim)
    d = _dim(d, ts[0].ndim)
    for t in ts[1:]:
        if t.ndim != ts[0].ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, ts[0].shape)) if i != d):
            raise BuiltinError(f"cannot join shapes {shape_text(ts[0])} and {shape_text(t)} along dimension {d}")
    return run_op(torch.cat, ts, dim=d)


@builtin(ctx=True)
def stack(ctx: Context, *tensors: Any, dim: Any = None) -> torch.Tensor:
    """stack([a, b], dim: 0) or stack(a, b, 0): the tensors (of one shape) along a new dimension."""
    ts, d = _tensors_and_dim(ctx, tensors, dim)
    if any(t.shape != ts[0].shape for t in ts):
        raise BuiltinError(f"needs tensors of one shape, got {', '.join(shape_text(t) for t in ts)}")
    return run_op(torch.stack, ts, dim=_dim(d, ts[0].ndim, extra=1))


# ---------------------------------------------------------------------------------------------- splitting


def _pieces(parts: tuple[torch.Tensor, ...], every: Any) -> Any:
    """The original's split and chunk return only the first piece (its example programs print that);
    all: true gives the list of every piece."""
    return [p.clone() for p in parts] if every else parts[0].clone()


@builtin(ctx=True, method=True)
def split(ctx: Context, x: Any, size: Any, dim: Any = 0, all: Any = False) -> Any:
    """split(x, n, dim): the first piece of n along dim, as in the original; split(x, [2, 3], dim): the first
    of pieces of those sizes; all: true returns every piece as a list (the last may be smaller)."""
    t = tensor_arg(ctx, x)
    d = _dim(dim, t.ndim)
    if is_number(size) or (isinstance(size, torch.Tensor) and size.numel() == 1):
        n = as_int(size, "the split size")
        if n <= 0:
            raise BuiltinError(f"the split size must be > 0, got {n}")
        sizes: int | list[int] = n
    else:
        sizes = int_list(size, "the split sizes")
        if sum(sizes) != t.shape[d] or any(s < 0 for s in sizes):
            raise BuiltinError(f"sizes {sizes} do not add up to {t.shape[d]}, the size of dimension {d}")
    return _pieces(torch.split(t, sizes, dim=d), all)


@builtin(ctx=True, method=True)
def chunk(ctx: Context, x: Any, chunks: Any, dim: Any = 0, all: Any = False) -> Any:
    """chunk(x, n, dim): the first of n pieces along dim, each ceil(size / n) long, as in the original;
    all: true returns every piece as a list (the last may be smaller, and there may be fewer than n)."""
    t = tensor_arg(ctx, x)
    n = as_int(chunks, "the number of chunks")
    if n <= 0:
        raise BuiltinError(f"the number of chunks must be > 0, got {n}")
    return _pieces(torch.chunk(t, n, dim=_dim(dim, t.ndim)), all)


def _index_in(i: Any, size: int, what: str, end: bool = False) -> int:
    """An index 0 <= i < size (i <= size for an end); negatives count from the end."""
    k = as_int(i, what)
    if k < 0:
        k += size
    limit = size + 1 if end else size
    if not 0 <= k < limit:
        raise BuiltinError(f"{what} {as_int(i, what)} is out of range for a size of {size}")
    return k


@builtin("slice", ctx=True, method=True)
def slice_(ctx: Context, x: Any, a: Any, b: Any, c: Any = None) -> Any:
    """slice(v, start, end): items start..end-1 of a 1-D tensor or a list; slice(m, row, start, end): columns
    start..end-1 of one row of a 2-D tensor (a 1-D tensor)."""
    if isinstance(x, (list, tuple)) and c is None:
        lo, hi = _index_in(a, len(x), "start"), _index_in(b, len(x), "end", end=True)
        return list(x[lo:hi])
    t = tensor_arg(ctx, x)
    if c is None:
        if t.ndim != 1:
            raise BuiltinError(f"slice(v, start, end) needs a 1-D tensor, got shape {shape_text(t)}")
        lo, hi = _index_in(a, t.shape[0], "start"), _index_in(b, t.shape[0], "end", end=True)
        row = t
    else:
        if t.ndim != 2:
            raise BuiltinError(f"slice(m, row, start, end) needs a 2-D tensor, got shape {shape_text(t)}")
        row = t[_index_in(a, t.shape[0], "row")]
        lo, hi = _index_in(b, t.shape[1], "start"), _index_in(c, t.shape[1], "end", end=True)
    if lo >= hi:
        raise BuiltinError(f"start {lo} must be below end {hi}")
    return row[lo:hi].clone()


@builtin(ctx=True, method=True)
def slice_last(ctx: Context, x: Any, axis: Any = 0) -> torch.Tensor:
    """slice_last(x, axis): the last entry along axis, that dimension removed ([35, 22, 64] -> [22, 64] for
    axis 0). The original supports axis 0 only."""
    t = tensor_arg(ctx, x)
    if t.ndim == 0:
        raise BuiltinError("needs a tensor with at least one dimension")
    d = _dim(axis, t.ndim, "axis")
    if t.shape[d] == 0:
        raise BuiltinError(f"dimension {d} is empty")
    return t.select(d, -1).clone()


def _index_tensor(ctx: Context, index: Any, size: int, dim: int) -> torch.Tensor:
    """Integer indices from an int tensor, a float tensor of whole numbers (the original's indices are f16) or
    a list; each must be within [-size, size)."""
    idx = tensor_arg(ctx, index, "the index")
    if idx.is_floating_point():
        if not bool((idx == idx.round()).all()):
            raise BuiltinError("indices must be whole numbers")
    elif idx.dtype == torch.bool:
        raise BuiltinError("indices must be numbers, got a bool tensor")
    idx = idx.long()
    if idx.numel() and not bool(((idx >= -size) & (idx < size)).all()):
        bad = int(idx[(idx < -size) | (idx >= size)][0])
        raise BuiltinError(f"index {bad} is out of range for dimension {dim} of size {size}")
    return idx % max(size, 1)


@builtin(ctx=True, method=True)
def gather(ctx: Context, x: Any, dim: Any, index: Any) -> torch.Tensor:
    """gather(x, dim, index): with index of x's rank, out[i][j] = x[index[i][j]][j] (dim 0) as torch.gather;
    a 1-D index into a tensor of higher rank picks whole slices, like index_select."""
    t = tensor_arg(ctx, x)
    d = _dim(dim, t.ndim)
    idx = _index_tensor(ctx, index, t.shape[d] if t.ndim else 1, d).to(t.device)
    if idx.ndim == 1 and t.ndim > 1:
        return t.index_select(d, idx)
    if idx.ndim != t.ndim:
        raise BuiltinError(f"the index has {idx.ndim} dimensions; it needs 1 or {t.ndim} (the tensor's)")
    if any(a > b for i, (a, b) in enumerate(zip(idx.shape, t.shape)) if i != d):
        raise BuiltinError(f"an index of shape {shape_text(idx)} does not fit a tensor of shape {shape_text(t)}")
    return run_op(torch.gather, t, d, idx)


@builtin(ctx=True, method=True)
def scatter(ctx: Context, x: Any, dim: Any, index: Any, src: Any) -> torch.Tensor:
    """scatter(x, dim, index, src): a copy of x with out[index[i][j]][j] = src[i][j] (dim 0) as torch.scatter;
    a 1-D index writes whole slices of src at those positions along dim (a KV-cache write)."""
    t = tensor_arg(ctx, x)
    d = _dim(dim, t.ndim)
    idx = _index_tensor(ctx, index, t.shape[d] if t.ndim else 1, d).to(t.device)
    s = tensor_arg(ctx, src, "src").to(dtype=t.dtype, device=t.device)
    if idx.ndim == 1 and t.ndim > 1:
        want = [*t.shape[:d], idx.numel(), *t.shape[d + 1 :]]
        if list(s.shape) != want:
            raise BuiltinError(f"src has shape {shape_text(s)}; writing {idx.numel()} slices needs {want}")
        return t.index_copy(d, idx, s)
    if idx.ndim != t.ndim or idx.shape != s.shape:
        raise BuiltinError(
            f"index {shape_text(idx)} and src {shape_text(s)} need one shape of the tensor's rank {t.ndim}"
        )
    return run_op(torch.scatter, t, d, idx, s)


@builtin(ctx=True, method=True)
def index_select(ctx: Context, x: Any, dim: Any, indices: Any) -> torch.Tensor:
    """index_select(x, dim, [i, j, ...]): the slices at those positions along dim (documented by the original,
    not implemented there)."""
    t = tensor_arg(ctx, x)
    d = _dim(dim, t.ndim)
    idx = _index_tensor(ctx, indices, t.shape[d] if t.ndim else 1, d).to(t.device)
    if idx.ndim > 1:
        raise BuiltinError(f"needs a 1-D list of indices, got shape {shape_text(idx)}")
    return t.index_select(d, idx.reshape(-1))


@builtin(ctx=True)
def einsum(ctx: Context, equation: Any, *tensors: Any) -> torch.Tensor:
    """einsum("ij,jk->ik", A, B); float16 operands are multiplied and summed in float32."""
    if not isinstance(equation, str):
        raise BuiltinError(f"the first argument must be an equation string, got {type_name(equation)}")
    if not tensors:
        raise BuiltinError("needs at least one tensor after the equation")
    ts = align(*[tensor_arg(ctx, t, "each operand") for t in tensors])
    result_dtype = functools.reduce(torch.promote_types, [t.dtype for t in ts])
    wide = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in ts]
    try:
        out = torch.einsum(equation, *wide)
    except RuntimeError as e:
        raise BuiltinError(f"'{equation}' does not fit shapes {', '.join(shape_text(t) for t in ts)}: "
                           f"{str(e).splitlines()[0]}") from None
    return narrow(ctx, "einsum", out, result_dtype)
