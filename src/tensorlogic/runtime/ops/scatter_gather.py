"""MIL scatter/gather family: gather, gather_along_axis, gather_nd and the scatter ops.

Index conventions follow coremltools' op definitions: up to iOS16 negative indices count from the
end; from iOS17 on they are out of bounds. Out-of-bounds indices are "undefined but memory safe" in
the spec: gathers clamp them, scatters drop them. ``validate_indices=True`` raises instead (that
check reads the indices back to the host).
"""

from __future__ import annotations

import math

import torch

from ..registry import op

_SCATTER_PARAMS = {"axis": "int", "mode": "str", "validate_indices": "bool"}


def _check_bounds(index: torch.Tensor, size: int, what: str) -> None:
    bad = (index < 0) | (index >= size)
    if bool(bad.any()):
        first = index[bad].flatten()[0].item()
        raise IndexError(f"{what} index {first} is out of bounds for size {size}")


def _gather_index(index: torch.Tensor, size: int, validate: bool, what: str = "gather") -> torch.Tensor:
    """Wrap negative indices, then clamp (or check) so the gather never reads out of bounds."""
    index = index.long()
    index = torch.where(index < 0, index + size, index)
    if validate:
        _check_bounds(index, size, what)
        return index
    return index.clamp(0, max(size - 1, 0))


@op("gather", params={"axis": "int", "batch_dims": "int", "validate_indices": "bool"}, since="iOS15")
def gather(x: torch.Tensor, indices: torch.Tensor, *, axis: int = 0, batch_dims: int = 0,
        validate_indices: bool = False) -> torch.Tensor:
    """Slices of x along axis picked by indices; the leading batch_dims of x and indices match."""
    axis = axis % x.dim()
    index = _gather_index(indices, x.shape[axis], validate_indices)
    if batch_dims == 0:
        out = x.index_select(axis, index.reshape(-1))
        return out.reshape(*x.shape[:axis], *indices.shape, *x.shape[axis + 1:])
    batch = x.shape[:batch_dims]
    nb = math.prod(batch)
    pre = math.prod(x.shape[batch_dims:axis])
    post = math.prod(x.shape[axis + 1:])
    flat_x = x.reshape(nb, pre, x.shape[axis], post)
    flat_i = index.reshape(nb, 1, -1, 1).expand(nb, pre, -1, post)
    out = flat_x.gather(2, flat_i)
    return out.reshape(*batch, *x.shape[batch_dims:axis], *indices.shape[batch_dims:], *x.shape[axis + 1:])


@op("gather_along_axis", params={"axis": "int", "validate_indices": "bool"}, since="iOS15")
def gather_along_axis(x: torch.Tensor, indices: torch.Tensor, *, axis: int = 0,
        validate_indices: bool = False) -> torch.Tensor:
    """Like numpy.take_along_axis."""
    axis = axis % x.dim()
    return x.gather(axis, _gather_index(indices, x.shape[axis], validate_indices))


@op("gather_nd", params={"batch_dims": "int", "validate_indices": "bool"}, since="iOS15")
def gather_nd(x: torch.Tensor, indices: torch.Tensor, *, batch_dims: int = 0,
        validate_indices: bool = False) -> torch.Tensor:
    """x[indices[..., 0], indices[..., 1], ...] per batch; indices.shape[-1] dims are indexed."""
    depth = indices.shape[-1]
    batch = x.shape[:batch_dims]
    nb = math.prod(batch)
    sizes = x.shape[batch_dims:batch_dims + depth]
    flat_x = x.reshape(nb, *x.shape[batch_dims:])
    parts = [_gather_index(c, n, validate_indices, "gather_nd")
             for c, n in zip(indices.reshape(nb, -1, depth).unbind(-1), sizes)]
    rows = torch.arange(nb, device=x.device).unsqueeze(1)
    out = flat_x[(rows, *parts)]
    return out.reshape(*batch, *indices.shape[batch_dims:-1], *x.shape[batch_dims + depth:])


def _scatter_along(data, axis, index, updates, mode, wrap_negative, validate, what):
    """Scatter ``updates`` into ``data`` at ``index`` (same shape as updates) along ``axis``."""
    size = data.shape[axis]
    index = index.long()
    if wrap_negative:
        index = torch.where(index < 0, index + size, index)
    if validate:
        _check_bounds(index, size, what)
    else:
        # Out-of-bounds writes go to an extra slot that is cut off again afterwards.
        index = torch.where((index < 0) | (index >= size), size, index)
        pad_shape = list(data.shape)
        pad_shape[axis] = 1
        data = torch.cat([data, data.new_zeros(pad_shape)], axis)
    out = _SCATTER_MODES[mode](data, axis, index, updates)
    return out if validate else out.narrow(axis, 0, size)


def _scatter_update(data, axis, index, updates):
    # Where indices repeat, the last update in order wins, as in the spec's sequential definition;
    # torch's scatter leaves that choice to the device (CUDA picks any), so pick the winner first.
    order = torch.arange(updates.numel(), device=updates.device).reshape(updates.shape)
    winner = torch.full(data.shape, -1, dtype=torch.long, device=data.device).scatter_reduce(axis, index, order, "amax")
    return torch.where(winner >= 0, updates.reshape(-1)[winner.clamp(min=0)], data)


