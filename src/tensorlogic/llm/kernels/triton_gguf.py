"""Triton kernels that read GGUF blocks as stored: fused dequantize-GEMV/GEMM and dequantization.

The kernels read a weight in its *device layout* (``pack``): the same bytes as the GGUF rows, with each
row's blocks split into three planes, [quants of every block | scale bytes of every block | f16 scale
fields of every block], the row padded to a multiple of 16 bytes. In GGUF order a block's quants sit
behind its 2-byte scale, so a row of Q4_0 (18-byte blocks) or Q6_K (210) is only 2-byte aligned and
Triton issues one-byte loads, which capped a cold-L2 GEMV at 0.5-1.3 TB/s; in the quant plane every
block's quants start on a 16-byte boundary (16 to 192 bytes a block) and load 16 bytes per
instruction, and the f16 fields load as f16. ``unpack`` restores the GGUF bytes.

Every kernel is built on one device function per type that dequantizes a tile of BLOCK_N weight rows
by G sub-blocks into registers. A sub-block is a run of SUB (16 or 32) consecutive elements sharing
one scale, so the tile is a [BLOCK_N, G, SUB] tensor: scales are loaded once per sub-block and
broadcast. Reshaped to [BLOCK_N, G * SUB] it is in natural element order, so x, the output and cuBLAS
need no permutation.

Quants become floats by or-ing them into the mantissa of 2**23 (``_exact``): int-to-float
conversions run at a quarter rate and would cap the GEMV below HBM speed. A sub-block's values are
a * q + b, so its dot product with x is a * sum(q * x) + b * sum(x): one multiply-add per weight, the
scales applied once per sub-block.

- ``qmatmul`` with at most ``GEMV_MAX_ROWS`` rows of x (decode): ``_gemv_kernel``, one program per
  BLOCK_N output features walking all of K; each weight tile is read once and applied to every x row
  (the rows of x stay in L1/L2). Block sizes come from the shape alone (``gemv_config``, or measured
  ``GEMV_CONFIGS``), so a call never autotunes or syncs and can be captured in a CUDA graph (after a
  first, compiling call). Q4_0, Q4_K, Q5_K and Q6_K have their own steps that load each quant byte
  once for all the weights it holds, where the per-sub-block tile would load it again per sub-block.
- up to ``FUSED_GEMM_MAX_ROWS`` rows of float16/bfloat16 x: ``_gemm_kernel``, a tl.dot GEMM that
  dequantizes 64 elements of K per step.
- more rows (prefill): ``_dequant_kernel`` into a reused scratch buffer, then cuBLAS. Each weight is
  expanded once per call (2 bytes written and read per element, a few microseconds at HBM speed),
  after which cuBLAS runs at tensor-core speed with TMA pipelining; a fused Triton GEMM has to move
  every dequantized tile through shared memory from registers and repeats the dequantization for
  every M tile, which at 512 rows costs more than the expansion. ``benchmarks/bench_qmatmul.py``
  times both so the threshold can be set from measurements.

Set ``TRITON_INTERPRET=1`` before importing this module to run the kernels on CPU tensors (tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

GEMV_MAX_ROWS = 8
FUSED_GEMM_MAX_ROWS = 64
# type -> (elements per block, bytes per block)
BLOCKS: dict[str, tuple[int, int]] = {
    "Q4_0": (32, 18), "Q8_0": (32, 34), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
    "Q5_K": (256, 176), "Q6_K": (256, 210),
}
# type -> (start, length) in a GGUF block of its quants, its scale bytes and its f16 fields (ggml-common.h):
# the three planes of the device layout, in this order.
PLANES: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "Q4_0": ((2, 16), (2, 0), (0, 2)),
    "Q8_0": ((2, 32), (2, 0), (0, 2)),
    "Q2_K": ((16, 64), (0, 16), (80, 4)),
    "Q3_K": ((0, 96), (96, 12), (108, 2)),
    "Q4_K": ((16, 128), (4, 12), (0, 4)),
    "Q5_K": ((16, 160), (4, 12), (0, 4)),
    "Q6_K": ((0, 192), (192, 16), (208, 2)),
}
# type -> elements per sub-block (one scale each)
SUB_BLOCK = {"Q4_0": 16, "Q8_0": 32, "Q2_K": 16, "Q3_K": 16, "Q4_K": 32, "Q5_K": 32, "Q6_K": 16}
# Types whose values are scale * q - min.
HAS_MIN = frozenset({"Q2_K", "Q4_K", "Q5_K"})
# (type, out_features, in_features) -> (BLOCK_N, K elements per step, num_warps, X_FULL) measured best for the
# GEMV (see gemv_config).
GEMV_CONFIGS: dict[tuple[str, int, int], tuple[int, int, int, bool]] = {}
# Elements of K one GEMV program takes per step (see gemv_config).
_GEMV_K_STEP = 1024
# Elements of one row a dequantization program writes.
_DEQUANT_ROW_ELEMENTS = 1024
# The scratch buffer of the prefill path holds at most this many elements (64 MiB of float16).
SCRATCH_ELEMENTS = 1 << 25
_SCRATCH: dict[tuple[str, torch.dtype], torch.Tensor] = {}


# ------------------------------------------------------------------------------------------------
# The device layout.


def packed_row_bytes(qtype: str, in_features: int) -> int:
    """Bytes of one row in the device layout: the GGUF row rounded up to a multiple of 16."""
    block, block_bytes = BLOCKS[qtype]
    return (in_features // block * block_bytes + 15) // 16 * 16


def pack(raw: torch.Tensor, qtype: str) -> torch.Tensor:
    """GGUF rows uint8 [N, blocks * block_bytes] -> the device layout uint8 [N, packed_row_bytes]."""
    n, block_bytes = raw.shape[0], BLOCKS[qtype][1]
    nb = raw.shape[1] // block_bytes
    blocks = raw.reshape(n, nb, block_bytes)
    parts = [blocks[:, :, a : a + size].reshape(n, nb * size) for a, size in PLANES[qtype] if size]
    pad = packed_row_bytes(qtype, nb * BLOCKS[qtype][0]) - nb * block_bytes
    if pad:
        parts.append(raw.new_zeros(n, pad))
    return torch.cat(parts, dim=1)


def unpack(packed: torch.Tensor, qtype: str, in_features: int) -> torch.Tensor:
    """The device layout uint8 [N, packed_row_bytes] -> GGUF rows uint8 [N, blocks * block_bytes]."""
    n, (block, block_bytes) = packed.shape[0], BLOCKS[qtype]
    nb = in_features // block
    blocks = packed.new_empty(n, nb, block_bytes)
    at = 0
    for a, size in PLANES[qtype]:
        blocks[:, :, a : a + size] = packed[:, at : at + nb * size].reshape(n, nb, size)
        at += nb * size
    return blocks.reshape(n, nb * block_bytes)


# ------------------------------------------------------------------------------------------------
# Dequantization of one tile. Each ``_tile_*`` returns (q, a, b) for rows ``rn`` and sub-blocks
# sg0 .. sg0 + G - 1 of each row: q float32 [BLOCK_N, G, SUB] holds small exact integers and each
# sub-block's values are a * q + b, a and b float32 [BLOCK_N, G] (b is used only by types with
# mins, ``HAS_MIN``). Rows >= n_rows and blocks >= n_blocks read as zeros. ``w_ptr`` is the weight
# as bytes, ``h_ptr`` the same memory as float16.


@triton.jit
def _u8(p, mask):
    return tl.load(p, mask=mask, other=0).to(tl.int32)


@triton.jit
def _h(p, mask):
    return tl.load(p, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _exact(q, offset: tl.constexpr):
    """float32(q - offset) for integers 0 <= q < 2**23, exactly.

    Or-ing q into the mantissa of 2**23 and subtracting is two full-rate instructions, where an
    int-to-float conversion runs at a quarter of the rate and would bound the GEMV below HBM speed.
    """
    return (q | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + offset)


@triton.jit
def _planes(w_ptr, h_ptr, row_bytes, rn, n_rows, blk, n_blocks, QB: tl.constexpr, SB: tl.constexpr,
            FH: tl.constexpr):
    """Pointers [BLOCK_N, len(blk)] to blocks ``blk`` of rows ``rn`` in the three planes, and their mask.

    QB, SB: quant and scale bytes per block; FH: f16 fields per block. The quant pointers are 16-byte
    aligned (QB and row_bytes are multiples of 16).
    """
    base = rn.to(tl.int64)[:, None] * row_bytes
    q = w_ptr + base + (blk * QB)[None, :]
    s = w_ptr + base + n_blocks * QB + (blk * SB)[None, :]
    f = h_ptr + base // 2 + n_blocks * ((QB + SB) // 2) + (blk * FH)[None, :]
    mask = (rn < n_rows)[:, None] & (blk < n_blocks)[None, :]
    return q, s, f, mask


@triton.jit
def _tile_q4_0(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # 16 quant bytes; element t of sub-block s is nibble s of byte t; value (q - 8) * d.
    g = sg0 + tl.arange(0, G)
    qp, _, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, n_rows, g // 2, n_blocks, 16, 0, 1)
    s = (g % 2)[None, :, None]
    t = tl.arange(0, 16)[None, None, :]
    d = _h(fp, mask)
    q = (_u8(qp[:, :, None] + t, mask[:, :, None]) >> (4 * s)) & 15
    return _exact(q, 8), d, d


@triton.jit
def _tile_q8_0(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # 32 int8 quants; value q * d. Flipping the sign bit maps int8 q to q + 128.
    g = sg0 + tl.arange(0, G)
    qp, _, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, n_rows, g, n_blocks, 32, 0, 1)
    t = tl.arange(0, 32)[None, None, :]
    d = _h(fp, mask)
    q = _u8(qp[:, :, None] + t, mask[:, :, None]) ^ 128
    return _exact(q, 128), d, d


@triton.jit
def _crumbs(qp, s, t, mask, start):
    """Q2_K/Q3_K 2-bit quants of sub-block s (of 16): 64 bytes at ``start``, four 2-bit planes per 32 bytes."""
    byte = start + 32 * (s // 8) + 16 * (s % 2)
    return (_u8(qp[:, :, None] + byte[:, :, None] + t, mask[:, :, None]) >> (2 * ((s // 2) % 4))[:, :, None]) & 3


@triton.jit
def _tile_q2_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # 64 bytes of 2-bit quants; 16 scale bytes (low nibble scale, high nibble min); f16 d, dmin;
    # value d * scale * q - dmin * min.
    g = sg0 + tl.arange(0, G)
    qp, sp, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, n_rows, g // 16, n_blocks, 64, 16, 2)
    s = (g % 16)[None, :]
    t = tl.arange(0, 16)[None, None, :]
    sc = _u8(sp + s, mask)
    dl = _h(fp, mask) * (sc & 15).to(tl.float32)
    ml = _h(fp + 1, mask) * (sc >> 4).to(tl.float32)
    return _exact(_crumbs(qp, s, t, mask, 0), 0), dl, -ml


@triton.jit
def _tile_q3_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # 32 bytes high-bit mask and 64 bytes of 2-bit quants; 12 bytes of 6-bit scales; f16 d;
    # value d * (scale - 32) * (q - 4) with q = low 2 bits | mask bit << 2.
    g = sg0 + tl.arange(0, G)
    qp, sp, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, n_rows, g // 16, n_blocks, 96, 12, 1)
    s = (g % 16)[None, :]
    t = tl.arange(0, 16)[None, None, :]
    low = (_u8(sp + s % 8, mask) >> (4 * (s // 8))) & 15
    high = (_u8(sp + 8 + s % 4, mask) >> (2 * (s // 4))) & 3
    dl = _h(fp, mask) * ((low | (high << 4)) - 32).to(tl.float32)
    hbit = (_u8(qp[:, :, None] + (16 * (s % 2))[:, :, None] + t, mask[:, :, None]) >> (s // 2)[:, :, None]) & 1
    return _exact(_crumbs(qp, s, t, mask, 32) | (hbit << 2), 4), dl, dl


@triton.jit
def _k_scale_min(sp, fp, s, mask):
    """Q4_K/Q5_K: d * scale and dmin * min of sub-block s (of 8), from the 12 packed 6-bit fields."""
    first = s < 4
    a = _u8(sp + s, mask)
    c = _u8(sp + 4 + s, mask)
    e = _u8(sp + tl.where(first, 0, s - 4), mask)
    sc = tl.where(first, a & 63, (c & 15) | ((e >> 2) & 48))
    mn = tl.where(first, c & 63, (c >> 4) | ((a >> 2) & 48))
    return _h(fp, mask) * sc.to(tl.float32), _h(fp + 1, mask) * mn.to(tl.float32)


@triton.jit
def _tile_q4_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # 128 bytes of nibbles (32-byte runs, low then high); 12 bytes of scales/mins; f16 d, dmin.
    g = sg0 + tl.arange(0, G)
    qp, sp, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, n_rows, g // 8, n_blocks, 128, 12, 2)
    s = (g % 8)[None, :]
    t = tl.arange(0, 32)[None, None, :]
    dl, ml = _k_scale_min(sp, fp, s, mask)
    byte = (32 * (s // 2))[:, :, None] + t
    q = (_u8(qp[:, :, None] + byte, mask[:, :, None]) >> (4 * (s % 2))[:, :, None]) & 15
    return _exact(q, 0), dl, -ml


@triton.jit
def _tile_q5_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # Q4_K's layout with 32 bytes of fifth bits (bit s of byte t) before the nibbles.
    g = sg0 + tl.arange(0, G)
    qp, sp, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, n_rows, g // 8, n_blocks, 160, 12, 2)
    s = (g % 8)[None, :]
    t = tl.arange(0, 32)[None, None, :]
    dl, ml = _k_scale_min(sp, fp, s, mask)
    m3 = mask[:, :, None]
    byte = (32 + 32 * (s // 2))[:, :, None] + t
    q = (_u8(qp[:, :, None] + byte, m3) >> (4 * (s % 2))[:, :, None]) & 15
    q = q | (((_u8(qp[:, :, None] + t, m3) >> s[:, :, None]) & 1) << 4)
    return _exact(q, 0), dl, -ml


@triton.jit
def _tile_q6_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # 128 bytes low nibbles (64-byte runs) and 64 bytes of 2-bit high parts; 16 int8 scales; f16 d;
    # value d * scale * (q - 32).
    g = sg0 + tl.arange(0, G)
    qp, sp, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, n_rows, g // 16, n_blocks, 192, 16, 1)
    s = (g % 16)[None, :]
    t = tl.arange(0, 16)[None, None, :]
    m3 = mask[:, :, None]
    dl = _h(fp, mask) * ((_u8(sp + s, mask) ^ 128) - 128).to(tl.float32)
    low_byte = (64 * (s // 8) + 16 * (s % 4))[:, :, None] + t
    low = (_u8(qp[:, :, None] + low_byte, m3) >> (4 * ((s // 4) % 2))[:, :, None]) & 15
    high_byte = (128 + 32 * (s // 8) + 16 * (s % 2))[:, :, None] + t
    high = (_u8(qp[:, :, None] + high_byte, m3) >> (2 * ((s // 2) % 4))[:, :, None]) & 3
    return _exact(low | (high << 4), 32), dl, dl


@triton.jit
def _tile(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, QTYPE: tl.constexpr, G: tl.constexpr):
    if QTYPE == "Q4_0":
        q, a, b = _tile_q4_0(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q8_0":
        q, a, b = _tile_q8_0(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q2_K":
        q, a, b = _tile_q2_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q3_K":
        q, a, b = _tile_q3_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q4_K":
        q, a, b = _tile_q4_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q5_K":
        q, a, b = _tile_q5_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    else:
        tl.static_assert(QTYPE == "Q6_K")
        q, a, b = _tile_q6_k(w_ptr, h_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    return q, a, b


@triton.jit
def _values(q, a, b, HAS_MIN: tl.constexpr):
    """Element values a * q (+ b) [BLOCK_N, G, SUB]; a product of at most 22 significant bits, so exact."""
    if HAS_MIN:
        v = a[:, :, None] * q + b[:, :, None]
    else:
        v = a[:, :, None] * q
    return v


# ------------------------------------------------------------------------------------------------
# Kernels. The x chunk of one K step is loaded as [G, SUB], matching the weight tile's sub-blocks.


@triton.jit
def _x_chunk(p, rk, mask, K, SILU_MUL: tl.constexpr):
    """float32 x[rk] of one row, or silu(gate) * up when the row is [gate | up] (2K wide)."""
    if SILU_MUL:
        g = tl.load(p + rk, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(p + K + rk, mask=mask, other=0.0).to(tl.float32)
        x = g / (1.0 + tl.exp(-g)) * u
    else:
        x = tl.load(p + rk, mask=mask, other=0.0).to(tl.float32)
    return x


@triton.jit
def _x_tile(p, rk, K, rn, SILU_MUL: tl.constexpr, X_FULL: tl.constexpr):
    """x at element indices rk [U, T] as a tile to multiply a [BLOCK_N, U, T] weight tile with.

    X_FULL: loaded once per weight row, already in the weight tile's shape (every thread loads the x
    values of its own weights, from L1). Otherwise loaded once as [1, U, T] and broadcast, which Triton
    does through shared memory.
    """
    if X_FULL:
        rk3 = rk[None, :, :] + 0 * rn[:, None, None]
        x = _x_chunk(p, rk3, rk3 < K, K, SILU_MUL)
    else:
        x = _x_chunk(p, rk, rk < K, K, SILU_MUL)[None, :, :]
    return x


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, h_ptr, out_ptr, M, N, K, row_bytes, stride_x, stride_out,
                 QTYPE: tl.constexpr, BS: tl.constexpr, SUB: tl.constexpr, HAS_MIN: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, G: tl.constexpr, SILU_MUL: tl.constexpr,
                 UNITS: tl.constexpr, X_FULL: tl.constexpr):
    # acc [BLOCK_M, BLOCK_N, UNITS] holds per-unit partial sums added elementwise, so the K loop has no
    # reduction across threads; the one reduction over units comes after it. Padding rows (m >= M) re-read
    # the last row of x; their sums are never stored.
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_M)[:, None, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N, UNITS), dtype=tl.float32)
    for sg0 in range(0, K // SUB, G):
        if QTYPE == "Q4_0":
            acc = _gemv_q4_0_step(x_ptr, w_ptr, h_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, sg0 // 2,
                                  BLOCK_M, UNITS, SILU_MUL, X_FULL)
        elif QTYPE == "Q4_K":
            acc = _gemv_q45_k_step(x_ptr, w_ptr, h_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, sg0 // 2,
                                   BLOCK_M, UNITS, SILU_MUL, X_FULL, False)
        elif QTYPE == "Q5_K":
            acc = _gemv_q45_k_step(x_ptr, w_ptr, h_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, sg0 // 2,
                                   BLOCK_M, UNITS, SILU_MUL, X_FULL, True)
        elif QTYPE == "Q6_K":
            acc = _gemv_q6_k_step(x_ptr, w_ptr, h_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, sg0 // 4,
                                  BLOCK_M, UNITS, SILU_MUL, X_FULL)
        else:
            q, a, b = _tile(w_ptr, h_ptr, row_bytes, rn, N, sg0, K // BS, QTYPE, G)
            rk = (sg0 + tl.arange(0, G))[:, None] * SUB + tl.arange(0, SUB)[None, :]
            for m in tl.static_range(BLOCK_M):
                x = _x_tile(x_ptr + tl.minimum(m, M - 1) * stride_x, rk, K, rn, SILU_MUL, X_FULL)
                part = tl.sum(q * x, axis=2) * a
                if HAS_MIN:
                    part += tl.sum(x, axis=2) * b
                acc = tl.where(rows == m, acc + part[None, :, :], acc)
    out = out_ptr + tl.arange(0, BLOCK_M)[:, None] * stride_out + rn[None, :]
    mask = (tl.arange(0, BLOCK_M)[:, None] < M) & (rn[None, :] < N)
    tl.store(out, tl.sum(acc, axis=2).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gemv_q4_0_step(x_ptr, w_ptr, h_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, kb0,
                    BLOCK_M: tl.constexpr, NB: tl.constexpr, SILU_MUL: tl.constexpr, X_FULL: tl.constexpr):
    """One K step of the Q4_0 GEMV over blocks kb0 .. kb0 + NB - 1: each quant byte is loaded once and
    gives both of its nibbles (elements t and t + 16 of its block)."""
    blk = kb0 + tl.arange(0, NB)
    qp, _, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, N, blk, K // 32, 16, 0, 1)
    d = _h(fp, mask)
    t = tl.arange(0, 16)
    byte = _u8(qp[:, :, None] + t[None, None, :], mask[:, :, None])
    lo = _exact(byte & 15, 8)
    hi = _exact(byte >> 4, 8)
    rk = blk[:, None] * 32 + t[None, :]
    for m in tl.static_range(BLOCK_M):
        p = x_ptr + tl.minimum(m, M - 1) * stride_x
        part = tl.sum(lo * _x_tile(p, rk, K, rn, SILU_MUL, X_FULL) + hi * _x_tile(p, rk + 16, K, rn, SILU_MUL, X_FULL),
                      axis=2) * d
        acc = tl.where(rows == m, acc + part[None, :, :], acc)
    return acc


@triton.jit
def _gemv_q45_k_step(x_ptr, w_ptr, h_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, u0,
                     BLOCK_M: tl.constexpr, U: tl.constexpr, SILU_MUL: tl.constexpr, X_FULL: tl.constexpr,
                     FIFTH: tl.constexpr):
    """One K step of the Q4_K (or, with FIFTH, Q5_K) GEMV over units u0 .. u0 + U - 1 (four per block).

    Unit j of a block is its sub-blocks 2j and 2j + 1 (elements 64j .. 64j + 63): the low and high
    nibbles of the same 32 quant bytes (and bits 2j, 2j + 1 of the 32 fifth-bit bytes), loaded once.
    """
    u = u0 + tl.arange(0, U)
    blk = u // 4
    j = u % 4
    qp, sp, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, N, blk, K // 256, 160 if FIFTH else 128, 12, 2)
    m3 = mask[:, :, None]
    t = tl.arange(0, 32)[None, None, :]
    byte = _u8(qp[:, :, None] + ((32 if FIFTH else 0) + 32 * j)[None, :, None] + t, m3)
    lo = byte & 15
    hi = byte >> 4
    if FIFTH:
        fifth = _u8(qp[:, :, None] + t, m3) >> (2 * j)[None, :, None]
        lo = lo | ((fifth & 1) << 4)
        hi = hi | ((fifth & 2) << 3)
    lo = _exact(lo, 0)
    hi = _exact(hi, 0)
    s = (2 * j)[None, :]
    a_lo, b_lo = _k_scale_min(sp, fp, s, mask)
    a_hi, b_hi = _k_scale_min(sp, fp, s + 1, mask)
    rk = (blk * 256 + 64 * j)[:, None] + tl.arange(0, 32)[None, :]
    for m in tl.static_range(BLOCK_M):
        p = x_ptr + tl.minimum(m, M - 1) * stride_x
        x_lo = _x_tile(p, rk, K, rn, SILU_MUL, X_FULL)
        x_hi = _x_tile(p, rk + 32, K, rn, SILU_MUL, X_FULL)
        part = tl.sum(lo * x_lo, axis=2) * a_lo + tl.sum(hi * x_hi, axis=2) * a_hi
        part -= tl.sum(x_lo, axis=2) * b_lo + tl.sum(x_hi, axis=2) * b_hi
        acc = tl.where(rows == m, acc + part[None, :, :], acc)
    return acc


@triton.jit
def _gemv_q6_k_step(x_ptr, w_ptr, h_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, u0,
                    BLOCK_M: tl.constexpr, U: tl.constexpr, SILU_MUL: tl.constexpr, X_FULL: tl.constexpr):
    """One K step of the Q6_K GEMV over units u0 .. u0 + U - 1 (four per block).

    Unit (half r, h) of a block covers elements 128r + 32j + 16h + t (j < 4, t < 16). Their low nibbles
    are the two nibbles of ql[64r + 16h + t] and ql[64r + 32 + 16h + t], their high 2 bits the four
    crumbs of qh[32r + 16h + t]: three byte loads per four weights, where the generic tile needs eight.
    """
    u = u0 + tl.arange(0, U)
    blk = u // 4
    r = (u // 2) % 2
    h = u % 2
    qp, sp, fp, mask = _planes(w_ptr, h_ptr, row_bytes, rn, N, blk, K // 256, 192, 16, 1)
    m3 = mask[:, :, None]
    t = tl.arange(0, 16)[None, None, :]
    low = (64 * r + 16 * h)[None, :, None] + t
    ql_a = _u8(qp[:, :, None] + low, m3)
    ql_b = _u8(qp[:, :, None] + low + 32, m3)
    qh = _u8(qp[:, :, None] + (128 + 32 * r + 16 * h)[None, :, None] + t, m3)
    q0 = _exact((ql_a & 15) | ((qh & 3) << 4), 32)
    q1 = _exact((ql_b & 15) | (((qh >> 2) & 3) << 4), 32)
    q2 = _exact((ql_a >> 4) | (((qh >> 4) & 3) << 4), 32)
    q3 = _exact((ql_b >> 4) | ((qh >> 6) << 4), 32)
    d = _h(fp, mask)
    sc = sp + (8 * r + h)[None, :]
    a0 = d * ((_u8(sc, mask) ^ 128) - 128).to(tl.float32)
    a1 = d * ((_u8(sc + 2, mask) ^ 128) - 128).to(tl.float32)
    a2 = d * ((_u8(sc + 4, mask) ^ 128) - 128).to(tl.float32)
    a3 = d * ((_u8(sc + 6, mask) ^ 128) - 128).to(tl.float32)
    rk = (blk * 256 + 128 * r + 16 * h)[:, None] + tl.arange(0, 16)[None, :]
    for m in tl.static_range(BLOCK_M):
        p = x_ptr + tl.minimum(m, M - 1) * stride_x
        part = tl.sum(q0 * _x_tile(p, rk, K, rn, SILU_MUL, X_FULL), axis=2) * a0
        part += tl.sum(q1 * _x_tile(p, rk + 32, K, rn, SILU_MUL, X_FULL), axis=2) * a1
        part += tl.sum(q2 * _x_tile(p, rk + 64, K, rn, SILU_MUL, X_FULL), axis=2) * a2
        part += tl.sum(q3 * _x_tile(p, rk + 96, K, rn, SILU_MUL, X_FULL), axis=2) * a3
        acc = tl.where(rows == m, acc + part[None, :, :], acc)
    return acc


@triton.jit
def _gemm_kernel(x_ptr, w_ptr, h_ptr, out_ptr, M, N, K, row_bytes, stride_x, stride_out,
                 QTYPE: tl.constexpr, BS: tl.constexpr, SUB: tl.constexpr, HAS_MIN: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, G: tl.constexpr, PRECISION: tl.constexpr):
    # Axis 0 walks M fastest, so programs sharing a weight tile run together and share it in L2.
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for sg0 in range(0, K // SUB, G):
        q, a, b = _tile(w_ptr, h_ptr, row_bytes, rn, N, sg0, K // BS, QTYPE, G)
        w = tl.reshape(_values(q, a, b, HAS_MIN), (BLOCK_N, G * SUB))
        rk = sg0 * SUB + tl.arange(0, G * SUB)
        x_mask = (rm[:, None] < M) & (rk[None, :] < K)
        x = tl.load(x_ptr + rm.to(tl.int64)[:, None] * stride_x + rk[None, :], mask=x_mask, other=0.0)
        acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc, input_precision=PRECISION)
    out = out_ptr + rm.to(tl.int64)[:, None] * stride_out + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _dequant_kernel(w_ptr, h_ptr, out_ptr, R, C, row_bytes, QTYPE: tl.constexpr, BS: tl.constexpr,
                    SUB: tl.constexpr, HAS_MIN: tl.constexpr, BLOCK_N: tl.constexpr, G: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    sg0 = tl.program_id(1) * G
    q, a, b = _tile(w_ptr, h_ptr, row_bytes, rn, R, sg0, C // BS, QTYPE, G)
    v = _values(q, a, b, HAS_MIN)
    rk = (sg0 + tl.arange(0, G))[:, None] * SUB + tl.arange(0, SUB)[None, :]
    out = out_ptr + rn.to(tl.int64)[:, None, None] * C + rk[None, :, :]
    tl.store(out, v.to(out_ptr.dtype.element_ty), mask=(rn[:, None, None] < R) & (rk[None, :, :] < C))


# ------------------------------------------------------------------------------------------------
# Launchers. Shapes are checked by the caller (``tensorlogic.llm.kernels``).


def _pow2_floor(n: int) -> int:
    return 1 << max(n, 1).bit_length() - 1


# Sub-blocks per unit of a GEMV step's partial sums (the types with their own step take 2 or 4 at once).
_GEMV_UNIT = {"Q4_0": 2, "Q4_K": 2, "Q5_K": 2, "Q6_K": 4}


def gemv_config(qtype: str, m: int, n: int, k: int) -> tuple[int, int, int, int, bool]:
    """(BLOCK_M, BLOCK_N, sub-blocks per K step, num_warps, X_FULL) of the GEMV for an [m, k] x [n, k]^T product.

    ``GEMV_CONFIGS[(qtype, n, k)]`` = (BLOCK_N, K elements per step, num_warps, X_FULL), e.g. the best of a
    ``benchmarks/sweep_gemv.py`` run, overrides the shape heuristic.
    """
    sub = SUB_BLOCK[qtype]
    block_m = triton.next_power_of_2(max(m, 1))
    tuned = GEMV_CONFIGS.get((qtype, n, k))
    if tuned is not None:
        return block_m, tuned[0], max(1, tuned[1] // sub), *tuned[2:]
    # From benchmarks/sweep_gemv.py on an H200 (weights cold in L2, as in decode; within ~5 % of the best of
    # 36 settings on each TinyLlama shape): 8 rows per program for a vocabulary head or a 16M-weight K-quant
    # matrix, 4 from 8M weights (and for K-quants), 2 below (more programs for small matrices); 2048 elements
    # of K per step, 1024 for a head; x in the weight tile's shape below 8M weights, where the broadcast's
    # shared-memory round trip is a larger share of the time. (Software pipelining of the K loop and a grid
    # capped at a few looping programs per SM were swept too and never gained more than noise: not kept.)
    big = n * k >= (1 << 23)
    block_n = 8 if n >= 16384 or (n * k >= (1 << 24) and qtype != "Q4_0") else 4 if big or qtype in HAS_MIN else 2
    if qtype == "Q6_K":
        block_n = max(block_n, 4)
    block_n = max(1, min(block_n, _pow2_floor(n)))
    step = 2 * _GEMV_K_STEP if n < 16384 and qtype in _GEMV_UNIT else _GEMV_K_STEP
    block_k = max(sub, min(triton.next_power_of_2(k), step))
    return block_m, block_n, block_k // sub, 4, not big


def gemm_config(qtype: str, m: int, n: int, k: int, dtype: torch.dtype = torch.float16) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, sub-blocks per K step, num_warps) of the fused GEMM: 64 elements of K per step.

    float32 x takes smaller tiles: its exact ("ieee") dot runs on FMA units and holds far more registers.
    """
    if dtype == torch.float32:
        return (16 if m <= 16 else 32), 32, 64 // SUB_BLOCK[qtype], 4
    return (16 if m <= 16 else 32 if m <= 32 else 64), 64, 64 // SUB_BLOCK[qtype], 4


