"""Numpy decompression of MIL ``constexpr_*`` ops (compressed weights), shared by the reader and the executor.

Both generations are handled: iOS16 (``constexpr_affine_dequantize``, ``constexpr_lut_to_dense`` and
``constexpr_sparse_to_dense`` with packed-byte indices/masks and a ``shape``; parameters stored as op
attributes) and iOS18 (``constexpr_blockwise_shift_scale``, block-wise ``constexpr_lut_to_dense`` with
sub-byte index tensors and vector palettes, ``constexpr_sparse_to_dense`` with a ``uint1`` mask,
``constexpr_lut_to_sparse``, ``constexpr_sparse_blockwise_shift_scale``; parameters as inputs), plus
``constexpr_cast``. Results are computed in float32 and rounded once to the declared output dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import OpError
from .ir import NUMPY_STORAGE, Op, TensorType, Value


def _promote(param: np.ndarray, rank: int, axis: int | None) -> np.ndarray:
    """Give a scalar or per-axis vector ``param`` the data's rank, laid along ``axis``."""
    if param.ndim == rank:
        return param
    if param.ndim == 0:
        return param.reshape((1,) * rank)
    axis = 0 if axis is None else axis % rank
    shape = [1] * rank
    shape[axis] = param.size
    return param.reshape(shape)


def affine_dequantize(quantized_data: np.ndarray, zero_point: np.ndarray, scale: np.ndarray,
                      axis: Any = 0) -> np.ndarray:
    """iOS16: ``scale * (quantized_data - zero_point)``, scale/zero_point per ``axis`` (or scalar)."""
    rank = quantized_data.ndim
    ax = int(np.asarray(axis))
    if not -rank <= ax < rank:
        raise ValueError(f"axis {ax} is out of range for rank {rank}")
    zp = _promote(np.asarray(zero_point, np.float32), rank, ax)
    sc = _promote(np.asarray(scale, np.float32), rank, ax)
    out = (quantized_data.astype(np.float32) - zp) * sc
    return out.astype(np.asarray(scale).dtype)


