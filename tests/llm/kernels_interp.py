"""Runs the Triton kernels under Triton's CPU interpreter and prints one JSON line of results.

``TRITON_INTERPRET=1`` must be set before Triton decorates the kernels, so test_kernels.py runs this
file in a subprocess with that variable. Each case maps to its excess over the derived error bound
(<= 0: within it; see ``kernels_data.error_bound``) or to the error it raised. Shapes are small (the
interpreter is slow) but chosen so every kernel masks a partial row tile and a partial K step, and
loops over more than one K step. Output is float32 or float16: the interpreter converts float32 to
bfloat16 by truncation, not rounding as GPUs do, so bfloat16 is left to the CUDA tests.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from kernels_data import EPS, EPS32, excess, make_raw, reference_matrix  # noqa: E402

# The types of triton_gguf.BLOCKS; listed here so that test collection never imports Triton.
TYPES = ("Q4_0", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def _shape(qtype: str) -> tuple[int, int]:
    return (13, 32 * 5) if qtype.endswith("_0") else (13, 256 * 3)


def _weight(qtype: str, seed: int):
    n, k = _shape(qtype)
    raw = make_raw(qtype, n, k, seed)
    return torch.from_numpy(raw), reference_matrix(raw, qtype, n, k), n, k


def dequant_case(qtype: str, dtype: torch.dtype) -> float:
    from tensorlogic.llm.kernels import dequantize_cuda

    raw, w64, n, k = _weight(qtype, 1)
    got = dequantize_cuda(raw, qtype, (n, k), dtype).double().numpy()
    # One rounding of gguf-py's float32 value (an fma may save one float32 rounding on a GPU).
    return float((abs(got - w64) - (EPS[dtype] + EPS32) * abs(w64)).max())


def matmul_case(qtype: str, path: str, m: int, dtype: torch.dtype, silu_mul: bool = False,
                flipped: bool = False) -> float:
    """``flipped``: the GEMV with 2-row tiles and X_FULL the other way round from ``gemv_config``'s choice."""
    from tensorlogic.llm.kernels import triton_gguf

    raw, w64, n, k = _weight(qtype, 2)
    x = torch.randn(m, 2 * k if silu_mul else k, generator=torch.Generator().manual_seed(3)).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    config = None
    if flipped:
        block_m, _, g, warps, x_full = triton_gguf.gemv_config(qtype, m, n, k)
        config = (block_m, 2, g, warps, not x_full)
    triton_gguf.qmatmul(x, triton_gguf.pack(raw, qtype), qtype, (n, k), out, silu_mul=silu_mul, path=path,
                        config=config)
    operand_eps = EPS[dtype] if path == "gemm" and dtype != torch.float32 else 0.0
    if silu_mul:
        g, u = x[:, :k].double(), x[:, k:].double()
        x = g / (1 + torch.exp(-g)) * u
        operand_eps = 8 * EPS32  # silu computed in float32
    return excess(out, x, w64, operand_eps)


def pack_case(qtype: str) -> float:
    """0 when the device layout has 16-byte rows and unpacks to the same GGUF bytes, else 1."""
    from tensorlogic.llm.kernels import triton_gguf

    raw, _, n, k = _weight(qtype, 4)
    packed = triton_gguf.pack(raw, qtype)
    same = packed.shape == (n, triton_gguf.packed_row_bytes(qtype, k)) and packed.shape[1] % 16 == 0
    return 0.0 if same and torch.equal(triton_gguf.unpack(packed, qtype, k), raw) else 1.0


def cases() -> dict[str, Callable[[], float]]:
    f32, f16 = torch.float32, torch.float16
    found: dict[str, Callable[[], float]] = {}
    for q in TYPES:
        found[f"pack-{q}"] = functools.partial(pack_case, q)
        found[f"dequant-{q}-float32"] = functools.partial(dequant_case, q, f32)
        found[f"gemv-{q}-m1-float32"] = functools.partial(matmul_case, q, "gemv", 1, f32)
        found[f"gemv-{q}-m3-float16"] = functools.partial(matmul_case, q, "gemv", 3, f16)
        found[f"gemv-flipped-{q}-m3-float16"] = functools.partial(matmul_case, q, "gemv", 3, f16, flipped=True)
        found[f"gemm-{q}-m20-float16"] = functools.partial(matmul_case, q, "gemm", 20, f16)
    for q in ("Q4_0", "Q6_K"):
        found[f"dequant-{q}-float16"] = functools.partial(dequant_case, q, f16)
        found[f"cublas-{q}-m20-float32"] = functools.partial(matmul_case, q, "cublas", 20, f32)
    for q in ("Q4_0", "Q4_K", "Q5_K", "Q6_K"):
        found[f"silu-{q}-m2-float32"] = functools.partial(matmul_case, q, "gemv", 2, f32, True)
    found["gemm-Q4_K-m20-float32"] = functools.partial(matmul_case, "Q4_K", "gemm", 20, f32)
    found["gemv-Q5_K-m8-float32"] = functools.partial(matmul_case, "Q5_K", "gemv", 8, f32)
    found["silu-flipped-Q4_0-m1-float32"] = functools.partial(matmul_case, "Q4_0", "gemv", 1, f32, True, True)
    return found


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run with TRITON_INTERPRET=1")
    from tensorlogic.llm.kernels import triton_gguf

    # Small tiles so that these small shapes still loop over several K steps and row tiles.
    triton_gguf._GEMV_K_STEP = 256
    triton_gguf._DEQUANT_ROW_ELEMENTS = 64
    triton_gguf.SCRATCH_ELEMENTS = 5 * 768
    results: dict[str, dict[str, object]] = {}
    for name, run in cases().items():
        try:
            results[name] = {"excess": run()}
        except Exception:  # reported to the test, which fails on it
            results[name] = {"error": traceback.format_exc(limit=4)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