def _scatter_div(data, axis, index, updates):
    denom = torch.ones_like(data).scatter_reduce(axis, index, updates, "prod")
    if data.is_floating_point():
        return data / denom
    return torch.div(data, denom, rounding_mode="trunc")


_SCATTER_MODES = {
    "update": _scatter_update,
    "add": lambda d, a, i, u: d.scatter_add(a, i, u),
    "sub": lambda d, a, i, u: d.scatter_add(a, i, -u),
    "mul": lambda d, a, i, u: d.scatter_reduce(a, i, u, "prod"),
    "div": _scatter_div,
    "max": lambda d, a, i, u: d.scatter_reduce(a, i, u, "amax"),
    "min": lambda d, a, i, u: d.scatter_reduce(a, i, u, "amin"),
}


def _check_mode(mode: str) -> None:
    if mode not in _SCATTER_MODES:
        raise ValueError(f"unknown scatter mode {mode!r} (expected one of {', '.join(_SCATTER_MODES)})")


def _scatter(data, indices, updates, axis, mode, wrap_negative, validate):
    _check_mode(mode)
    axis = axis % data.dim()
    count = indices.numel()
    shape = (*data.shape[:axis], count, *data.shape[axis + 1:])
    flat_u = updates.reshape(shape)
    view = [1] * data.dim()
    view[axis] = count
    index = indices.reshape(view).expand(shape)
    return _scatter_along(data, axis, index, flat_u, mode, wrap_negative, validate, "scatter")


def _scatter_nd(data, indices, updates, mode, wrap_negative, validate):
    _check_mode(mode)
    depth = indices.shape[-1]
    parts = indices.reshape(-1, depth).long().unbind(-1)
    total = math.prod(data.shape[:depth])
    linear = torch.zeros_like(parts[0])
    bad = torch.zeros_like(linear, dtype=torch.bool)
    for k, (part, size) in enumerate(zip(parts, data.shape[:depth])):
        if wrap_negative:
            part = torch.where(part < 0, part + size, part)
        if validate:
            _check_bounds(part, size, "scatter_nd")
        bad |= (part < 0) | (part >= size)
        linear = linear + part * math.prod(data.shape[k + 1:depth])
    linear = torch.where(bad, total, linear)
    tail = data.shape[depth:]
    flat_d = data.reshape(total, *tail)
    flat_u = updates.reshape(-1, *tail)
    spread = linear.reshape(-1, *([1] * len(tail))).expand(flat_u.shape)
    out = _scatter_along(flat_d, 0, spread, flat_u, mode, False, False, "scatter_nd")
    return out.reshape(data.shape)


@op("scatter", params=_SCATTER_PARAMS, since="iOS15")
def scatter(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, *, axis: int = 0,
        mode: str = "add") -> torch.Tensor:
    """Combine updates into data at indices along axis; negative indices count from the end."""
    return _scatter(data, indices, updates, axis, mode, True, False)


@op("scatter", params=_SCATTER_PARAMS, since="iOS17")
def scatter_ios17(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, *, axis: int = 0,
        mode: str = "add", validate_indices: bool = False) -> torch.Tensor:
    """iOS17 scatter: negative indices are out of bounds; unchecked out-of-bounds updates are dropped."""
    return _scatter(data, indices, updates, axis, mode, False, validate_indices)


@op("scatter_along_axis", params=_SCATTER_PARAMS, since="iOS15")
def scatter_along_axis(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, *, axis: int = 0,
        mode: str = "add") -> torch.Tensor:
    """Like numpy.put_along_axis with a combining mode; negative indices count from the end."""
    _check_mode(mode)
    return _scatter_along(data, axis % data.dim(), indices, updates, mode, True, False, "scatter_along_axis")


@op("scatter_along_axis", params=_SCATTER_PARAMS, since="iOS17")
def scatter_along_axis_ios17(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, *, axis: int = 0,
        mode: str = "add", validate_indices: bool = False) -> torch.Tensor:
    """iOS17 scatter_along_axis: negative indices are out of bounds; unchecked ones are dropped."""
    _check_mode(mode)
    axis = axis % data.dim()
    return _scatter_along(data, axis, indices, updates, mode, False, validate_indices, "scatter_along_axis")


@op("scatter_nd", params={"mode": "str", "validate_indices": "bool"}, since="iOS15")
def scatter_nd(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, *, mode: str = "add") -> torch.Tensor:
    """Combine updates into data at the index tuples in indices[..., :]; negatives count from the end."""
    return _scatter_nd(data, indices, updates, mode, True, False)


@op("scatter_nd", params={"mode": "str", "validate_indices": "bool"}, since="iOS17")
def scatter_nd_ios17(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, *, mode: str = "add",
        validate_indices: bool = False) -> torch.Tensor:
    """iOS17 scatter_nd: negative indices are out of bounds; unchecked out-of-bounds updates are dropped."""
    return _scatter_nd(data, indices, updates, mode, False, validate_indices)
