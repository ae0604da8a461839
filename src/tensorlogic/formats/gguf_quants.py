"""GGUF tensor types in numpy: block sizes, dequantization to float32, quantization of the simple types.

Every dequantizer gives bit for bit the float32 that gguf-py's ``gguf.quants.dequantize`` gives (gguf-py
follows ggml's reference C code): the same float operations in the same order, NaN and inf included.
The speed comes from never looping over blocks in Python and from keeping each step a flat numpy
operation: block fields are read through 1-D strided views, bit fields are unpacked on contiguous
byte arrays, lookups fetch 2 to 8 values per index, work proceeds in chunks that stay in cache while
writing into one preallocated output, and large tensors are split over a few threads.

Block layouts and formulas: ggml-common.h / ggml-quants.c (llama.cpp), as mirrored by gguf-py 0.19.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import FormatError, UnsupportedError

# Elements per block and bytes per block, for every ggml type (ggml.h; gguf-py's GGML_QUANT_SIZES).
TYPE_INFO: dict[str, tuple[int, int]] = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "F64": (1, 8),
    "I8": (1, 1), "I16": (1, 2), "I32": (1, 4), "I64": (1, 8),
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    # gguf-py keeps the legacy 40-byte Q8_1 (two f32); today's ggml block is 36 bytes. Files never hold it.
    "Q8_1": (32, 40),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
    "Q8_K": (256, 292),
    "IQ2_XXS": (256, 66), "IQ2_XS": (256, 74), "IQ2_S": (256, 82), "IQ3_XXS": (256, 98),
    "IQ3_S": (256, 110), "IQ1_S": (256, 50), "IQ1_M": (256, 56), "IQ4_NL": (32, 18), "IQ4_XS": (256, 136),
    "TQ1_0": (256, 54), "TQ2_0": (256, 66), "MXFP4": (32, 17), "NVFP4": (64, 36), "Q1_0": (128, 18),
}

# Byte offsets of the f16 fields (scales, mins) inside one block. Not listed: IQ1_M (its f16 is spread
# over the top nibbles of four uint16 words), Q8_K (an f32 scale), MXFP4/NVFP4 (8-bit scales).
F16_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "Q1_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
    "IQ2_XXS": (0,), "IQ2_XS": (0,), "IQ2_S": (0,), "IQ3_XXS": (0,), "IQ3_S": (0,), "IQ1_S": (0,),
    "IQ4_NL": (0,), "IQ4_XS": (0,), "TQ1_0": (52,), "TQ2_0": (64,),
}

# ggml has no dequantizer for Q8_1 (it only ever holds activations), and neither has gguf-py.
NOT_DEQUANTIZABLE = frozenset({"Q8_1"})

# Types that are plain numbers: F32 is returned as a view, the others are cast.
_PLAIN = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}

# Output elements per chunk: the chunk's output and temporaries stay in a core's L2 cache.
CHUNK_ELEMENTS = 1 << 16
# Default number of threads for large tensors, and the fewest chunks worth a thread of their own.
THREADS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
THREAD_MIN_CHUNKS = 4

Kernel = Callable[[np.ndarray, np.ndarray], None]
_KERNELS: dict[str, Kernel] = {}


def type_name(qtype: Any) -> str:
    """The ggml type name for a name string or an enum member such as ``GGMLQuantizationType.Q4_K``."""
    return qtype if isinstance(qtype, str) else str(getattr(qtype, "name", qtype))


def _where(path: str | os.PathLike | None, offset: int | None) -> str:
    if path is None:
        return ""
    return f"{os.fspath(path)}" + (f" at byte {offset}" if offset is not None else "") + ": "


def check(
    nbytes: int,
    qtype: Any,
    shape: Sequence[int],
    path: str | os.PathLike | None = None,
    offset: int | None = None,
) -> tuple[str, tuple[int, ...], int]:
    """Validate a tensor's type, shape and byte count; return (type name, shape, number of blocks)."""
    name = type_name(qtype)
    if name not in TYPE_INFO:
        known = ", ".join(TYPE_INFO)
        raise UnsupportedError(f"{_where(path, offset)}unknown GGUF tensor type {name!r} (known: {known})")
    block, size = TYPE_INFO[name]
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise FormatError(f"{name} tensor has a negative dimension in shape {dims}", path, offset)
    count = math.prod(dims)
    if (dims[-1] if dims else count) % block:
        raise FormatError(
            f"{name} tensor of shape {dims}: last dimension is not a multiple of the block size {block}",
            path, offset,
        )
    want = count // block * size
    if nbytes != want:
        raise FormatError(f"{name} tensor of shape {dims} takes {want} bytes, got {nbytes}", path, offset)
    if name in NOT_DEQUANTIZABLE:
        raise UnsupportedError(
            f"{_where(path, offset)}{name} tensors cannot be dequantized (ggml and gguf-py have no formula)"
        )
    return name, dims, count // block


