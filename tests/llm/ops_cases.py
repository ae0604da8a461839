"""Cases for the fused transformer ops, shared by the CPU, Triton-interpreter and CUDA tests.

``run_cases(device)`` runs ``ops_triton`` (on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1``) against
the torch versions in ``ops`` and returns each case's max abs error; the torch versions themselves are checked
against float64 formulas in test_ops.py.
"""

from __future__ import annotations

import torch

from tensorlogic.llm import ops, ops_triton

# (heads, kv heads, head dim, rope dim, style, bias, tokens)
ROPE_CASES = [
    (4, 2, 16, 16, "norm", False, 3),
    (4, 4, 16, 16, "neox", True, 1),
    (6, 2, 24, 16, "neox", False, 2),  # partial rotary: 8 dims pass through
    (8, 1, 32, 32, "norm", True, 5),
]


def rope_case(case: tuple, device: str, dtype: torch.dtype, seed: int = 0,
              impls: tuple[str, ...] = ("torch", "triton")) -> dict[str, tuple[torch.Tensor, ...]]:
    n_head, n_kv, hd, rope_dim, style, bias, t = case
    gen = torch.Generator().manual_seed(seed)
    n_ctx = 16
    qkv = torch.randn(t, (n_head + 2 * n_kv) * hd, generator=gen).to(device, dtype)
    b = torch.randn((n_head + 2 * n_kv) * hd, generator=gen).to(device, dtype) if bias else None
    positions = torch.randperm(n_ctx, generator=gen)[:t].to(device)
    inv = 1.0 / 10000 ** (torch.arange(0, rope_dim, 2, dtype=torch.float64) / rope_dim)
    angles = torch.outer(torch.arange(n_ctx, dtype=torch.float64), inv)
    cos, sin = angles.cos().float().to(device), angles.sin().float().to(device)
    out = {}
    for impl in impls:
        for grouped in (False, True):
            kc = torch.zeros(n_kv, n_ctx, hd, device=device, dtype=dtype)
            vc = torch.zeros_like(kc)
            args = (qkv, b, positions, cos, sin, kc, vc)
            kw = dict(n_head=n_head, n_head_kv=n_kv, rope_dim=rope_dim, style=style, grouped=grouped)
            q = ops_triton.rope_into_cache(*args, **kw) if impl == "triton" else ops.rope_reference(*args, **kw)
            out[f"{impl}-{grouped}"] = (q.float().cpu(), kc.float().cpu(), vc.float().cpu())
    return out


# (kv heads, query heads per kv head, head dim, cache length, span read, position of the new token)
ATTN_CASES = [
    (4, 8, 64, 512, 256, 0),  # the first decode step sees one key
    (4, 8, 64, 512, 256, 200),
    (2, 1, 32, 300, 300, 299),  # no grouping; span not a multiple of the key block
    (1, 3, 80, 1024, 1024, 700),  # head dim and group size not powers of two; many splits
]


def attention_case(case: tuple, device: str, dtype: torch.dtype, seed: int = 0):
    """(q, k cache, v cache, position tensor, span, scale, float64 reference [KVH, G, hd])."""
    n_kv, g, hd, n_ctx, span, pos = case
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n_kv, g, hd, generator=gen, dtype=torch.float64)
    kc = torch.randn(n_kv, n_ctx, hd, generator=gen, dtype=torch.float64) * 2
    vc = torch.randn(n_kv, n_ctx, hd, generator=gen, dtype=torch.float64)
    # Keys past the position hold garbage that must not be seen.
    kc[:, pos + 1 :] = 1e4
    scale = hd ** -0.5
    q, kc, vc = (t.to(dtype).double() for t in (q, kc, vc))  # the reference sees the same rounded inputs
    w = torch.softmax(torch.einsum("hgd,hjd->hgj", q, kc[:, : pos + 1]) * scale, dim=-1)
    ref = torch.einsum("hgj,hjd->hgd", w, vc[:, : pos + 1])
    pos_t = torch.tensor([pos], device=device)
    return (q.to(device, dtype), kc.to(device, dtype), vc.to(device, dtype), pos_t, span, scale, ref)


def run_cases(device: str) -> dict[str, float]:
    errors: dict[str, float] = {}
    for dtype in (torch.float32, torch.float16):
        for i, case in enumerate(ROPE_CASES):
            got = rope_case(case, device, dtype, seed=i)
            for grouped in (False, True):
                ref, tri = got[f"torch-{grouped}"], got[f"triton-{grouped}"]
                errors[f"rope{i}-{dtype}-{grouped}"] = max(float((a - b).abs().max()) for a, b in zip(ref, tri))
        for i, case in enumerate(ATTN_CASES):
            q, kc, vc, pos, span, scale, ref = attention_case(case, device, dtype, seed=i)
            got = ops_triton.decode_attention(q, kc, vc, pos, span, scale)
            errors[f"attn{i}-{dtype}"] = float((got.double().cpu() - ref).abs().max())
        gen = torch.Generator().manual_seed(7)
        for k in (100, 5632):
            x = torch.randn(3, 2 * k, generator=gen).to(device, dtype)
            ref = torch.nn.functional.silu(x[:, :k]) * x[:, k:]
            errors[f"silumul{k}-{dtype}"] = float((ops_triton.silu_mul(x) - ref).abs().max().float())
        for n in (64, 100, 2048):
            h = torch.randn(3, n, generator=gen).to(device, dtype)
            y = torch.randn(3, n, generator=gen).to(device, dtype)
            w = (1 + 0.1 * torch.randn(n, generator=gen)).to(device)
            h_ref = h.clone()
            ref = ops.rms_norm(h_ref + y, w, 1e-5)
            h_tri = h.clone()
            tri = ops_triton.add_rms_norm(h_tri, y, w, 1e-5)
            errors[f"addnorm{n}-{dtype}"] = max(float((ref - tri).abs().max().float()),
                                                 float((h_ref + y - h_tri).abs().max().float()))
            alone = ops_triton.add_rms_norm(h.clone(), None, w, 1e-5)
            errors[f"norm{n}-{dtype}"] = float((ops.rms_norm(h, w, 1e-5) - alone).abs().max().float())
    return errors


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run_cases(sys.argv[1] if len(sys.argv) > 1 else "cpu")))
