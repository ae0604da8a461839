"""Triton kernels for ``ops``, one launch each: residual add + RMSNorm, RoPE + KV-cache write, decode attention
(a split and a merge kernel), SiLU * mul."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(h_ptr, y_ptr, w_ptr, out_ptr, n, eps, HAS_Y: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    h = tl.load(h_ptr + row * n + offs, mask=mask, other=0.0)
    if HAS_Y:
        # The residual sum rounds to the activation type, as the unfused h + y does.
        h = (h + tl.load(y_ptr + row * n + offs, mask=mask, other=0.0)).to(h_ptr.dtype.element_ty)
        tl.store(h_ptr + row * n + offs, h, mask=mask)
    hf = h.to(tl.float32)
    inv = tl.rsqrt(tl.sum(hf * hf, axis=0) / n + eps)
    normed = (hf * inv).to(h_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + row * n + offs, (w * normed).to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(h: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, eps: float) -> torch.Tensor:
    n = h.shape[-1]
    out = torch.empty_like(h)
    rows = h.numel() // n
    block = triton.next_power_of_2(n)
    _add_rms_norm_kernel[(rows,)](h, h if y is None else y, w, out, n, eps, HAS_Y=y is not None, BLOCK=block,
                                  num_warps=4 if block <= 4096 else 8)
    return out


@triton.jit
def _rope_cache_kernel(qkv_ptr, bias_ptr, pos_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr,
                       T, n_ctx, q_tok_stride, q_head_stride,
                       N_HEAD: tl.constexpr, N_HEAD_KV: tl.constexpr, HEAD_DIM: tl.constexpr,
                       ROPE_HALF: tl.constexpr, NEOX: tl.constexpr, HAS_BIAS: tl.constexpr,
                       HALF_BLOCK: tl.constexpr, REST_BLOCK: tl.constexpr):
    t = tl.program_id(0)
    head = tl.program_id(1)  # q heads, then k heads, then v heads
    row_len = (N_HEAD + 2 * N_HEAD_KV) * HEAD_DIM
    src = qkv_ptr + t.to(tl.int64) * row_len + head * HEAD_DIM
    pos = tl.load(pos_ptr + t).to(tl.int64)
    is_q = head < N_HEAD
    is_v = head >= N_HEAD + N_HEAD_KV
    kv = tl.where(is_q, 0, tl.where(is_v, head - N_HEAD - N_HEAD_KV, head - N_HEAD))
    cache_off = kv.to(tl.int64) * n_ctx * HEAD_DIM + pos * HEAD_DIM
    q_off = t.to(tl.int64) * q_tok_stride + head.to(tl.int64) * q_head_stride
    dtype = q_ptr.dtype.element_ty

    i = tl.arange(0, HALF_BLOCK)
    im = i < ROPE_HALF
    if NEOX:
        i1, i2 = i, i + ROPE_HALF
    else:
        i1, i2 = 2 * i, 2 * i + 1
    x1 = tl.load(src + i1, mask=im, other=0.0)
    x2 = tl.load(src + i2, mask=im, other=0.0)
    if HAS_BIAS:
        x1 = (x1 + tl.load(bias_ptr + head * HEAD_DIM + i1, mask=im, other=0.0)).to(dtype)
        x2 = (x2 + tl.load(bias_ptr + head * HEAD_DIM + i2, mask=im, other=0.0)).to(dtype)
    if is_v:
        tl.store(v_ptr + cache_off + i1, x1, mask=im)
        tl.store(v_ptr + cache_off + i2, x2, mask=im)
    else:
        c = tl.load(cos_ptr + pos * ROPE_HALF + i, mask=im, other=0.0)
        s = tl.load(sin_ptr + pos * ROPE_HALF + i, mask=im, other=0.0)
        a, b = x1.to(tl.float32), x2.to(tl.float32)
        o1 = (a * c - b * s).to(dtype)
        o2 = (a * s + b * c).to(dtype)
        if is_q:
            tl.store(q_ptr + q_off + i1, o1, mask=im)
            tl.store(q_ptr + q_off + i2, o2, mask=im)
        else:
            tl.store(k_ptr + cache_off + i1, o1, mask=im)
            tl.store(k_ptr + cache_off + i2, o2, mask=im)
    if REST_BLOCK > 0:
        # Dimensions past the rotary ones (partial RoPE) are copied as they are.
        j = 2 * ROPE_HALF + tl.arange(0, REST_BLOCK)
        jm = j < HEAD_DIM
        x = tl.load(src + j, mask=jm, other=0.0)
        if HAS_BIAS:
            x = (x + tl.load(bias_ptr + head * HEAD_DIM + j, mask=jm, other=0.0)).to(dtype)
        if is_q:
            tl.store(q_ptr + q_off + j, x, mask=jm)
        elif is_v:
            tl.store(v_ptr + cache_off + j, x, mask=jm)
        else:
            tl.store(k_ptr + cache_off + j, x, mask=jm)


def rope_into_cache(qkv: torch.Tensor, bias: torch.Tensor | None, positions: torch.Tensor, cos: torch.Tensor,
                    sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, *, n_head: int, n_head_kv: int,
                    rope_dim: int, style: str, grouped: bool) -> torch.Tensor:
    t = qkv.shape[0]
    n_ctx, hd = k_cache.shape[-2], k_cache.shape[-1]
    if not (qkv.is_contiguous() and k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("rope_into_cache needs contiguous qkv and caches")
    g = n_head // n_head_kv
    if grouped:
        q = torch.empty((n_head_kv, g * t, hd), dtype=qkv.dtype, device=qkv.device)
        tok_stride, head_stride = hd, t * hd  # head h = kv * g + j sits at row j * T + t of its KV block
    else:
        q = torch.empty((t, n_head, hd), dtype=qkv.dtype, device=qkv.device)
        tok_stride, head_stride = n_head * hd, hd
    half = rope_dim // 2
    rest = hd - rope_dim
    _rope_cache_kernel[(t, n_head + 2 * n_head_kv)](
        qkv, qkv if bias is None else bias, positions, cos, sin, q, k_cache, v_cache,
        t, n_ctx, tok_stride, head_stride,
        N_HEAD=n_head, N_HEAD_KV=n_head_kv, HEAD_DIM=hd, ROPE_HALF=half, NEOX=style == "neox",
        HAS_BIAS=bias is not None, HALF_BLOCK=triton.next_power_of_2(half),
        REST_BLOCK=triton.next_power_of_2(rest) if rest else 0, num_warps=1,
    )
    return q


# Decode attention (one new token) over the cache, split over the keys: program (kv, s) scores the G query heads of
# KV head kv against keys s*BLOCK .. s*BLOCK+BLOCK-1 and leaves its softmax max, sum and weighted values; a second
# kernel merges the splits. One launch per step reads each key once for all G heads (no K/V repetition), and the
# splits give the GPU work at every context length, where one program per head would leave it nearly idle.
_ATTN_BLOCK = 64


@triton.jit
def _decode_attn_split_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, m_ptr, l_ptr, acc_ptr, n_ctx, scale, G, S,
                              HEAD_DIM: tl.constexpr, GP: tl.constexpr, DP: tl.constexpr, BLOCK: tl.constexpr,
                              IEEE: tl.constexpr):
    kv = tl.program_id(0)
    s = tl.program_id(1)
    pos = tl.load(pos_ptr).to(tl.int64)
    g = tl.arange(0, GP)
    d = tl.arange(0, DP)
    j = s * BLOCK + tl.arange(0, BLOCK)
    gd = (g < G)[:, None] & (d < HEAD_DIM)[None, :]
    q = tl.load(q_ptr + (kv * G + g)[:, None] * HEAD_DIM + d[None, :], mask=gd, other=0.0)
    seen = j <= pos
    jd = seen[:, None] & (d < HEAD_DIM)[None, :]
    base = kv.to(tl.int64) * n_ctx * HEAD_DIM + j[:, None] * HEAD_DIM + d[None, :]
    k = tl.load(k_ptr + base, mask=jd, other=0.0)
    if IEEE:
        scores = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        scores = tl.dot(q, tl.trans(k))
    scores = tl.where(seen[None, :], scores * scale, float("-inf"))
    m = tl.max(scores, axis=1)
    p = tl.exp(scores - tl.where(m == float("-inf"), 0.0, m)[:, None])
    # Probabilities stay float32 (no f16 rounding of p, unlike flash attention): the matrices are tiny.
    v = tl.load(v_ptr + base, mask=jd, other=0.0).to(tl.float32)
    acc = tl.dot(p, v, input_precision="ieee")
    row = (kv * S + s) * GP + g
    tl.store(m_ptr + row, m)
    tl.store(l_ptr + row, tl.sum(p, axis=1))
    tl.store(acc_ptr + row[:, None] * DP + d[None, :], acc)


@triton.jit
def _decode_attn_merge_kernel(m_ptr, l_ptr, acc_ptr, out_ptr, G, S, HEAD_DIM: tl.constexpr, GP: tl.constexpr,
                              DP: tl.constexpr, SP: tl.constexpr):
    kv = tl.program_id(0)
    g = tl.arange(0, GP)
    d = tl.arange(0, DP)
    si = tl.arange(0, SP)
    rows = (kv * S + si)[:, None] * GP + g[None, :]
    top = tl.max(tl.load(m_ptr + rows, mask=(si < S)[:, None], other=float("-inf")), axis=0)
    total = tl.zeros((GP,), dtype=tl.float32)
    out = tl.zeros((GP, DP), dtype=tl.float32)
    for s in range(0, S):
        row = (kv * S + s) * GP + g
        w = tl.exp(tl.load(m_ptr + row) - top)  # a split with no key in view has max -inf: weight 0
        total += w * tl.load(l_ptr + row)
        out += w[:, None] * tl.load(acc_ptr + row[:, None] * DP + d[None, :])
    out = out / total[:, None]
    mask = (g < G)[:, None] & (d < HEAD_DIM)[None, :]
    tl.store(out_ptr + (kv * G + g)[:, None] * HEAD_DIM + d[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor, span: int,
                     scale: float) -> torch.Tensor:
    """q [KVH, G, hd] (one token, the grouped layout), caches [KVH, n_ctx, hd], pos a device tensor [1]: keys
    0..pos are seen, of the first ``span``. Returns [KVH, G, hd] = [H, hd] in q's dtype."""
    n_kv, g, hd = q.shape
    n_ctx = k_cache.shape[-2]
    if not (q.is_contiguous() and k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("decode_attention needs contiguous q and caches")
    splits = triton.cdiv(span, _ATTN_BLOCK)
    gp, dp = max(16, triton.next_power_of_2(g)), max(16, triton.next_power_of_2(hd))
    m = torch.empty((n_kv, splits, gp), dtype=torch.float32, device=q.device)
    l_sum = torch.empty_like(m)
    acc = torch.empty((n_kv, splits, gp, dp), dtype=torch.float32, device=q.device)
    ieee = q.dtype == torch.float32
    _decode_attn_split_kernel[(n_kv, splits)](q, k_cache, v_cache, pos, m, l_sum, acc, n_ctx, scale, g, splits,
                                              HEAD_DIM=hd, GP=gp, DP=dp, BLOCK=_ATTN_BLOCK, IEEE=ieee, num_warps=4)
    out = torch.empty_like(q)
    _decode_attn_merge_kernel[(n_kv,)](m, l_sum, acc, out, g, splits, HEAD_DIM=hd, GP=gp, DP=dp,
                                       SP=triton.next_power_of_2(splits), num_warps=4)
    return out


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, K, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < K
    gate = tl.load(x_ptr + row * 2 * K + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * 2 * K + K + offs, mask=mask, other=0.0).to(tl.float32)
    # Rounded after the SiLU, as torch's silu(gate) * up rounds its intermediate.
    act = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * K + offs, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_mul(x2: torch.Tensor) -> torch.Tensor:
    rows, k = x2.shape[0], x2.shape[1] // 2
    out = torch.empty((rows, k), dtype=x2.dtype, device=x2.device)
    block = 1024
    _silu_mul_kernel[(rows, triton.cdiv(k, block))](x2, out, k, BLOCK=block, num_warps=4)
    return out
