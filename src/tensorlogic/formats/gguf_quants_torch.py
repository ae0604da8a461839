"""GGUF dequantization as torch tensor ops, on the device that holds the raw bytes (CPU or CUDA).

One function per type, each a fixed sequence of tensor ops over all blocks at once: no Python loop
over blocks and no data-dependent control flow, so ``torch.compile`` can fuse a type into one kernel.
Multi-byte fields are assembled from bytes with integer arithmetic (no dtype views of strided
slices), which keeps the code valid for any block size and alignment. Values are computed in float32
with the float operations, in the order, of gguf-py (see ``gguf_quants``), so the float32 result is
bit-exact with gguf-py and a float16 result is its correctly rounded cast.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import UnsupportedError
from . import gguf_quants as ref

Kernel = Callable[..., torch.Tensor]
# type name -> (kernel taking (*tables, blocks, dtype=...), names of the lookup tables it needs)
KERNELS: dict[str, tuple[Kernel, tuple[str, ...]]] = {}

_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_PLAIN = {"F16": torch.int16, "BF16": torch.int16, "F32": torch.float32, "F64": torch.float64,
          "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64}


def dequantize_torch(
    raw: torch.Tensor,
    qtype: Any,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    *,
    path: str | os.PathLike | None = None,
    offset: int | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Values of a GGUF tensor from its raw little-endian bytes (uint8), on ``raw.device``.

    Computed in float32, then cast to ``dtype`` (float32, float16 or bfloat16). F32 with float32
    output is a view of ``raw``. ``path``/``offset`` only name the tensor in error messages.
    ``compile``: run the type's ``torch.compile``d kernel (one fused kernel; compiling takes seconds
    the first time a type is seen, so it pays off for large tensors or many of them).
    """
    if dtype not in _OUT_DTYPES:
        raise UnsupportedError(f"GGUF dequantization gives float32, float16 or bfloat16, not {dtype}")
    if raw.dtype != torch.uint8:
        raw = raw.contiguous().view(torch.uint8)
    raw = raw.reshape(-1)
    name, dims, n_blocks = ref.check(raw.numel(), qtype, shape, path, offset)
    kernel = block_kernel(name, raw.device, dtype, compile=compile)
    if name in _PLAIN:
        return kernel(_aligned(raw)).reshape(dims)
    return kernel(raw.reshape(n_blocks, ref.TYPE_INFO[name][1])).reshape(dims)


