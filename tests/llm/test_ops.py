"""RMSNorm and RoPE + KV-cache write: torch versions against float64 formulas, Triton kernels against those."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tensorlogic.llm import ops

from .ops_cases import ATTN_CASES, ROPE_CASES, attention_case, rope_case

# Max abs error of the Triton kernels against the torch ops: f32 rounding, or one f16 step at |x| ~ 4.
_TOL = {"float32": 1e-5, "float16": 4e-3}


def _rope64(x: torch.Tensor, pos: torch.Tensor, rope_dim: int, style: str) -> torch.Tensor:
    """RoPE as rotation of complex numbers, in float64: x [T, heads, hd]."""
    x = x.double()
    inv = 1.0 / 10000 ** (torch.arange(0, rope_dim, 2, dtype=torch.float64) / rope_dim)
    turn = torch.polar(torch.ones(len(pos), rope_dim // 2, dtype=torch.float64), pos.double()[:, None] * inv)
    rot = x[..., :rope_dim]
    if style == "norm":
        z = torch.view_as_complex(rot.reshape(*rot.shape[:-1], -1, 2).contiguous())
        out = torch.view_as_real(z * turn[:, None]).flatten(-2)
    else:
        half = rope_dim // 2
        z = torch.complex(rot[..., :half], rot[..., half:]) * turn[:, None]
        out = torch.cat((z.real, z.imag), dim=-1)
    return torch.cat((out, x[..., rope_dim:]), dim=-1)


@pytest.mark.parametrize("case", ROPE_CASES)
def test_rope_into_cache_matches_complex_rotation(case: tuple) -> None:
    n_head, n_kv, hd, rope_dim, style, bias, t = case
    got = rope_case(case, "cpu", torch.float32, impls=("torch",))
    gen = torch.Generator().manual_seed(0)  # the same draws rope_case made
    qkv = torch.randn(t, (n_head + 2 * n_kv) * hd, generator=gen)
    b = torch.randn((n_head + 2 * n_kv) * hd, generator=gen) if bias else torch.zeros(qkv.shape[-1])
    positions = torch.randperm(16, generator=gen)[:t]
    x = (qkv + b).double()
    q = _rope64(x[:, : n_head * hd].unflatten(-1, (n_head, hd)), positions, rope_dim, style)
    k = _rope64(x[:, n_head * hd : (n_head + n_kv) * hd].unflatten(-1, (n_kv, hd)), positions, rope_dim, style)
    v = x[:, (n_head + n_kv) * hd :].unflatten(-1, (n_kv, hd))
    q_flat, kc, vc = got["torch-False"]
    assert torch.allclose(q_flat.double(), q, atol=1e-5)
    assert torch.allclose(kc[:, positions].transpose(0, 1).double(), k, atol=1e-5)
    assert torch.allclose(vc[:, positions].transpose(0, 1).double(), v, atol=1e-6)
    untouched = torch.ones(16, dtype=torch.bool)
    untouched[positions] = False
    assert (kc[:, untouched] == 0).all()
    g = n_head // n_kv
    grouped = got["torch-True"][0]  # [KVH, G*T, hd]: row j*T + t of block kv is head kv*G + j at token t
    assert torch.equal(grouped.reshape(n_kv, g, t, hd).permute(2, 0, 1, 3).reshape(t, n_head, hd), q_flat)


@pytest.mark.parametrize("case", ATTN_CASES)
def test_decode_attention_matches_float64_softmax(case: tuple) -> None:
    q, kc, vc, pos, span, scale, ref = attention_case(case, "cpu", torch.float32)
    got = ops.decode_attention(q, kc, vc, pos, span, scale)
    assert got.shape == (1, q.numel())
    assert torch.allclose(got.reshape(ref.shape).double(), ref, atol=1e-5)


def test_rms_norm_matches_float64() -> None:
    x = torch.randn(4, 300, dtype=torch.float64) * 3
    w = 1 + 0.1 * torch.randn(300, dtype=torch.float64)
    ref = w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)
    assert torch.allclose(ops.rms_norm(x.float(), w.float(), 1e-5).double(), ref, atol=1e-5)
    h = x.float().clone()
    y = torch.randn(4, 300)
    out = ops.add_rms_norm(h, y, w.float(), 1e-5)
    assert torch.allclose(h, x.float() + y)
    assert torch.allclose(out.double(), ops.rms_norm(x.float() + y, w.float(), 1e-5).double())


def _check(errors: dict[str, float]) -> None:
    assert errors, "no cases ran"
    bad = {k: v for k, v in errors.items() if not v <= _TOL[k.split("torch.")[1].split("-")[0]]}
    assert not bad


def test_triton_kernels_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(here.parents[1] / "src")}
    proc = subprocess.run([sys.executable, str(here / "ops_cases.py"), "cpu"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.cuda
def test_triton_kernels_on_cuda() -> None:
    from .ops_cases import run_cases

    _check(run_cases("cuda"))