def dequantize(
    raw: np.ndarray,
    qtype: Any,
    shape: Sequence[int],
    *,
    path: str | os.PathLike | None = None,
    offset: int | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Float32 values of a GGUF tensor from its raw little-endian bytes; ``shape`` is in numpy order.

    ``path``/``offset`` only name the tensor in error messages. F32 comes back as a view of ``raw``.
    ``threads``: how many threads share the work (numpy releases the GIL in its loops); ``None``
    takes ``THREADS``, and a tensor of fewer than ``THREAD_MIN_CHUNKS`` chunks per thread uses fewer.
    """
    data = np.ascontiguousarray(raw).reshape(-1)
    if data.dtype != np.uint8:
        data = data.view(np.uint8)
    name, dims, n_blocks = check(data.size, qtype, shape, path, offset)
    if name == "F32":
        return data.view("<f4").astype(np.float32, copy=False).reshape(dims)
    block, size = TYPE_INFO[name]
    if name in _PLAIN or name == "BF16":
        src = data.view(_PLAIN.get(name, "<u2")).reshape(n_blocks, 1)
    else:
        src = data.reshape(n_blocks, size)
    out = np.empty((n_blocks, block), np.float32)
    kernel = _KERNELS.get(name, _cast)
    step = max(1, CHUNK_ELEMENTS // block)
    n_chunks = -(-n_blocks // step)
    workers = max(1, min(THREADS if threads is None else threads, n_chunks // THREAD_MIN_CHUNKS))
    if workers == 1:
        kernel(src, out)
    else:
        # Contiguous runs of whole chunks, one per thread; each writes only its own rows.
        bounds = [n_chunks * k // workers * step for k in range(workers)] + [n_blocks]
        list(_pool(workers).map(lambda a, z: kernel(src[a:z], out[a:z]), bounds[:-1], bounds[1:]))
    return out.reshape(dims)


def int4_fields(raw: np.ndarray, qtype: str, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_0/Q4_K rows uint8 [rows, row_bytes] as 4-bit values with one scale and offset per 32 weights:
    (q uint8 [rows, cols] in 0..15, scale and offset float32 [rows, cols / 32]), each weight being
    (q - 8) * scale + offset, the value ``dequantize`` gives it (the layout torch's int4 matmul takes)."""
    name = type_name(qtype)
    blocks = np.ascontiguousarray(raw).reshape(-1, TYPE_INFO[name][1])
    if name == "Q4_0":
        q = _nibbles(_bytes(blocks, 2, 16), 16)
        scale = _f16(blocks, 0)[:, None]
        offset = np.zeros_like(scale)
    elif name == "Q4_K":
        q = _nibbles(_bytes(blocks, 16, 128), 32)
        dm = _k_scales(blocks)
        scale, offset = dm[:, 0], 8 * dm[:, 0] - dm[:, 1]
    else:
        raise UnsupportedError(f"{name} is not a 4-bit type with one scale and offset per 32 weights")
    return q.reshape(rows, cols), scale.reshape(rows, -1), offset.reshape(rows, -1)


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="tl-dequant")


def _kernel(*names: str) -> Callable[[Kernel], Kernel]:
    def register(fn: Kernel) -> Kernel:
        for name in names:
            _KERNELS[name] = fn
        return fn

    return register


# ---------------------------------------------------------------------------------------------------
# Helpers. A kernel gets all its blocks ``b`` (blocks, bytes) and their output ``o`` (blocks, values).
# It first computes what each block needs once (scales), vectorized over every block, then walks the
# elements chunk by chunk (``_chunks``) so that temporaries stay in cache. Each step keeps numpy's
# inner loops long: a block field is one 1-D strided view, moving a run of bytes is one copy of
# void items, and per-run scales are repeated out and applied by flat multiplies.


