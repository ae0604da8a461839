"""Triton kernels that read GGUF blocks as stored: fused dequantize-GEMV/GEMM and dequantization.

Every kernel is built on one device function per type that dequantizes a tile of BLOCK_N weight rows
by G sub-blocks straight from the block bytes into registers. A sub-block is a run of SUB (16 or 32)
consecutive elements sharing one scale, so the tile is a [BLOCK_N, G, SUB] tensor: scales are loaded
once per sub-block and broadcast, and the quant bytes of a sub-block are consecutive addresses
(16-byte aligned runs for Q4_K/Q5_K, whose loads vectorize). Reshaped to [BLOCK_N, G * SUB] it is in
natural element order, so x, the output and cuBLAS need no permutation.

Quants become floats by or-ing them into the mantissa of 2**23 (``_exact``): int-to-float
conversions run at a quarter rate and would cap the GEMV below HBM speed. Types without mins
(Q4_0, Q8_0, Q3_K, Q6_K) scale a sub-block's dot product once instead of every weight.

- ``qmatmul`` with at most ``GEMV_MAX_ROWS`` rows of x (decode): ``_gemv_kernel``, one program per
  BLOCK_N output features walking all of K; each weight tile is read once and applied to every x row
  (the rows of x stay in L1/L2). Block sizes come from the shape alone (``gemv_config``, or measured
  ``GEMV_CONFIGS``), so a call never autotunes or syncs and can be captured in a CUDA graph (after a
  first, compiling call). No split-K: at TinyLlama's shapes BLOCK_N of 2-8 rows already gives
  500+ programs; a 256-row matrix alone gets 128 (fuse k/v into QKV). Loads are byte-wide (blocks
  are 2-byte aligned), which caps a cold-L2 GEMV at 0.5-1.3 TB/s (benchmarks/sweep_gemv.py).
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
# type -> elements per sub-block (one scale each)
SUB_BLOCK = {"Q4_0": 16, "Q8_0": 32, "Q2_K": 16, "Q3_K": 16, "Q4_K": 32, "Q5_K": 32, "Q6_K": 16}
# Types whose values are scale * q - min, so a sub-block's sum cannot be scaled once.
HAS_MIN = frozenset({"Q2_K", "Q4_K", "Q5_K"})
# (type, out_features, in_features) -> (BLOCK_N, K elements per step, num_warps) measured best for the GEMV.
GEMV_CONFIGS: dict[tuple[str, int, int], tuple[int, int, int]] = {}
# Elements of K one GEMV program takes per step (see gemv_config).
_GEMV_K_STEP = 1024
# Elements of one row a dequantization program writes.
_DEQUANT_ROW_ELEMENTS = 1024
# The scratch buffer of the prefill path holds at most this many elements (64 MiB of float16).
SCRATCH_ELEMENTS = 1 << 25
_SCRATCH: dict[tuple[str, torch.dtype], torch.Tensor] = {}


# ------------------------------------------------------------------------------------------------
# Dequantization of one tile. Each ``_tile_*`` returns (q, a, b) for rows ``rn`` and sub-blocks
# sg0 .. sg0 + G - 1 of each row: q float32 [BLOCK_N, G, SUB] holds small exact integers and each
# sub-block's values are a * q + b, a and b float32 [BLOCK_N, G] (b is used only by types with
# mins, ``HAS_MIN``). Rows >= n_rows and blocks >= n_blocks read as zeros.


@triton.jit
def _u8(p, mask):
    return tl.load(p, mask=mask, other=0).to(tl.int32)


@triton.jit
def _f16(p, mask):
    """The little-endian f16 at byte pointer(s) ``p`` as float32 (block fields are only 2-byte aligned)."""
    lo = tl.load(p, mask=mask, other=0).to(tl.uint16)
    hi = tl.load(p + 1, mask=mask, other=0).to(tl.uint16)
    return (lo | (hi << 8)).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _exact(q, offset: tl.constexpr):
    """float32(q - offset) for integers 0 <= q < 2**23, exactly.

    Or-ing q into the mantissa of 2**23 and subtracting is two full-rate instructions, where an
    int-to-float conversion runs at a quarter of the rate and would bound the GEMV below HBM speed.
    """
    return (q | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + offset)


@triton.jit
def _blocks(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr, NSUB: tl.constexpr,
            BLOCK_BYTES: tl.constexpr):
    """Per sub-block sg0 .. sg0 + G - 1 [BLOCK_N, G]: its block's pointer, its index in the block, the mask."""
    g = sg0 + tl.arange(0, G)
    blk = g // NSUB
    row = w_ptr + rn.to(tl.int64)[:, None] * row_bytes + (blk * BLOCK_BYTES)[None, :]
    mask = (rn < n_rows)[:, None] & (blk < n_blocks)[None, :]
    return row, (g % NSUB)[None, :], mask