def block_kernel(
    qtype: Any, device: torch.device | str, dtype: torch.dtype = torch.float32, compile: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The pure tensor function of ``qtype``: raw bytes as (blocks, bytes per block) -> values in ``dtype``.

    Its lookup tables are bound in. Values are computed in float32; the last float operation writes
    ``dtype`` directly (one rounding). Plain types take the flat bytes. ``compile``: the type's
    ``torch.compile``d function instead.
    """
    name = ref.type_name(qtype)
    if name in _PLAIN:
        return functools.partial(_compiled("_plain") if compile else _plain, name=name, dtype=dtype)
    fn, keys = KERNELS[name]
    return functools.partial(_compiled(name) if compile else fn, *(lookup(k, device) for k in keys), dtype=dtype)


@functools.cache
def _compiled(name: str) -> Kernel:
    # Compile each type's own function, never a partial of it: torch.compile runs every partial
    # through one wrapper function, whose graphs all count against one recompile limit (8 types).
    return torch.compile(_plain if name == "_plain" else KERNELS[name][0])


def _aligned(raw: torch.Tensor) -> torch.Tensor:
    """``raw`` where a dtype view of it is allowed: contiguous, 8-byte aligned storage offset."""
    if raw.is_contiguous() and raw.storage_offset() % 8 == 0:
        return raw
    return raw.clone()


def _plain(raw: torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    values = raw.view(_PLAIN[name])
    if name == "BF16":
        return (values.int() << 16).view(torch.float32).to(dtype)
    if name == "F16":
        return _f16_exact(values).to(dtype)
    return values.float().to(dtype)


def _f16_exact(h: torch.Tensor) -> torch.Tensor:
    """int16 bit patterns of f16 -> float32, keeping NaN payloads as numpy does.

    Hardware conversion quiets signalling NaNs; numpy's (and so gguf-py's) keeps them signalling.
    """
    wide = h.int()
    nan = (wide & 0x7FFF) > 0x7C00
    nan_bits = ((wide << 16) & -(2**31)) | 0x7F800000 | ((wide & 0x3FF) << 13)
    return torch.where(nan, nan_bits.view(torch.float32), h.view(torch.float16).float())


# ---------------------------------------------------------------------------------------------------
# Lookup tables, built once from the numpy module's tables and cached per device.

_TABLE_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "kv_iq4nl": lambda: np.asarray(ref.KVALUES_IQ4NL, np.float32),
    "kv_mxfp4": lambda: np.asarray(ref.KVALUES_MXFP4, np.float32),
    "e8m0_half": ref.e8m0_half,
    "ue4m3_half": ref.ue4m3_half,
    "ksign_vectors": lambda: np.where(
        np.unpackbits(ref.ksigns()[:, None], axis=1, bitorder="little"), np.float32(-1), np.float32(1)
    ),
    "IQ2_XXS": lambda: ref.table("IQ2_XXS"),
    "IQ2_XS": lambda: ref.table("IQ2_XS"),
    "IQ1": lambda: ref.table("IQ1"),
    "grid:IQ2_S": lambda: ref.grid("IQ2_S"),
    "grid:IQ3_XXS": lambda: ref.grid("IQ3_XXS"),
    "grid:IQ3_S": lambda: ref.grid("IQ3_S"),
}
_TABLES: dict[tuple[str, str], torch.Tensor] = {}


def lookup(key: str, device: torch.device | str) -> torch.Tensor:
    """The lookup table ``key`` as a float32 tensor on ``device`` (cached)."""
    slot = (key, str(torch.device(device)))
    if slot not in _TABLES:
        _TABLES[slot] = torch.from_numpy(np.ascontiguousarray(_TABLE_SOURCES[key]())).to(device)
    return _TABLES[slot]


def _kernel(name: str, *tables: str) -> Callable[[Kernel], Kernel]:
    def register(fn: Kernel) -> Kernel:
        KERNELS[name] = (fn, tables)
        return fn

    return register


# ---------------------------------------------------------------------------------------------------
# Helpers on (blocks, bytes) uint8 tensors.


def _le16(x: torch.Tensor) -> torch.Tensor:
    """Consecutive byte pairs of the last dim as little-endian uint16 values (int32)."""
    return x[..., 0::2].int() | (x[..., 1::2].int() << 8)


def _le32(x: torch.Tensor) -> torch.Tensor:
    """Consecutive byte quads of the last dim as little-endian uint32 values (int64)."""
    return sum(x[..., k::4].long() << (8 * k) for k in range(4))


def _f16(b: torch.Tensor, start: int) -> torch.Tensor:
    """The f16 field at byte ``start`` of every block, as float32 (n,), signalling NaNs kept (Q1_0 shows them)."""
    return _f16_exact(_le16(b[:, start : start + 2])[:, 0].to(torch.int16))


def _unpack(src: torch.Tensor, group: int, shifts: Sequence[int], mask: int) -> torch.Tensor:
    """Bit fields in ggml's layout: each run of ``group`` bytes becomes one run per shift."""
    runs = src.reshape(src.shape[0], -1, 1, group)
    return torch.cat([(runs >> s) & mask for s in shifts], dim=2).reshape(src.shape[0], -1)


def _bits(src: torch.Tensor) -> torch.Tensor:
    """Bit j (little-endian order) of each row of bytes as element j, 0 or 1 (uint8)."""
    return _unpack(src, 1, range(8), 1)