def _chunks(o: np.ndarray) -> list[slice]:
    """Runs of blocks holding ``CHUNK_ELEMENTS`` output values each."""
    step = max(1, CHUNK_ELEMENTS // o.shape[1])
    return [slice(i, i + step) for i in range(0, o.shape[0], step)]


def _col(b: np.ndarray, start: int, dtype: Any) -> np.ndarray:
    """Field at byte ``start`` of every block, as a 1-D strided view."""
    dt = np.dtype(dtype)
    return b[:, start : start + dt.itemsize].view(dt)[:, 0]


def _f16(b: np.ndarray, start: int) -> np.ndarray:
    """The f16 field at ``start`` of every block, as float32 (numpy's conversion, as gguf-py's)."""
    return _col(b, start, "<f2").astype(np.float32)


def _bytes(b: np.ndarray, start: int, count: int) -> np.ndarray:
    """Bytes ``start : start + count`` of every block as a contiguous (blocks, count) array."""
    out = np.empty((b.shape[0], count), np.uint8)
    out.view(f"V{count}")[:, 0] = _col(b, start, f"V{count}")
    return out


def _unpack(src: np.ndarray, group: int, shifts: Sequence[int], mask: int) -> np.ndarray:
    """Bit fields of contiguous bytes: each run of ``group`` bytes becomes one run per shift.

    This is ggml's layout everywhere: ``(x.reshape(n, -1, 1, group) >> shifts[:, None]) & mask``.
    Rows that are whole uint64 words are shifted 8 bytes at a time (numpy has no SIMD byte shift).
    """
    n, length = src.shape
    out = np.empty((n, length * len(shifts)), np.uint8)
    dst = out.view(f"V{group}").reshape(-1, len(shifts))
    words, lanes = (src.view(np.uint64), _LANES) if length % 8 == 0 else (src, 1)
    tmp = np.empty_like(words)
    runs = tmp.view(np.uint8).view(f"V{group}").reshape(-1)
    for i, s in enumerate(shifts):
        np.right_shift(words, s, out=tmp)
        np.bitwise_and(tmp, mask * lanes, out=tmp)
        dst[:, i] = runs
    return out


def _nibbles(src: np.ndarray, group: int) -> np.ndarray:
    return _unpack(src, group, (0, 4), 0xF)


def _bits(src: np.ndarray) -> np.ndarray:
    """Bit j of each row of bytes (little-endian bit order) as byte j of the result, 0 or 1."""
    return np.unpackbits(src, axis=1, bitorder="little")


# Byte arithmetic on whole uint64 words (numpy has no SIMD for 8-bit shifts): the callers' bytes
# never carry into their neighbours.
_LANES = 0x0101010101010101


def _or_shifted(q: np.ndarray, high: np.ndarray, shift: int) -> np.ndarray:
    """q |= high << shift, bytewise, for bytes where ``high << shift`` stays below 256."""
    h = high.view(np.uint64)
    np.left_shift(h, shift, out=h)
    np.bitwise_or(q.view(np.uint64), h, out=q.view(np.uint64))
    return q


def _minus(q: np.ndarray, k: int) -> np.ndarray:
    """q - k as int8, bytewise, for bytes below 128 and k <= 128 (no borrow crosses a byte)."""
    w = q.view(np.uint64)
    w |= 0x80 * _LANES
    w -= k * _LANES
    w ^= 0x80 * _LANES
    return q.view(np.int8)


def _scale(o: np.ndarray, q: np.ndarray | None, scale: np.ndarray, add=None, sub=None) -> None:
    """o = scale * q (+ add / - sub), with one scale per equal run of each block's values.

    The per-run values are repeated out first: numpy multiplies two flat arrays faster than it
    broadcasts one over short rows.
    """
    flat = o.reshape(-1)
    if q is not None:
        np.copyto(flat, q.reshape(-1), casting="unsafe")
    run = flat.size // scale.size
    np.multiply(flat, np.repeat(scale.reshape(-1), run), out=flat)
    if add is not None:
        np.add(flat, np.repeat(add.reshape(-1), run), out=flat)
    if sub is not None:
        np.subtract(flat, np.repeat(sub.reshape(-1), run), out=flat)


def _take(table: np.ndarray, index: np.ndarray, o: np.ndarray) -> None:
    """o = table[index], where each table row is as many bytes as ``o`` gets per index."""
    np.take(table, index.reshape(-1).astype(np.intp), out=o.view(table.dtype).reshape(-1), mode="clip")


# ---------------------------------------------------------------------------------------------------
# Tables.

# E2M1 (FP4) values doubled, as ggml's kvalues_mxfp4; IQ4_NL's non-linear 4-bit levels (kvalues_iq4nl).
KVALUES_MXFP4 = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)
KVALUES_IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


@functools.cache
def ksigns() -> np.ndarray:
    """ggml's ksigns_iq2xs: 7 sign bits plus an eighth that makes the count of minus signs even."""
    i = np.arange(128, dtype=np.uint8)
    parity = np.unpackbits(i[:, None], axis=1).sum(axis=1, dtype=np.uint8) & 1
    return i | (parity << 7)


@functools.cache
def e8m0_half() -> np.ndarray:
    """Float32 of each E8M0 byte, halved (ggml_e8m0_to_fp32_half): the MXFP4 scale."""
    x = np.arange(256, dtype=np.uint32)
    bits = np.where(x < 2, np.uint32(0x00200000) << x, (x - 1) << np.uint32(23))
    return bits.astype(np.uint32).view(np.float32)


@functools.cache
def ue4m3_half() -> np.ndarray:
    """Float32 of each unsigned E4M3 byte (bias 7, top bit ignored), halved: the NVFP4 scale.

    As ggml_ue4m3_to_fp32: 0x00 and 0x7F (the NaN pattern) read as 0.
    """
    x = np.arange(256)
    exp, man = (x >> 3) & 0xF, x & 7
    value = np.where(exp == 0, np.ldexp(man, -9), np.ldexp(8 + man, exp - 10))
    value = np.where((x == 0) | (x == 0x7F), 0.0, value * 0.5)
    return value.astype(np.float32)