@triton.jit
def _tile_q4_0(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # Block: f16 d, 16 bytes; element t of sub-block s is nibble s of byte t; value (q - 8) * d.
    row, s, mask = _blocks(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G, 2, 18)
    t = tl.arange(0, 16)[None, None, :]
    d = _f16(row, mask)
    q = (_u8(row[:, :, None] + 2 + t, mask[:, :, None]) >> (4 * s[:, :, None])) & 15
    return _exact(q, 8), d, d


@triton.jit
def _tile_q8_0(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # Block: f16 d, 32 int8; value q * d. Flipping the sign bit maps int8 q to q + 128.
    row, s, mask = _blocks(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G, 1, 34)
    t = tl.arange(0, 32)[None, None, :]
    d = _f16(row, mask)
    q = _u8(row[:, :, None] + 2 + t, mask[:, :, None]) ^ 128
    return _exact(q, 128), d, d


@triton.jit
def _crumbs(row, s, t, mask, start):
    """Q2_K/Q3_K 2-bit quants of sub-block s (of 16): 64 bytes at ``start``, four 2-bit planes per 32 bytes."""
    byte = start + 32 * (s // 8) + 16 * (s % 2)
    return (_u8(row[:, :, None] + byte[:, :, None] + t, mask[:, :, None]) >> (2 * ((s // 2) % 4))[:, :, None]) & 3


@triton.jit
def _tile_q2_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # Block: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit quants, f16 d, f16 dmin;
    # value d * scale * q - dmin * min.
    row, s, mask = _blocks(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G, 16, 84)
    t = tl.arange(0, 16)[None, None, :]
    sc = _u8(row + s, mask)
    dl = _f16(row + 80, mask) * (sc & 15).to(tl.float32)
    ml = _f16(row + 82, mask) * (sc >> 4).to(tl.float32)
    return _exact(_crumbs(row, s, t, mask, 16), 0), dl, -ml


@triton.jit
def _tile_q3_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # Block: 32 bytes high-bit mask, 64 bytes of 2-bit quants, 12 bytes of 6-bit scales, f16 d;
    # value d * (scale - 32) * (q - 4) with q = low 2 bits | mask bit << 2.
    row, s, mask = _blocks(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G, 16, 110)
    t = tl.arange(0, 16)[None, None, :]
    low = (_u8(row + 96 + s % 8, mask) >> (4 * (s // 8))) & 15
    high = (_u8(row + 104 + s % 4, mask) >> (2 * (s // 4))) & 3
    dl = _f16(row + 108, mask) * ((low | (high << 4)) - 32).to(tl.float32)
    hbit = (_u8(row[:, :, None] + (16 * (s % 2))[:, :, None] + t, mask[:, :, None]) >> (s // 2)[:, :, None]) & 1
    return _exact(_crumbs(row, s, t, mask, 32) | (hbit << 2), 4), dl, dl


@triton.jit
def _k_scale_min(row, s, mask):
    """Q4_K/Q5_K: d * scale and dmin * min of sub-block s (of 8), from the 12 packed 6-bit fields."""
    a = _u8(row + 4 + s, mask)
    c = _u8(row + 8 + s, mask)
    e = _u8(row + s, mask)
    first = s < 4
    sc = tl.where(first, a & 63, (c & 15) | ((e >> 2) & 48))
    mn = tl.where(first, c & 63, (c >> 4) | ((a >> 2) & 48))
    return _f16(row, mask) * sc.to(tl.float32), _f16(row + 2, mask) * mn.to(tl.float32)


@triton.jit
def _tile_q4_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # Block: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles (32-byte runs, low then high).
    row, s, mask = _blocks(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G, 8, 144)
    t = tl.arange(0, 32)[None, None, :]
    dl, ml = _k_scale_min(row, s, mask)
    byte = (16 + 32 * (s // 2))[:, :, None] + t
    q = (_u8(row[:, :, None] + byte, mask[:, :, None]) >> (4 * (s % 2))[:, :, None]) & 15
    return _exact(q, 0), dl, -ml


@triton.jit
def _tile_q5_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # Q4_K's layout with 32 bytes of fifth bits (bit s of byte t) before the nibbles.
    row, s, mask = _blocks(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G, 8, 176)
    t = tl.arange(0, 32)[None, None, :]
    dl, ml = _k_scale_min(row, s, mask)
    m3 = mask[:, :, None]
    byte = (48 + 32 * (s // 2))[:, :, None] + t
    q = (_u8(row[:, :, None] + byte, m3) >> (4 * (s % 2))[:, :, None]) & 15
    q = q | (((_u8(row[:, :, None] + 16 + t, m3) >> s[:, :, None]) & 1) << 4)
    return _exact(q, 0), dl, -ml


@triton.jit
def _tile_q6_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G: tl.constexpr):
    # Block: 128 bytes low nibbles (64-byte runs), 64 bytes of 2-bit high parts, 16 int8 scales, f16 d;
    # value d * scale * (q - 32).
    row, s, mask = _blocks(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G, 16, 210)
    t = tl.arange(0, 16)[None, None, :]
    m3 = mask[:, :, None]
    dl = _f16(row + 208, mask) * (((_u8(row + 192 + s, mask)) ^ 128) - 128).to(tl.float32)
    low_byte = (64 * (s // 8) + 16 * (s % 4))[:, :, None] + t
    low = (_u8(row[:, :, None] + low_byte, m3) >> (4 * ((s // 4) % 2))[:, :, None]) & 15
    high_byte = (128 + 32 * (s // 8) + 16 * (s % 2))[:, :, None] + t
    high = (_u8(row[:, :, None] + high_byte, m3) >> (2 * ((s // 2) % 4))[:, :, None]) & 3
    return _exact(low | (high << 4), 32), dl, dl


@triton.jit
def _tile(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, QTYPE: tl.constexpr, G: tl.constexpr):
    if QTYPE == "Q4_0":
        q, a, b = _tile_q4_0(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q8_0":
        q, a, b = _tile_q8_0(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q2_K":
        q, a, b = _tile_q2_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q3_K":
        q, a, b = _tile_q3_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q4_K":
        q, a, b = _tile_q4_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    elif QTYPE == "Q5_K":
        q, a, b = _tile_q5_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
    else:
        tl.static_assert(QTYPE == "Q6_K")
        q, a, b = _tile_q6_k(w_ptr, row_bytes, rn, n_rows, sg0, n_blocks, G)
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
def _gemv_kernel(x_ptr, w_ptr, out_ptr, M, N, K, row_bytes, stride_x, stride_out,
                 QTYPE: tl.constexpr, BS: tl.constexpr, SUB: tl.constexpr, HAS_MIN: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, G: tl.constexpr, SILU_MUL: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for sg0 in range(0, K // SUB, G):
        if QTYPE == "Q4_0":
            acc = _gemv_q4_0_step(x_ptr, w_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, sg0 // 2,
                                  BLOCK_M, G // 2, SILU_MUL)
        elif QTYPE == "Q6_K":
            acc = _gemv_q6_k_step(x_ptr, w_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, sg0 // 4,
                                  BLOCK_M, G // 4, SILU_MUL)
        else:
            q, a, b = _tile(w_ptr, row_bytes, rn, N, sg0, K // BS, QTYPE, G)
            if HAS_MIN:
                w = _values(q, a, b, HAS_MIN)
            rk = (sg0 + tl.arange(0, G))[:, None] * SUB + tl.arange(0, SUB)[None, :]
            for m in tl.static_range(BLOCK_M):
                # Padding rows (m >= M) re-read the last row; their sums are never stored.
                x = _x_chunk(x_ptr + tl.minimum(m, M - 1) * stride_x, rk, rk < K, K, SILU_MUL)
                if HAS_MIN:
                    part = tl.sum(tl.sum(w * x[None, :, :], axis=2), axis=1)
                else:
                    # Scale once per sub-block: one multiply-add per weight instead of two.
                    part = tl.sum(tl.sum(q * x[None, :, :], axis=2) * a, axis=1)
                acc = tl.where(rows[:, None] == m, acc + part[None, :], acc)
    out = out_ptr + rows[:, None] * stride_out + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rows[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _gemv_q4_0_step(x_ptr, w_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, kb0, BLOCK_M: tl.constexpr,
                    NB: tl.constexpr, SILU_MUL: tl.constexpr):
    """One K step of the Q4_0 GEMV over blocks kb0 .. kb0 + NB - 1: each quant byte is loaded once and
    gives both of its nibbles (elements t and t + 16 of its block), where the generic tile loads it twice."""
    blk = kb0 + tl.arange(0, NB)
    row = w_ptr + rn.to(tl.int64)[:, None] * row_bytes + (blk * 18)[None, :]
    mask = (rn < N)[:, None] & (blk < K // 32)[None, :]
    d = _f16(row, mask)
    t = tl.arange(0, 16)
    byte = _u8(row[:, :, None] + 2 + t[None, None, :], mask[:, :, None])
    lo = _exact(byte & 15, 8)
    hi = _exact(byte >> 4, 8)
    rk = blk[:, None] * 32 + t[None, :]
    for m in tl.static_range(BLOCK_M):
        p = x_ptr + tl.minimum(m, M - 1) * stride_x
        x_lo = _x_chunk(p, rk, rk < K, K, SILU_MUL)
        x_hi = _x_chunk(p, rk + 16, rk < K, K, SILU_MUL)
        part = tl.sum(tl.sum(lo * x_lo[None, :, :] + hi * x_hi[None, :, :], axis=2) * d, axis=1)
        acc = tl.where(rows[:, None] == m, acc + part[None, :], acc)
    return acc


@triton.jit
def _gemv_q6_k_step(x_ptr, w_ptr, acc, rows, rn, M, N, K, row_bytes, stride_x, u0, BLOCK_M: tl.constexpr,
                    U: tl.constexpr, SILU_MUL: tl.constexpr):
    """One K step of the Q6_K GEMV over units u0 .. u0 + U - 1 (four per block).

    Unit (half r, h) of a block covers elements 128r + 32j + 16h + t (j < 4, t < 16). Their low nibbles
    are the two nibbles of ql[64r + 16h + t] and ql[64r + 32 + 16h + t], their high 2 bits the four
    crumbs of qh[32r + 16h + t]: three byte loads per four weights, where the generic tile needs eight.
    """
    u = u0 + tl.arange(0, U)
    blk = u // 4
    r = (u // 2) % 2
    h = u % 2
    row = w_ptr + rn.to(tl.int64)[:, None] * row_bytes + (blk * 210)[None, :]
    mask = (rn < N)[:, None] & (blk < K // 256)[None, :]
    m3 = mask[:, :, None]
    t = tl.arange(0, 16)[None, None, :]
    low = (64 * r + 16 * h)[None, :, None] + t
    ql_a = _u8(row[:, :, None] + low, m3)
    ql_b = _u8(row[:, :, None] + low + 32, m3)
    qh = _u8(row[:, :, None] + (128 + 32 * r + 16 * h)[None, :, None] + t, m3)
    q0 = _exact((ql_a & 15) | ((qh & 3) << 4), 32)
    q1 = _exact((ql_b & 15) | (((qh >> 2) & 3) << 4), 32)
    q2 = _exact((ql_a >> 4) | (((qh >> 4) & 3) << 4), 32)
    q3 = _exact((ql_b >> 4) | ((qh >> 6) << 4), 32)
    d = _f16(row + 208, mask)
    sc = row + 192 + (8 * r + h)[None, :]
    a0 = d * ((_u8(sc, mask) ^ 128) - 128).to(tl.float32)
    a1 = d * ((_u8(sc + 2, mask) ^ 128) - 128).to(tl.float32)
    a2 = d * ((_u8(sc + 4, mask) ^ 128) - 128).to(tl.float32)
    a3 = d * ((_u8(sc + 6, mask) ^ 128) - 128).to(tl.float32)
    rk = (blk * 256 + 128 * r + 16 * h)[:, None] + tl.arange(0, 16)[None, :]
    for m in tl.static_range(BLOCK_M):
        p = x_ptr + tl.minimum(m, M - 1) * stride_x
        ok = rk < K
        part = tl.sum(q0 * _x_chunk(p, rk, ok, K, SILU_MUL)[None, :, :], axis=2) * a0
        part += tl.sum(q1 * _x_chunk(p, rk + 32, ok, K, SILU_MUL)[None, :, :], axis=2) * a1
        part += tl.sum(q2 * _x_chunk(p, rk + 64, ok, K, SILU_MUL)[None, :, :], axis=2) * a2
        part += tl.sum(q3 * _x_chunk(p, rk + 96, ok, K, SILU_MUL)[None, :, :], axis=2) * a3
        acc = tl.where(rows[:, None] == m, acc + tl.sum(part, axis=1)[None, :], acc)
    return acc


@triton.jit
def _gemm_kernel(x_ptr, w_ptr, out_ptr, M, N, K, row_bytes, stride_x, stride_out,
                 QTYPE: tl.constexpr, BS: tl.constexpr, SUB: tl.constexpr, HAS_MIN: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, G: tl.constexpr, PRECISION: tl.constexpr):
    # Axis 0 walks M fastest, so programs sharing a weight tile run together and share it in L2.
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for sg0 in range(0, K // SUB, G):
        q, a, b = _tile(w_ptr, row_bytes, rn, N, sg0, K // BS, QTYPE, G)
        w = tl.reshape(_values(q, a, b, HAS_MIN), (BLOCK_N, G * SUB))
        rk = sg0 * SUB + tl.arange(0, G * SUB)
        x_mask = (rm[:, None] < M) & (rk[None, :] < K)
        x = tl.load(x_ptr + rm.to(tl.int64)[:, None] * stride_x + rk[None, :], mask=x_mask, other=0.0)
        acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc, input_precision=PRECISION)
    out = out_ptr + rm.to(tl.int64)[:, None] * stride_out + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _dequant_kernel(w_ptr, out_ptr, R, C, row_bytes, QTYPE: tl.constexpr, BS: tl.constexpr, SUB: tl.constexpr,
                    HAS_MIN: tl.constexpr, BLOCK_N: tl.constexpr, G: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    sg0 = tl.program_id(1) * G
    q, a, b = _tile(w_ptr, row_bytes, rn, R, sg0, C // BS, QTYPE, G)
    v = _values(q, a, b, HAS_MIN)
    rk = (sg0 + tl.arange(0, G))[:, None] * SUB + tl.arange(0, SUB)[None, :]
    out = out_ptr + rn.to(tl.int64)[:, None, None] * C + rk[None, :, :]
    tl.store(out, v.to(out_ptr.dtype.element_ty), mask=(rn[:, None, None] < R) & (rk[None, :, :] < C))


# ------------------------------------------------------------------------------------------------
# Launchers. Shapes are checked by the caller (``tensorlogic.llm.kernels``).


def _pow2_floor(n: int) -> int:
    return 1 << max(n, 1).bit_length() - 1


def gemv_config(qtype: str, m: int, n: int, k: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, sub-blocks per K step, num_warps) of the GEMV for an [m, k] x [n, k]^T product.

    ``GEMV_CONFIGS[(qtype, n, k)]`` = (BLOCK_N, K elements per step, num_warps), e.g. the best of a
    ``bench_qmatmul.py --sweep`` run, overrides the shape heuristic.
    """
    sub = SUB_BLOCK[qtype]
    block_m = triton.next_power_of_2(max(m, 1))
    tuned = GEMV_CONFIGS.get((qtype, n, k))
    if tuned is not None:
        return block_m, tuned[0], max(1, tuned[1] // sub), tuned[2]
    # From benchmarks/sweep_gemv.py on an H200 (weights cold in L2, as in decode): 1024 elements of K per step
    # was best for every type and shape; 4 rows per program for matrices of 8M+ weights, 8 for a vocabulary
    # head, 2 below (more programs for small matrices).
    block_n = 8 if n >= 16384 else 4 if n * k >= (1 << 23) else 2
    block_n = max(1, min(block_n, _pow2_floor(n)))
    block_k = max(sub, min(triton.next_power_of_2(k), _GEMV_K_STEP))
    return block_m, block_n, block_k // sub, 4


def gemm_config(qtype: str, m: int, n: int, k: int, dtype: torch.dtype = torch.float16) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, sub-blocks per K step, num_warps) of the fused GEMM: 64 elements of K per step.

    float32 x takes smaller tiles: its exact ("ieee") dot runs on FMA units and holds far more registers.
    """
    if dtype == torch.float32:
        return (16 if m <= 16 else 32), 32, 64 // SUB_BLOCK[qtype], 4
    return (16 if m <= 16 else 32 if m <= 32 else 64), 64, 64 // SUB_BLOCK[qtype], 4


def qmatmul(
    x2: torch.Tensor, raw: torch.Tensor, qtype: str, shape: tuple[int, int], out2: torch.Tensor,
    *, silu_mul: bool = False, path: str = "auto", config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """``out2 = x2 @ W.T`` (x2 [M, K] or, with ``silu_mul``, [M, 2K] = [gate | up]; raw [N, row_bytes]).

    ``path``: "auto", or "gemv" / "gemm" / "cublas" to force one; ``config``: (BLOCK_M, BLOCK_N, sub-blocks
    per K step, num_warps) instead of ``gemv_config``/``gemm_config`` (benchmark sweeps, tests).
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
        block_m, block_n, g, warps = config or gemv_config(qtype, m, n, k)
        _gemv_kernel[(triton.cdiv(n, block_n),)](
            x2, raw, out2, m, n, k, raw.stride(0), x2.stride(0), out2.stride(0),
            QTYPE=qtype, BS=block, SUB=SUB_BLOCK[qtype], HAS_MIN=qtype in HAS_MIN, BLOCK_M=block_m,
            BLOCK_N=block_n, G=g, SILU_MUL=silu_mul, num_warps=warps,
        )
    elif path == "gemm":
        block_m, block_n, g, warps = config or gemm_config(qtype, m, n, k, x2.dtype)
        precision = "ieee" if x2.dtype == torch.float32 else None
        _gemm_kernel[(triton.cdiv(m, block_m), triton.cdiv(n, block_n))](
            x2, raw, out2, m, n, k, raw.stride(0), x2.stride(0), out2.stride(0),
            QTYPE=qtype, BS=block, SUB=SUB_BLOCK[qtype], HAS_MIN=qtype in HAS_MIN, BLOCK_M=block_m,
            BLOCK_N=block_n, G=g, PRECISION=precision, num_warps=warps,
        )
    elif path == "cublas":
        _cublas(x2, raw, qtype, shape, out2)
    else:
        raise ValueError(f"unknown path {path!r}")
    return out2


def _scratch(device: torch.device, dtype: torch.dtype, elements: int) -> torch.Tensor:
    key = (str(device), dtype)
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < elements:
        buf = _SCRATCH[key] = torch.empty(elements, dtype=dtype, device=device)
    return buf[:elements]


def _cublas(x2: torch.Tensor, raw: torch.Tensor, qtype: str, shape: tuple[int, int], out2: torch.Tensor) -> None:
    """Dequantize row chunks into the reused scratch buffer and multiply with torch.matmul (cuBLAS)."""
    n, k = shape
    step = max(1, min(n, SCRATCH_ELEMENTS // k))
    buf = _scratch(x2.device, x2.dtype, step * k)
    for start in range(0, n, step):
        stop = min(start + step, n)
        rows = buf[: (stop - start) * k].view(stop - start, k)
        dequantize(raw[start:stop], qtype, rows)
        if start == 0 and stop == n:
            torch.matmul(x2, rows.T, out=out2)
        else:
            out2[:, start:stop] = torch.matmul(x2, rows.T)


def dequant_config(qtype: str, rows: int, cols: int) -> tuple[int, int, int]:
    """(BLOCK_N, sub-blocks per program along a row, num_warps): up to 4 x 1024 elements per program."""
    sub = SUB_BLOCK[qtype]
    g = _pow2_floor(min(cols // sub, max(1, _DEQUANT_ROW_ELEMENTS // sub)))
    return min(triton.next_power_of_2(rows), 4), g, 4


def dequantize(raw2: torch.Tensor, qtype: str, out2: torch.Tensor) -> torch.Tensor:
    """out2 [R, C] = values of raw2 [R, C / block * block_bytes] (GGUF rows of ``qtype``)."""
    rows, cols = out2.shape
    block_n, g, warps = dequant_config(qtype, rows, cols)
    grid = (triton.cdiv(rows, block_n), triton.cdiv(cols // SUB_BLOCK[qtype], g))
    _dequant_kernel[grid](raw2, out2, rows, cols, raw2.stride(0), QTYPE=qtype, BS=BLOCKS[qtype][0],
                          SUB=SUB_BLOCK[qtype], HAS_MIN=qtype in HAS_MIN, BLOCK_N=block_n, G=g, num_warps=warps)
    return out2
