"""The transformer's non-matmul steps: RMSNorm (with the residual add), RoPE + KV-cache write, decode attention.

Each has a torch version — the reference, and the path on CPU — and on CUDA one fused Triton kernel
(``ops_triton``), so a decode layer is eight kernels rather than forty: launch and memory-latency costs, not
bandwidth, dominate these small steps.  Both versions round where transformers does (statistics and rotations in
float32, results in the activation type).
"""

from __future__ import annotations

import torch

from .kernels import use_triton


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., n] activation type, w [n] float32."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (w * xf.to(x.dtype)).to(x.dtype)


def add_rms_norm(h: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, eps: float) -> torch.Tensor:
    """``h += y`` in place (the residual stream, when ``y`` is given), then return rms_norm(h)."""
    if use_triton(h) and h.is_contiguous() and (y is None or y.is_contiguous()):
        from . import ops_triton

        return ops_triton.add_rms_norm(h, y, w, eps)
    if y is not None:
        h += y
    return rms_norm(h, w, eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope_dim: int, style: str) -> torch.Tensor:
    """RoPE on x [T, heads, head_dim] with cos/sin [T, rope_dim/2]; dims past rope_dim pass through."""
    rot, rest = x[..., :rope_dim], x[..., rope_dim:]
    c, s = cos[:, None, :], sin[:, None, :]
    if style == "norm":
        pairs = rot.float().unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        out = torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)
    else:
        a, b = rot.float().chunk(2, dim=-1)
        out = torch.cat((a * c - b * s, a * s + b * c), dim=-1)
    out = out.to(x.dtype)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def rope_into_cache(qkv: torch.Tensor, bias: torch.Tensor | None, positions: torch.Tensor, cos: torch.Tensor,
                    sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, *, n_head: int, n_head_kv: int,
                    rope_dim: int, style: str, grouped: bool) -> torch.Tensor:
    """Split one sequence's qkv [T, (H + 2 KVH) * hd] (+ bias), rotate q and k at ``positions``, write k and v
    into the layer's caches [KVH, n_ctx, hd] at those positions, and return q.

    q comes back as [T, H, hd], or with ``grouped`` as [KVH, G * T, hd]: the G query heads of each KV head
    stacked as rows (row g * T + t), the layout attention reads against the cache without repeating K/V.
    """
    if use_triton(qkv):
        from . import ops_triton

        return ops_triton.rope_into_cache(qkv, bias, positions, cos, sin, k_cache, v_cache, n_head=n_head,
                                          n_head_kv=n_head_kv, rope_dim=rope_dim, style=style, grouped=grouped)
    return rope_reference(qkv, bias, positions, cos, sin, k_cache, v_cache, n_head=n_head, n_head_kv=n_head_kv,
                          rope_dim=rope_dim, style=style, grouped=grouped)


def rope_reference(qkv: torch.Tensor, bias: torch.Tensor | None, positions: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, *, n_head: int, n_head_kv: int,
                   rope_dim: int, style: str, grouped: bool) -> torch.Tensor:
    """``rope_into_cache`` in torch ops (the CPU path)."""
    t = qkv.shape[0]
    hd = k_cache.shape[-1]
    if bias is not None:
        qkv = qkv + bias
    c, s = cos[positions], sin[positions]
    q = rotate(qkv[:, : n_head * hd].unflatten(-1, (n_head, hd)), c, s, rope_dim, style)
    k = rotate(qkv[:, n_head * hd : (n_head + n_head_kv) * hd].unflatten(-1, (n_head_kv, hd)), c, s, rope_dim, style)
    v = qkv[:, (n_head + n_head_kv) * hd :].unflatten(-1, (n_head_kv, hd))
    k_cache.index_copy_(1, positions, k.transpose(0, 1))
    v_cache.index_copy_(1, positions, v.transpose(0, 1))
    if not grouped:
        return q
    g = n_head // n_head_kv
    return q.reshape(t, n_head_kv, g, hd).permute(1, 2, 0, 3).reshape(n_head_kv, g * t, hd)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, positions: torch.Tensor,
                     span: int, scale: float) -> torch.Tensor:
    """Attention of one new token: q [KVH, G, hd] (``rope_into_cache``'s grouped layout) over keys 0..positions[0]
    of caches [KVH, n_ctx, hd]; returns [1, H * hd] (head kv * G + j at block kv, row j)."""
    if use_triton(q):
        from . import ops_triton

        return ops_triton.decode_attention(q, k_cache, v_cache, positions, span, scale).reshape(1, -1)
    seen = torch.arange(span, device=q.device) <= positions[0]
    mask = torch.zeros(1, span, device=q.device, dtype=q.dtype).masked_fill(~seen, float("-inf"))
    out = torch.nn.functional.scaled_dot_product_attention(q[None], k_cache[None, :, :span], v_cache[None, :, :span],
                                                           attn_mask=mask, scale=scale)
    return out.reshape(1, -1)


def silu_mul(x2: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for x2 [rows, 2K] = [gate | up] (contiguous): one kernel on CUDA instead of three."""
    if use_triton(x2):
        from . import ops_triton

        return ops_triton.silu_mul(x2)
    k = x2.shape[1] // 2
    return torch.nn.functional.silu(x2[:, :k]) * x2[:, k:]