def _runs(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """scale * q in float32, written as ``dtype``, with one scale per equal run of each block's values."""
    scale = scale.reshape(scale.shape[0], -1, 1)
    values = q.reshape(scale.shape[0], scale.shape[1], -1)
    out = torch.empty(values.shape, dtype=dtype, device=q.device)
    return torch.mul(values, scale, out=out).reshape(q.shape[0], -1)


def _affine(q: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, sign: int, dtype: torch.dtype) -> torch.Tensor:
    """(scale * q) + shift or (scale * q) - shift in float32, per run, written as ``dtype``.

    One addcmul. Every product here is exact in float32 (scales of at most 17 significant bits
    times quants of at most 5 bits), so an fma (which nvcc and Triton may form) gives the same bits as
    gguf-py's multiply-then-add. ``shift * -1`` (not a negation) keeps a NaN shift's sign, and
    torch's CPU addcmul lets a NaN product win over a NaN shift, as numpy's ``prod - shift`` does.
    """
    shift = shift.reshape(shift.shape[0], -1, 1)
    values = q.reshape(shift.shape[0], shift.shape[1], -1)
    out = torch.empty(values.shape, dtype=dtype, device=q.device)
    scale = scale.reshape(shift.shape[0], -1, 1)
    return torch.addcmul(shift if sign > 0 else shift * -1.0, values, scale, out=out).reshape(q.shape[0], -1)


def _nibbles(src: torch.Tensor, group: int) -> torch.Tensor:
    return _unpack(src, group, (0, 4), 0xF)


# ---------------------------------------------------------------------------------------------------
# 32-element blocks.


@_kernel("Q4_0")
def _q4_0(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _runs(_nibbles(b[:, 2:], 16).to(torch.int8) - 8, _f16(b, 0), dtype)


@_kernel("Q4_1")
def _q4_1(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _affine(_nibbles(b[:, 4:], 16), _f16(b, 0), _f16(b, 2), +1, dtype)


def _five_bits(b: torch.Tensor, qh: int, qs: int) -> torch.Tensor:
    return _nibbles(b[:, qs : qs + 16], 16) | (_bits(b[:, qh : qh + 4]) << 4)


@_kernel("Q5_0")
def _q5_0(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _runs(_five_bits(b, 2, 6).to(torch.int8) - 16, _f16(b, 0), dtype)


@_kernel("Q5_1")
def _q5_1(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _affine(_five_bits(b, 4, 8), _f16(b, 0), _f16(b, 2), +1, dtype)


@_kernel("Q8_0")
def _q8_0(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _runs(b[:, 2:].view(torch.int8), _f16(b, 0), dtype)


@_kernel("IQ4_NL", "kv_iq4nl")
def _iq4_nl(levels: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _runs(levels[_nibbles(b[:, 2:], 16).int()], _f16(b, 0), dtype)


@_kernel("MXFP4", "kv_mxfp4", "e8m0_half")
def _mxfp4(levels: torch.Tensor, e8m0: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _runs(levels[_nibbles(b[:, 1:], 16).int()], e8m0[b[:, 0].int()], dtype)


@_kernel("NVFP4", "kv_mxfp4", "ue4m3_half")
def _nvfp4(levels: torch.Tensor, ue4m3: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _runs(levels[_nibbles(b[:, 4:], 8).int()], ue4m3[b[:, :4].int()], dtype)


@_kernel("Q1_0")
def _q1_0(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # ggml-quants.c dequantize_row_q1_0: bit set -> d, clear -> -d (a negation, not a multiply).
    d = _f16(b, 0)[:, None]
    return torch.where(_bits(b[:, 2:]).bool(), d, -d).to(dtype)


# ---------------------------------------------------------------------------------------------------
# K-quants.


@_kernel("Q2_K")
def _q2_k(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    sc = b[:, :16]
    dl = _f16(b, 80)[:, None] * (sc & 0xF)
    ml = _f16(b, 82)[:, None] * (sc >> 4)
    return _affine(_unpack(b[:, 16:80], 32, (0, 2, 4, 6), 3), dl, ml, -1, dtype)


@_kernel("Q3_K")
def _q3_k(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    low = _nibbles(b[:, 96:104], 8)
    high = _unpack(b[:, 104:108], 4, (0, 2, 4, 6), 3)
    dl = _f16(b, 108)[:, None] * ((low | (high << 4)).to(torch.int8) - 32)
    # ggml: q = low2 - (hmask bit clear ? 4 : 0), i.e. low2 + 4 * bit - 4.
    q = _unpack(b[:, 32:96], 32, (0, 2, 4, 6), 3) | (_unpack(b[:, :32], 32, range(8), 1) << 2)
    return _runs(q.to(torch.int8) - 4, dl, dtype)


def _k_affine(b: torch.Tensor, q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Q4_K/Q5_K: eight 6-bit scales and mins packed in 12 bytes (ggml's get_scale_min_k4)."""
    lo, mid, hi = b[:, 4:8], b[:, 8:12], b[:, 12:16]
    sc = torch.cat([lo & 0x3F, (hi & 0xF) | ((lo >> 2) & 0x30)], dim=1)
    mn = torch.cat([mid & 0x3F, (hi >> 4) | ((mid >> 2) & 0x30)], dim=1)
    return _affine(q, _f16(b, 0)[:, None] * sc, _f16(b, 2)[:, None] * mn, -1, dtype)


@_kernel("Q4_K")
def _q4_k(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _k_affine(b, _nibbles(b[:, 16:], 32), dtype)


@_kernel("Q5_K")
def _q5_k(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _k_affine(b, _nibbles(b[:, 48:], 32) | (_unpack(b[:, 16:48], 32, range(8), 1) << 4), dtype)


@_kernel("Q6_K")
def _q6_k(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    q = _nibbles(b[:, :128], 64) | (_unpack(b[:, 128:192], 32, (0, 2, 4, 6), 3) << 4)
    d = _f16(b, 208)[:, None] * b[:, 192:208].view(torch.int8)
    return _runs(q.to(torch.int8) - 32, d, dtype)


@_kernel("Q8_K")
def _q8_k(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # ggml-quants.c dequantize_row_q8_K: y = d * q with an f32 d (gguf-py has no Q8_K dequantizer).
    d = _le32(b[:, :4])[:, 0].to(torch.int32).view(torch.float32)
    return _runs(b[:, 4:260].view(torch.int8), d, dtype)


@_kernel("IQ4_XS", "kv_iq4nl")
def _iq4_xs(levels: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    high_bits = _le16(b[:, 2:4])
    high = torch.stack([(high_bits[:, 0] >> (2 * i)) & 3 for i in range(8)], dim=1)
    scales = (_unpack(b[:, 4:8], 1, (0, 4), 0xF).int() | (high << 4)) - 32
    return _runs(levels[_nibbles(b[:, 8:], 16).int()], _f16(b, 0)[:, None] * scales, dtype)


# ---------------------------------------------------------------------------------------------------
# Ternary types.


@_kernel("TQ1_0")
def _tq1_0(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Digit k of byte x is ((x * 3**k mod 256) * 3) >> 8: 0, 1 or 2 as x * 3**k mod 256 crosses 86, 171.
    parts = [
        torch.stack([b[:, :32] * p for p in (1, 3, 9, 27, 81)], dim=1),
        torch.stack([b[:, 32:48] * p for p in (1, 3, 9, 27, 81)], dim=1),
        torch.stack([b[:, 48:52] * p for p in (1, 3, 9, 27)], dim=1),
    ]
    p = torch.cat([x.reshape(b.shape[0], -1) for x in parts], dim=1)
    q = (p >= 86).to(torch.int8) + (p >= 171).to(torch.int8) - 1
    return _runs(q, _f16(b, 52), dtype)


@_kernel("TQ2_0")
def _tq2_0(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _runs(_unpack(b[:, :64], 32, (0, 2, 4, 6), 3).to(torch.int8) - 1, _f16(b, 64), dtype)


# ---------------------------------------------------------------------------------------------------
# IQ types. Signs are applied to the grid values before the scale: multiplying by +-1 is exact, so
# db * (grid * sign) has the bits of gguf-py's (db * grid) * sign, NaN and inf included.


def _half_scale(d: torch.Tensor, s: torch.Tensor, k: float) -> torch.Tensor:
    """ggml's d * (0.5 + s) * k sub-block scale, in gguf-py's float32 operation order."""
    return d[:, None] * (0.5 + s.float()) * k


def _ksign_index(aux: torch.Tensor) -> torch.Tensor:
    """Four 7-bit ksigns indices packed in bits 0..27 of each uint32 (int64 tensor)."""
    return torch.stack([(aux >> (7 * k)) & 0x7F for k in range(4)], dim=-1)


@_kernel("IQ2_XXS", "IQ2_XXS")
def _iq2_xxs(signed_grid: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    pairs = b[:, 2:66].reshape(-1, 8, 8)
    aux = _le32(pairs[..., 4:])[..., 0]
    index = pairs[..., :4].int() | (_ksign_index(aux).int() << 8)
    return _runs(signed_grid[index].reshape(b.shape[0], -1), _half_scale(_f16(b, 0), aux >> 28, 0.25), dtype)


@_kernel("IQ2_XS", "IQ2_XS")
def _iq2_xs(signed_grid: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Each uint16 is a 9-bit grid index and a 7-bit ksigns index: one lookup in the signed table.
    values = signed_grid[_le16(b[:, 2:66]).int()].reshape(b.shape[0], -1)
    return _runs(values, _half_scale(_f16(b, 0), _unpack(b[:, 66:74], 1, (0, 4), 0xF), 0.25), dtype)


def _signed(values: torch.Tensor, sign_bytes: torch.Tensor) -> torch.Tensor:
    return torch.where(_bits(sign_bytes).bool(), -values, values)


@_kernel("IQ2_S", "grid:IQ2_S")
def _iq2_s(grid: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    index = b[:, 2:34].int() | (_unpack(b[:, 66:74], 1, (0, 2, 4, 6), 3).int() << 8)
    values = _signed(grid[index].reshape(b.shape[0], -1), b[:, 34:66])
    return _runs(values, _half_scale(_f16(b, 0), _unpack(b[:, 74:82], 1, (0, 4), 0xF), 0.25), dtype)


@_kernel("IQ3_XXS", "grid:IQ3_XXS", "ksign_vectors")
def _iq3_xxs(grid: torch.Tensor, ksign_vectors: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    aux = _le32(b[:, 66:98])
    values = grid[b[:, 2:66].int()].reshape(-1, 8, 4, 8) * ksign_vectors[_ksign_index(aux)]
    return _runs(values.reshape(b.shape[0], -1), _half_scale(_f16(b, 0), aux >> 28, 0.5), dtype)


@_kernel("IQ3_S", "grid:IQ3_S")
def _iq3_s(grid: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    index = b[:, 2:66].int() | (_bits(b[:, 66:74]).int() << 8)
    values = _signed(grid[index].reshape(b.shape[0], -1), b[:, 74:106])
    scales = _unpack(b[:, 106:110], 1, (0, 4), 0xF)
    return _runs(values, _f16(b, 0)[:, None] * (1 + 2 * scales), dtype)


@_kernel("IQ1_S", "IQ1")
def _iq1_s(table: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    qh = _le16(b[:, 34:50])
    high = torch.stack([(qh >> (3 * k)) & 7 for k in range(4)], dim=-1)
    index = b[:, 2:34].reshape(-1, 8, 4).int() | (high << 8) | ((qh >> 15) << 11)[..., None]
    return _runs(table[index].reshape(b.shape[0], -1), _f16(b, 0)[:, None] * (2 * ((qh >> 12) & 7) + 1), dtype)


@_kernel("IQ1_M", "IQ1")
def _iq1_m(table: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # The f16 super-block scale is spread over the top 4 bits of the four uint16 scale words.
    sc = _le16(b[:, 48:56])
    d_bits = (sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) | (sc[:, 3] & 0xF000)
    d = d_bits.to(torch.int16).view(torch.float16).float()
    sub = torch.stack([(sc >> (3 * k)) & 7 for k in range(4)], dim=-1).reshape(-1, 16)
    # Each nibble of qh holds a grid index's top 3 bits and, in bit 3, the sign of its delta.
    index = b[:, :32].int() | (_unpack(b[:, 32:48], 1, (0, 4), 0xF).int() << 8)
    return _runs(table[index].reshape(b.shape[0], -1), d[:, None] * (2 * sub + 1), dtype)