@functools.cache
def grid(qtype: str) -> np.ndarray:
    """The IQ codebook of ``qtype`` as float32 (rows, values per row).

    The numbers are ggml's iq*_grid tables (ggml-common.h). We take them from the hex constants that
    gguf-py ships in ``gguf.quants`` (data only; no gguf-py code runs) and decode them here: each
    grid value is a small code packed LSB-first into bytes and mapped through ``grid_map``.
    """
    from gguf import quants as ref

    cls = getattr(ref, "IQ1_S" if qtype == "IQ1_M" else qtype)
    packed = np.frombuffer(bytes.fromhex(cls.grid_hex.decode("ascii")), np.uint8)
    bits = max(1, (len(cls.grid_map) - 1).bit_length())
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * (8 // per_byte)
    codes = (packed[:, None] >> shifts) & ((1 << bits) - 1)
    values = np.asarray(cls.grid_map, np.float32)[codes.reshape(-1)]
    return values.reshape(cls.grid_shape)


def _sign_vectors(sign_bytes: np.ndarray) -> np.ndarray:
    """(k, 8) float32 of +1/-1: bit j of each byte set means value j is negative."""
    return np.where(_bits(sign_bytes[:, None]), np.float32(-1), np.float32(1))


@functools.cache
def table(key: str) -> np.ndarray:
    """Lookup tables that turn one index into several finished values (rows of float32; masks uint32).

    ``pair:mxfp4``/``pair:iq4nl``: two nibbles (first | second << 4) -> their two level values.
    ``IQ2_XXS``/``IQ2_XS``: grid index | 7-bit ksigns index << (8 or 9) -> 8 signed grid values.
    ``IQ1``: grid index (11 bits) | delta sign << 11 -> 8 values of grid + delta.
    ``signs``: a sign byte -> 8 uint32 masks (0 or the float sign bit), XORed into grid values.
    Grid values are finite and nonzero, so a sign applied to them first gives, after the scale, the
    bits of gguf-py's ``(scale * grid) * sign`` for every scale, NaN and inf included.
    """
    if key.startswith("pair:"):
        levels = np.asarray(KVALUES_MXFP4 if key == "pair:mxfp4" else KVALUES_IQ4NL, np.float32)
        i = np.arange(256)
        return np.stack([levels[i & 0xF], levels[i >> 4]], axis=1)
    if key in ("IQ2_XXS", "IQ2_XS"):
        g = grid(key)
        signs = _sign_vectors(ksigns())
        shift = 8 if key == "IQ2_XXS" else 9
        i = np.arange(len(signs) << shift)
        return g[i & ((1 << shift) - 1)] * signs[i >> shift]
    if key == "IQ1":
        g = grid("IQ1_S")
        return np.concatenate([g + np.float32(0.125), g - np.float32(0.125)])
    if key == "signs":
        return np.where(_bits(np.arange(256, dtype=np.uint8)[:, None]), np.uint32(0x80000000), np.uint32(0))
    raise KeyError(key)


def _void_rows(values: np.ndarray) -> np.ndarray:
    """A (rows, k) array as a 1-D array of k-value void items: np.take then moves a row per index."""
    values = np.ascontiguousarray(values)
    return values.view(f"V{values.shape[1] * values.itemsize}").reshape(-1)


@functools.cache
def _void_table(key: str) -> np.ndarray:
    return _void_rows(table(key))


@functools.cache
def _void_grid(qtype: str) -> np.ndarray:
    return _void_rows(grid(qtype))


def _levels(nibbles: np.ndarray, key: str, o: np.ndarray) -> None:
    """o = levels[nibbles], two neighbouring nibbles per lookup."""
    x = nibbles.view("<u2")
    _take(_void_table(key), (x & 0xF) | ((x >> 4) & 0xF0), o)


def _flip_signs(o: np.ndarray, sign_bytes: np.ndarray) -> None:
    """Negate value j of each group of 8 where bit j of its sign byte is set (exact, like * -1)."""
    masks = np.empty(o.shape, np.uint32)
    _take(_void_table("signs"), sign_bytes, masks)
    bits = o.view(np.uint32)
    np.bitwise_xor(bits, masks, out=bits)


# ---------------------------------------------------------------------------------------------------
# Plain types: one streaming numpy call each, no temporaries.


def _cast(src: np.ndarray, o: np.ndarray) -> None:
    np.copyto(o, src, casting="unsafe")


@_kernel("BF16")
def _bf16(src: np.ndarray, o: np.ndarray) -> None:
    np.left_shift(src, 16, out=o.view(np.uint32), dtype=np.uint32)


# ---------------------------------------------------------------------------------------------------
# 32-element blocks.


@_kernel("Q4_0")
def _q4_0(b: np.ndarray, o: np.ndarray) -> None:
    d = _f16(b, 0)
    for s in _chunks(o):
        _scale(o[s], _minus(_nibbles(_bytes(b[s], 2, 16), 16), 8), d[s])


@_kernel("Q4_1")
def _q4_1(b: np.ndarray, o: np.ndarray) -> None:
    d, m = _f16(b, 0), _f16(b, 2)
    for s in _chunks(o):
        _scale(o[s], _nibbles(_bytes(b[s], 4, 16), 16), d[s], add=m[s])


def _five_bits(b: np.ndarray, qh: int, qs: int) -> np.ndarray:
    return _or_shifted(_nibbles(_bytes(b, qs, 16), 16), _bits(_bytes(b, qh, 4)), 4)


@_kernel("Q5_0")
def _q5_0(b: np.ndarray, o: np.ndarray) -> None:
    d = _f16(b, 0)
    for s in _chunks(o):
        _scale(o[s], _minus(_five_bits(b[s], 2, 6), 16), d[s])


@_kernel("Q5_1")
def _q5_1(b: np.ndarray, o: np.ndarray) -> None:
    d, m = _f16(b, 0), _f16(b, 2)
    for s in _chunks(o):
        _scale(o[s], _five_bits(b[s], 4, 8), d[s], add=m[s])


@_kernel("Q8_0")
def _q8_0(b: np.ndarray, o: np.ndarray) -> None:
    d = _f16(b, 0)
    for s in _chunks(o):
        _scale(o[s], _bytes(b[s], 2, 32).view(np.int8), d[s])


def _level_blocks(b: np.ndarray, o: np.ndarray, d: np.ndarray, key: str, start: int, group: int) -> None:
    """d * levels[nibble] for 4-bit lookup types, nibbles at ``start`` split in runs of ``group``."""
    count = b.shape[1] - start
    for s in _chunks(o):
        _levels(_nibbles(_bytes(b[s], start, count), group), key, o[s])
        _scale(o[s], None, d[s])


@_kernel("IQ4_NL")
def _iq4_nl(b: np.ndarray, o: np.ndarray) -> None:
    _level_blocks(b, o, _f16(b, 0), "pair:iq4nl", 2, 16)


@_kernel("MXFP4")
def _mxfp4(b: np.ndarray, o: np.ndarray) -> None:
    _level_blocks(b, o, e8m0_half()[b[:, 0]], "pair:mxfp4", 1, 16)


@_kernel("NVFP4")
def _nvfp4(b: np.ndarray, o: np.ndarray) -> None:
    _level_blocks(b, o, ue4m3_half()[_bytes(b, 0, 4)], "pair:mxfp4", 4, 8)


@_kernel("Q1_0")
def _q1_0(b: np.ndarray, o: np.ndarray) -> None:
    # ggml-quants.c dequantize_row_q1_0: bit set -> d, clear -> -d (a negation, not a multiply).
    d = _f16(b, 0)
    for s in _chunks(o):
        np.copyto(o[s], d[s, None])
        _flip_signs(o[s], np.invert(_bytes(b[s], 2, 16)))


# ---------------------------------------------------------------------------------------------------
# K-quants (256-element super-blocks).


@_kernel("Q2_K")
def _q2_k(b: np.ndarray, o: np.ndarray) -> None:
    sc = _bytes(b, 0, 16)
    dl = _f16(b, 80)[:, None] * (sc & 0xF).astype(np.float32)
    ml = _f16(b, 82)[:, None] * (sc >> 4).astype(np.float32)
    for s in _chunks(o):
        _scale(o[s], _unpack(_bytes(b[s], 16, 64), 32, (0, 2, 4, 6), 3), dl[s], sub=ml[s])


@_kernel("Q3_K")
def _q3_k(b: np.ndarray, o: np.ndarray) -> None:
    low = _nibbles(_bytes(b, 96, 8), 8)
    high = _unpack(_bytes(b, 104, 4), 4, (0, 2, 4, 6), 3)
    scales = (low | (high << 4)).view(np.int8) - np.int8(32)
    dl = _f16(b, 108)[:, None] * scales.astype(np.float32)
    for s in _chunks(o):
        # ggml: q = low2 - (hmask bit clear ? 4 : 0), i.e. low2 + 4 * bit - 4.
        q = _unpack(_bytes(b[s], 32, 64), 32, (0, 2, 4, 6), 3)
        _or_shifted(q, _unpack(_bytes(b[s], 0, 32), 32, range(8), 1), 2)
        _scale(o[s], _minus(q, 4), dl[s])


def _k_scales(b: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K: (blocks, 2, 8) float32 of d * scale and dmin * min for the eight sub-blocks.

    The six-bit values are packed in 12 bytes (ggml's get_scale_min_k4); they are unpacked four at a
    time as uint32 lanes: word 0 holds scales 0-3 (and the top bits of 4-7), word 1 mins 0-3 (and
    top bits), word 2 the low nibbles of scales 4-7 and, in its high nibbles, of mins 4-7.
    """
    w = _bytes(b, 4, 12).view("<u4")
    low = w[:, :2] & 0x3F3F3F3F
    high = ((w[:, 2:] >> np.array([0, 4], np.uint32)) & 0x0F0F0F0F) | ((w[:, :2] >> 2) & 0x30303030)
    packed = np.stack([low, high], axis=2)
    factors = b[:, :4].view("<f2").astype(np.float32)[:, :, None]
    return factors * packed.view(np.uint8).reshape(-1, 2, 8).astype(np.float32)


@_kernel("Q4_K")
def _q4_k(b: np.ndarray, o: np.ndarray) -> None:
    dm = _k_scales(b)
    for s in _chunks(o):
        _scale(o[s], _nibbles(_bytes(b[s], 16, 128), 32), dm[s, 0], sub=dm[s, 1])


@_kernel("Q5_K")
def _q5_k(b: np.ndarray, o: np.ndarray) -> None:
    dm = _k_scales(b)
    for s in _chunks(o):
        q = _or_shifted(_nibbles(_bytes(b[s], 48, 128), 32), _unpack(_bytes(b[s], 16, 32), 32, range(8), 1), 4)
        _scale(o[s], q, dm[s, 0], sub=dm[s, 1])


@_kernel("Q6_K")
def _q6_k(b: np.ndarray, o: np.ndarray) -> None:
    d = _f16(b, 208)[:, None] * _bytes(b, 192, 16).view(np.int8).astype(np.float32)
    for s in _chunks(o):
        q = _or_shifted(_nibbles(_bytes(b[s], 0, 128), 64), _unpack(_bytes(b[s], 128, 64), 32, (0, 2, 4, 6), 3), 4)
        _scale(o[s], _minus(q, 32), d[s])


@_kernel("Q8_K")
def _q8_k(b: np.ndarray, o: np.ndarray) -> None:
    # ggml-quants.c dequantize_row_q8_K: y = d * q with an f32 d (gguf-py has no Q8_K dequantizer).
    d = _col(b, 0, "<f4").astype(np.float32)
    for s in _chunks(o):
        _scale(o[s], _bytes(b[s], 4, 256).view(np.int8), d[s])


@_kernel("IQ4_XS")
def _iq4_xs(b: np.ndarray, o: np.ndarray) -> None:
    low = _nibbles(_bytes(b, 4, 4), 1)
    high = (_col(b, 2, "<u2")[:, None] >> np.arange(0, 16, 2, dtype=np.uint16)) & 3
    scales = (low | (high.astype(np.uint8) << 4)).view(np.int8) - np.int8(32)
    _level_blocks(b, o, _f16(b, 0)[:, None] * scales.astype(np.float32), "pair:iq4nl", 8, 16)


# ---------------------------------------------------------------------------------------------------
# Ternary types.

_POW3 = np.array([1, 3, 9, 27, 81], np.uint8)


@_kernel("TQ1_0")
def _tq1_0(b: np.ndarray, o: np.ndarray) -> None:
    # Five base-3 digits per byte, scaled to a fixed point by 256/243: digit k of byte x is
    # ((x * 3**k mod 256) * 3) >> 8, which is 0, 1 or 2 as x * 3**k mod 256 crosses 86 and 171.
    d = _f16(b, 52)
    for s in _chunks(o):
        src = _bytes(b[s], 0, 52)
        n = src.shape[0]
        p = np.empty((n, 256), np.uint8)
        np.multiply(src[:, None, :32], _POW3[:, None], out=p[:, :160].reshape(n, 5, 32))
        np.multiply(src[:, None, 32:48], _POW3[:, None], out=p[:, 160:240].reshape(n, 5, 16))
        np.multiply(src[:, None, 48:52], _POW3[:4, None], out=p[:, 240:].reshape(n, 4, 4))
        q = np.greater_equal(p, 86).view(np.int8)
        q += np.greater_equal(p, 171).view(np.int8)
        q -= 1
        _scale(o[s], q, d[s])


@_kernel("TQ2_0")
def _tq2_0(b: np.ndarray, o: np.ndarray) -> None:
    d = _f16(b, 64)
    for s in _chunks(o):
        _scale(o[s], _minus(_unpack(_bytes(b[s], 0, 64), 32, (0, 2, 4, 6), 3), 1), d[s])


# ---------------------------------------------------------------------------------------------------
# IQ types: codebook (grid) lookups, sign bits, 4-bit sub-block scales.


def _half_scale(d: np.ndarray, s: np.ndarray, k: float) -> np.ndarray:
    """ggml's d * (0.5 + s) * k sub-block scale, in gguf-py's float32 operation order."""
    return d[:, None] * (np.float32(0.5) + s.astype(np.float32)) * np.float32(k)


def _ksign_index(aux: np.ndarray) -> np.ndarray:
    """Four 7-bit ksigns indices packed in bits 0..27 of each uint32."""
    return (aux[..., None] >> np.array([0, 7, 14, 21], np.uint32)) & 0x7F


def _nibble_scales(b: np.ndarray, start: int, count: int) -> np.ndarray:
    """4-bit sub-block scales, low nibble first within each byte."""
    return _nibbles(_bytes(b, start, count), 1)


@_kernel("IQ2_XXS")
def _iq2_xxs(b: np.ndarray, o: np.ndarray) -> None:
    # Eight (4 grid bytes, uint32 of 4 ksigns indices | scale << 28) pairs per block.
    raw = _bytes(b, 2, 64)
    aux = raw.view("<u4").reshape(-1, 8, 2)[..., 1]
    db = _half_scale(_f16(b, 0), aux >> 28, 0.25)
    for s in _chunks(o):
        index = raw[s].reshape(-1, 8, 8)[..., :4].astype(np.uint32) | (_ksign_index(aux[s]) << 8)
        _take(_void_table("IQ2_XXS"), index, o[s])
        _scale(o[s], None, db[s])


@_kernel("IQ2_XS")
def _iq2_xs(b: np.ndarray, o: np.ndarray) -> None:
    # Each uint16 is a 9-bit grid index and a 7-bit ksigns index: one lookup in the signed table.
    db = _half_scale(_f16(b, 0), _nibble_scales(b, 66, 8), 0.25)
    for s in _chunks(o):
        _take(_void_table("IQ2_XS"), _bytes(b[s], 2, 64).view("<u2"), o[s])
        _scale(o[s], None, db[s])


@_kernel("IQ2_S")
def _iq2_s(b: np.ndarray, o: np.ndarray) -> None:
    db = _half_scale(_f16(b, 0), _nibble_scales(b, 74, 8), 0.25)
    high = _unpack(_bytes(b, 66, 8), 1, (0, 2, 4, 6), 3).astype(np.uint16) << 8
    for s in _chunks(o):
        _take(_void_grid("IQ2_S"), _bytes(b[s], 2, 32) | high[s], o[s])
        _flip_signs(o[s], _bytes(b[s], 34, 32))
        _scale(o[s], None, db[s])


@_kernel("IQ3_XXS")
def _iq3_xxs(b: np.ndarray, o: np.ndarray) -> None:
    aux = _bytes(b, 66, 32).view("<u4")
    db = _half_scale(_f16(b, 0), aux >> 28, 0.5)
    for s in _chunks(o):
        _take(_void_grid("IQ3_XXS"), _bytes(b[s], 2, 64), o[s])
        _flip_signs(o[s], ksigns()[_ksign_index(aux[s])])
        _scale(o[s], None, db[s])


@_kernel("IQ3_S")
def _iq3_s(b: np.ndarray, o: np.ndarray) -> None:
    db = _f16(b, 0)[:, None] * (1 + 2 * _nibble_scales(b, 106, 4))
    for s in _chunks(o):
        index = _bytes(b[s], 2, 64).astype(np.uint16) | (_bits(_bytes(b[s], 66, 8)).astype(np.uint16) << 8)
        _take(_void_grid("IQ3_S"), index, o[s])
        _flip_signs(o[s], _bytes(b[s], 74, 32))
        _scale(o[s], None, db[s])


@_kernel("IQ1_S")
def _iq1_s(b: np.ndarray, o: np.ndarray) -> None:
    qh = _bytes(b, 34, 16).view("<u2")
    dl = _f16(b, 0)[:, None] * (2 * ((qh >> 12) & 7) + 1)
    # Index into the IQ1 table: 8 grid-index bits from qs, 3 from qh, and qh's delta sign bit.
    high = (((qh[..., None] >> np.array([0, 3, 6, 9], np.uint16)) & 7) << 8) | ((qh >> 15) << 11)[..., None]
    for s in _chunks(o):
        _take(_void_table("IQ1"), _bytes(b[s], 2, 32).reshape(-1, 8, 4) | high[s], o[s])
        _scale(o[s], None, dl[s])


@_kernel("IQ1_M")
def _iq1_m(b: np.ndarray, o: np.ndarray) -> None:
    # The f16 super-block scale is spread over the top 4 bits of the four uint16 scale words.
    sc = _bytes(b, 48, 8).view("<u2")
    d_bits = (sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) | (sc[:, 3] & 0xF000)
    sub = ((sc[..., None] >> np.array([0, 3, 6, 9], np.uint16)) & 7).reshape(-1, 16)
    dl = d_bits.view(np.float16).astype(np.float32)[:, None] * (2 * sub + 1)
    for s in _chunks(o):
        # Each nibble of qh holds a grid index's top 3 bits and, in bit 3, the sign of its delta.
        high = _nibble_scales(b[s], 32, 16).astype(np.uint16) << 8
        _take(_void_table("IQ1"), _bytes(b[s], 0, 32) | high, o[s])
        _scale(o[s], None, dl[s])


# ---------------------------------------------------------------------------------------------------
# Quantization (float32 -> blocks), bit-exact with gguf.quants.quantize / ggml's *_ref quantizers.


def quantize(arr: np.ndarray, qtype: Any) -> np.ndarray:
    """Raw little-endian bytes of ``arr`` stored as ``qtype``: shape (..., bytes per row), uint8.

    Supports F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1.
    """
    name = type_name(qtype)
    if name not in _QUANTIZERS:
        supported = ", ".join(_QUANTIZERS)
        raise UnsupportedError(f"cannot quantize to {name!r}; supported: {supported}")
    data = np.atleast_1d(np.asarray(arr)).astype(np.float32, copy=False)
    block, size = TYPE_INFO[name]
    if data.shape[-1] % block:
        raise UnsupportedError(f"rows of {data.shape[-1]} values cannot be stored as {name} (blocks of {block})")
    blocks = data.reshape(-1, block)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = _QUANTIZERS[name](blocks)
    return out.reshape(*data.shape[:-1], data.shape[-1] // block * size)


def _inverse(d: np.ndarray) -> np.ndarray:
    return np.where(d == 0, np.float32(0), np.float32(1) / d)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """ggml's roundf (ties away from zero), exact for every float32."""
    a = np.abs(x)
    whole = np.floor(a)
    return np.sign(x) * (whole + np.floor(np.float32(2) * (a - whole)))


def _f16_bytes(d: np.ndarray) -> np.ndarray:
    return d.astype("<f2").view(np.uint8)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    half = q.shape[1] // 2
    return q[:, :half] | (q[:, half:] << np.uint8(4))


def _signed_max(blocks: np.ndarray) -> np.ndarray:
    """Each block's value of largest magnitude, sign kept (the first one on ties)."""
    return np.take_along_axis(blocks, np.abs(blocks).argmax(axis=1)[:, None], axis=1)


def _quant_levels(x: np.ndarray, top: int) -> np.ndarray:
    return np.trunc(x, dtype=np.float32).astype(np.uint8).clip(0, top)


def _quantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    q = _round_half_away(blocks * _inverse(d)).astype(np.int8)
    return np.concatenate([_f16_bytes(d), q.view(np.uint8)], axis=1)


def _quantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    d = _signed_max(blocks) / np.float32(-8)
    q = _quant_levels(blocks * _inverse(d) + np.float32(8.5), 15)
    return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1)


def _quantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    lo = blocks.min(axis=1, keepdims=True)
    d = (blocks.max(axis=1, keepdims=True) - lo) / np.float32(15)
    q = _quant_levels((blocks - lo) * _inverse(d) + np.float32(0.5), 15)
    return np.concatenate([_f16_bytes(d), _f16_bytes(lo), _pack_nibbles(q)], axis=1)


def _five_bit_bytes(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    high = np.packbits(q >> np.uint8(4), axis=1, bitorder="little")
    return high, _pack_nibbles(q & np.uint8(0xF))


def _quantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    d = _signed_max(blocks) / np.float32(-16)
    q = _quant_levels(blocks * _inverse(d) + np.float32(16.5), 31)
    return np.concatenate([_f16_bytes(d), *_five_bit_bytes(q)], axis=1)


def _quantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    lo = blocks.min(axis=1, keepdims=True)
    d = (blocks.max(axis=1, keepdims=True) - lo) / np.float32(31)
    q = _quant_levels((blocks - lo) * _inverse(d) + np.float32(0.5), 31)
    return np.concatenate([_f16_bytes(d), _f16_bytes(lo), *_five_bit_bytes(q)], axis=1)


def _quantize_bf16(values: np.ndarray) -> np.ndarray:
    # ggml_compute_fp32_to_bf16: NaNs become quiet NaNs, everything else rounds to nearest even.
    n = values.view(np.uint32)
    n = np.where((n & 0x7FFFFFFF) > 0x7F800000, (n & np.uint32(0xFFFF0000)) | np.uint32(0x400000), n)
    n = (n.astype(np.uint64) + (0x7FFF + ((n >> 16) & 1))) >> 16
    return n.astype("<u2").view(np.uint8)


_QUANTIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F32": lambda v: v.astype("<f4").view(np.uint8),
    "F16": lambda v: v.astype("<f2").view(np.uint8),
    "BF16": _quantize_bf16,
    "Q8_0": _quantize_q8_0,
    "Q4_0": _quantize_q4_0,
    "Q4_1": _quantize_q4_1,
    "Q5_0": _quantize_q5_0,
    "Q5_1": _quantize_q5_1,
}