def qmatmul(
    x2: torch.Tensor, packed: torch.Tensor, qtype: str, shape: tuple[int, int], out2: torch.Tensor,
    *, silu_mul: bool = False, path: str = "auto", config: tuple | None = None,
) -> torch.Tensor:
    """``out2 = x2 @ W.T`` (x2 [M, K] or, with ``silu_mul``, [M, 2K] = [gate | up]; W in the device layout,
    ``packed`` [N, packed_row_bytes]).

    ``path``: "auto", or "gemv" / "gemm" / "cublas" to force one; ``config``: what ``gemv_config`` or
    ``gemm_config`` would return, to use instead (benchmark sweeps, tests).
    """
    m = x2.shape[0]
    n, k = shape
    if path == "auto":
        # float32 x: the exact fused dot runs on FMA units and spills registers; cuBLAS does it better.
        fused = m <= FUSED_GEMM_MAX_ROWS and x2.dtype != torch.float32
        path = "gemv" if m <= GEMV_MAX_ROWS else "gemm" if fused else "cublas"
    if silu_mul and path != "gemv":
        raise ValueError("silu_mul is fused into the GEMV path only")
    block = BLOCKS[qtype][0]
    if path == "gemv":
        if m > GEMV_MAX_ROWS:
            raise ValueError(f"the GEMV path takes at most {GEMV_MAX_ROWS} rows, got {m}")
        block_m, block_n, g, warps, x_full = config or gemv_config(qtype, m, n, k)
        _gemv_kernel[(triton.cdiv(n, block_n),)](
            x2, packed, packed.view(torch.float16), out2, m, n, k, packed.stride(0), x2.stride(0), out2.stride(0),
            QTYPE=qtype, BS=block, SUB=SUB_BLOCK[qtype], HAS_MIN=qtype in HAS_MIN, BLOCK_M=block_m,
            BLOCK_N=block_n, G=g, SILU_MUL=silu_mul, UNITS=max(1, g // _GEMV_UNIT.get(qtype, 1)),
            X_FULL=x_full, num_warps=warps,
        )
    elif path == "gemm":
        block_m, block_n, g, warps = config or gemm_config(qtype, m, n, k, x2.dtype)
        precision = "ieee" if x2.dtype == torch.float32 else None
        _gemm_kernel[(triton.cdiv(m, block_m), triton.cdiv(n, block_n))](
            x2, packed, packed.view(torch.float16), out2, m, n, k, packed.stride(0), x2.stride(0), out2.stride(0),
            QTYPE=qtype, BS=block, SUB=SUB_BLOCK[qtype], HAS_MIN=qtype in HAS_MIN, BLOCK_M=block_m,
            BLOCK_N=block_n, G=g, PRECISION=precision, num_warps=warps,
        )
    elif path == "cublas":
        _cublas(x2, packed, qtype, shape, out2)
    else:
        raise ValueError(f"unknown path {path!r}")
    return out2


def _scratch(device: torch.device, dtype: torch.dtype, elements: int) -> torch.Tensor:
    key = (str(device), dtype)
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < elements:
        buf = _SCRATCH[key] = torch.empty(elements, dtype=dtype, device=device)
    return buf[:elements]


def _cublas(x2: torch.Tensor, packed: torch.Tensor, qtype: str, shape: tuple[int, int], out2: torch.Tensor) -> None:
    """Dequantize row chunks into the reused scratch buffer and multiply with torch.matmul (cuBLAS)."""
    n, k = shape
    step = max(1, min(n, SCRATCH_ELEMENTS // k))
    buf = _scratch(x2.device, x2.dtype, step * k)
    for start in range(0, n, step):
        stop = min(start + step, n)
        rows = buf[: (stop - start) * k].view(stop - start, k)
        dequantize(packed[start:stop], qtype, rows)
        if start == 0 and stop == n:
            torch.matmul(x2, rows.T, out=out2)
        else:
            out2[:, start:stop] = torch.matmul(x2, rows.T)


def dequant_config(qtype: str, rows: int, cols: int) -> tuple[int, int, int]:
    """(BLOCK_N, sub-blocks per program along a row, num_warps): up to 4 x 1024 elements per program."""
    sub = SUB_BLOCK[qtype]
    g = _pow2_floor(min(cols // sub, max(1, _DEQUANT_ROW_ELEMENTS // sub)))
    return min(triton.next_power_of_2(rows), 4), g, 4


def dequantize(packed: torch.Tensor, qtype: str, out2: torch.Tensor) -> torch.Tensor:
    """out2 [R, C] = values of ``packed`` [R, packed_row_bytes] (rows of ``qtype`` in the device layout)."""
    rows, cols = out2.shape
    block_n, g, warps = dequant_config(qtype, rows, cols)
    grid = (triton.cdiv(rows, block_n), triton.cdiv(cols // SUB_BLOCK[qtype], g))
    _dequant_kernel[grid](packed, packed.view(torch.float16), out2, rows, cols, packed.stride(0), QTYPE=qtype,
                          BS=BLOCKS[qtype][0], SUB=SUB_BLOCK[qtype], HAS_MIN=qtype in HAS_MIN, BLOCK_N=block_n, G=g,
                          num_warps=warps)
    return out2