def _blockwise(param: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Repeat a per-block ``param`` so it has ``shape`` (each dim must divide evenly)."""
    if param.ndim != len(shape):
        raise ValueError(f"{what} has rank {param.ndim}, the data has rank {len(shape)}")
    for axis, (d, s) in enumerate(zip(shape, param.shape)):
        if s == 0 or d % s:
            raise ValueError(f"{what} dim {axis} ({s}) does not divide the data dim ({d})")
        if d != s:
            param = np.repeat(param, d // s, axis=axis)
    return param


def blockwise_shift_scale(data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """iOS18: ``scale * (data - offset)`` with scale/offset given per block of ``data``."""
    out = data.astype(np.float32)
    if offset is not None:
        out = out - _blockwise(np.asarray(offset, np.float32), data.shape, "offset")
    out = out * _blockwise(np.asarray(scale, np.float32), data.shape, "scale")
    return out.astype(np.asarray(scale).dtype)


def lut_to_dense(indices: np.ndarray, lut: np.ndarray, vector_axis: Any = None) -> np.ndarray:
    """iOS18: palette lookup; ``lut`` is ``[groups per dim..., palette, vector]``, one palette per block."""
    rank = indices.ndim
    if lut.ndim != rank + 2:
        raise ValueError(f"lut has rank {lut.ndim}, expected indices rank + 2 = {rank + 2}")
    palette, vector = lut.shape[-2], lut.shape[-1]
    if indices.size and int(indices.max()) >= palette:
        raise ValueError(f"index {int(indices.max())} is past the {palette}-entry palette")
    # View indices as (g0, b0, g1, b1, ...) and the palettes as (g0, 1, g1, 1, ...) to look up per block.
    split, lut_shape = [], []
    for axis, (d, g) in enumerate(zip(indices.shape, lut.shape[:rank])):
        if g == 0 or d % g:
            raise ValueError(f"lut groups dim {axis} ({g}) does not divide the indices dim ({d})")
        split += [g, d // g]
        lut_shape += [g, 1]
    idx = indices.astype(np.intp).reshape(*split, 1, 1)
    table = lut.reshape(*lut_shape, palette, vector)
    picked = np.take_along_axis(table, idx, axis=-2)[..., 0, :]  # (g0, b0, ..., vector)
    picked = picked.reshape(*indices.shape, vector)
    if vector == 1:
        return picked[..., 0]
    if vector_axis is None:
        raise ValueError("vector palettes need vector_axis")
    ax = int(np.asarray(vector_axis)) % rank
    out_shape = list(indices.shape)
    out_shape[ax] *= vector
    return np.moveaxis(picked, -1, ax + 1).reshape(out_shape)


def lut_to_dense_packed(indices: np.ndarray, lut: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """iOS16: ``lut[i]`` for LSB-first packed n-bit indices, n = log2(palette size), reshaped to ``shape``."""
    from ..formats.milblob import unpack_bits

    out_shape = tuple(int(s) for s in np.asarray(shape).reshape(-1))
    count = int(np.prod(out_shape, dtype=np.int64))
    nbits = int(round(np.log2(lut.size))) if lut.size > 1 else 1
    if lut.ndim != 1 or 1 << nbits != lut.size:
        raise ValueError(f"lut of shape {list(lut.shape)} is not a 1-d palette of 2^n entries")
    if indices.size * 8 < count * nbits:
        raise ValueError(f"{indices.size} index bytes hold fewer than {count} {nbits}-bit indices")
    codes = unpack_bits(np.asarray(indices, np.uint8).reshape(-1), nbits, count)
    return lut[codes.astype(np.intp)].reshape(out_shape)


def sparse_to_dense(nonzero_data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """iOS18: scatter ``nonzero_data`` (C order) where the ``uint1`` mask is set; zeros elsewhere."""
    where = np.asarray(mask) != 0
    if int(where.sum()) != nonzero_data.size:
        raise ValueError(f"mask has {int(where.sum())} set bits but there are {nonzero_data.size} values")
    out = np.zeros(where.shape, dtype=nonzero_data.dtype)
    out[where] = nonzero_data.reshape(-1)
    return out


def sparse_to_dense_packed(nonzero_data: np.ndarray, mask: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """iOS16: like ``sparse_to_dense`` with an LSB-first packed byte mask and an explicit ``shape``."""
    out_shape = tuple(int(s) for s in np.asarray(shape).reshape(-1))
    count = int(np.prod(out_shape, dtype=np.int64))
    bits = np.unpackbits(np.asarray(mask, np.uint8).reshape(-1), bitorder="little")
    if bits.size < count:
        raise ValueError(f"{mask.size}-byte mask covers fewer than {count} elements")
    return sparse_to_dense(nonzero_data, bits[:count].reshape(out_shape))


def lut_to_sparse(indices_mask: np.ndarray, indices_nonzero_data: np.ndarray, lut: np.ndarray,
                  vector_axis: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """iOS18: palette lookup on sparse indices; returns (mask, nonzero values)."""
    indices = sparse_to_dense(indices_nonzero_data, indices_mask)
    dense = lut_to_dense(indices, lut, vector_axis)
    mask = np.asarray(indices_mask)
    if lut.shape[-1] > 1:
        mask = np.repeat(mask, lut.shape[-1], axis=int(np.asarray(vector_axis)) % mask.ndim)
    return mask, dense[mask != 0].reshape(-1)


def sparse_blockwise_shift_scale(data_mask: np.ndarray, nonzero_data: np.ndarray, scale: np.ndarray,
                                 offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """iOS18: block-wise dequantization of sparse data; returns (mask, nonzero values)."""
    dense = blockwise_shift_scale(sparse_to_dense(nonzero_data, data_mask), scale, offset)
    return np.asarray(data_mask), dense[np.asarray(data_mask) != 0].reshape(-1)


def cast(source_val: np.ndarray, output_dtype: Any) -> np.ndarray:
    """``source_val`` cast to ``output_dtype`` (a MIL dtype name)."""
    name = str(output_dtype.item() if isinstance(output_dtype, np.ndarray) else output_dtype)
    if name not in NUMPY_STORAGE or name == "string":
        raise ValueError(f"unknown output_dtype {name!r}")
    return np.asarray(source_val).astype(NUMPY_STORAGE[name])


def _affine(**kw: Any) -> tuple[np.ndarray, ...]:
    return (affine_dequantize(kw["quantized_data"], kw["zero_point"], kw["scale"], kw.get("axis", 0)),)


def _lut(**kw: Any) -> tuple[np.ndarray, ...]:
    if "shape" in kw:
        return (lut_to_dense_packed(kw["indices"], kw["lut"], kw["shape"]),)
    return (lut_to_dense(kw["indices"], kw["lut"], kw.get("vector_axis")),)


def _sparse(**kw: Any) -> tuple[np.ndarray, ...]:
    if "shape" in kw:
        return (sparse_to_dense_packed(kw["nonzero_data"], kw["mask"], kw["shape"]),)
    return (sparse_to_dense(kw["nonzero_data"], kw["mask"]),)


# op type -> function of the op's named parameters (numpy) returning its outputs as a tuple.
CONSTEXPR_OPS: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    "constexpr_affine_dequantize": _affine,
    "constexpr_blockwise_shift_scale": lambda **kw: (
        blockwise_shift_scale(kw["data"], kw["scale"], kw.get("offset")),),
    "constexpr_lut_to_dense": _lut,
    "constexpr_sparse_to_dense": _sparse,
    "constexpr_lut_to_sparse": lambda **kw: lut_to_sparse(
        kw["indices_mask"], kw["indices_nonzero_data"], kw["lut"], kw.get("vector_axis")),
    "constexpr_sparse_blockwise_shift_scale": lambda **kw: sparse_blockwise_shift_scale(
        kw["data_mask"], kw["nonzero_data"], kw["scale"], kw.get("offset")),
    "constexpr_cast": lambda **kw: (cast(kw["source_val"], kw["output_dtype"]),),
}


def constexpr_params(op: Op, resolve: Callable[[str], np.ndarray]) -> dict[str, Any]:
    """An op's parameters as numpy: inputs (literals, or variables via ``resolve``) and attributes."""
    params: dict[str, Any] = {}
    for key, value in op.attributes.items():
        if key != "name":
            params[key] = value.numpy()
    for key, args in op.inputs.items():
        if len(args) != 1:
            raise OpError(f"input {key!r} binds {len(args)} arguments, expected one", op.type, op.name)
        arg = args[0]
        params[key] = arg.numpy() if isinstance(arg, Value) else resolve(arg)
    return params


def evaluate_constexpr(op: Op, resolve: Callable[[str], np.ndarray]) -> tuple[np.ndarray, ...]:
    """Decompress one constexpr op; outputs in the op's declared dtypes and shapes."""
    fn = CONSTEXPR_OPS.get(op.type)
    if fn is None:
        raise OpError("unknown constexpr op (no decompressor)", op.type, op.name)
    params = constexpr_params(op, resolve)
    try:
        outs = fn(**params)
    except (KeyError, ValueError, IndexError, TypeError) as e:
        missing = f"missing parameter {e}" if isinstance(e, KeyError) else str(e)
        raise OpError(missing, op.type, op.name) from None
    result = []
    for out, value in zip(op.outputs, outs):
        if isinstance(out.type, TensorType):
            value = np.asarray(value).astype(NUMPY_STORAGE[out.type.dtype], copy=False)
            if out.type.is_static and tuple(value.shape) != tuple(out.type.shape or ()):
                raise OpError(
                    f"decompressed shape {list(value.shape)} differs from the declared {list(out.type.shape or ())}",
                    op.type, out.name,
                )
        result.append(value)
    return tuple(result)
