"""Test weights for the kernel tests, and their reference values from gguf-py.

Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 come from gguf-py's quantizer. The K-quants are random bytes whose f16
super-block scale fields are overwritten with small finite values, so every dequantized value is
finite and every bit pattern of the packed quants and sub-block scales gets exercised.
"""

from __future__ import annotations

import gguf
import numpy as np
import torch

GT = {t.name: t for t in gguf.GGMLQuantizationType}
KQUANT_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
# Byte offsets of the f16 scale fields of each K-quant block (ggml-common.h block_q*_K).
_KQUANT_F16 = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
_KQUANT_BYTES = {"Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
_FLOAT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
EPS = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}
EPS32 = 2.0**-24


def error_bound(x64: np.ndarray, w64: np.ndarray, out_dtype: torch.dtype, operand_eps: float = 0.0) -> np.ndarray:
    """Largest error a correct float32-accumulated x @ W.T may show, element by element.

    Summing K float32 products errs by at most K * eps32 * sum|x||w|; each operand rounded to a narrower
    dtype before the dot (``operand_eps``: its unit roundoff) adds eps * sum|x||w|; rounding the result
    to ``out_dtype`` adds eps(out) * |y|.
    """
    k = x64.shape[-1]
    spread = np.abs(x64) @ np.abs(w64).T
    return (k * EPS32 + 2 * operand_eps) * spread + EPS[out_dtype] * np.abs(x64 @ w64.T) + 1e-30


def excess(y: torch.Tensor, x: torch.Tensor, w64: np.ndarray, operand_eps: float = 0.0) -> float:
    """How far y's worst element lies outside ``error_bound`` of float64 x @ W.T (<= 0: within)."""
    x64 = x.double().cpu().numpy().reshape(-1, x.shape[-1])
    ref = x64 @ w64.T
    got = y.double().cpu().numpy().reshape(ref.shape)
    return float(np.max(np.abs(got - ref) - error_bound(x64, w64, y.dtype, operand_eps)))


def make_raw(qtype: str, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Stored data of a [rows, cols] weight: float values for float types, else uint8 [rows, row_bytes]."""
    rng = np.random.default_rng(seed)
    if qtype in _FLOAT:
        values = rng.standard_normal((rows, cols)).astype(np.float32)
        return torch.from_numpy(values).to(_FLOAT[qtype]).float().numpy() if qtype == "BF16" else values.astype(
            np.float16 if qtype == "F16" else np.float32
        )
    if qtype in _KQUANT_F16:
        blocks = rows * cols // 256
        raw = rng.integers(0, 256, (blocks, _KQUANT_BYTES[qtype]), dtype=np.uint8)
        for at in _KQUANT_F16[qtype]:
            scale = rng.uniform(0.002, 0.02, blocks) * rng.choice([-1.0, 1.0], blocks)
            raw[:, at : at + 2] = scale.astype("<f2").view(np.uint8).reshape(blocks, 2)
        return raw.reshape(rows, -1)
    values = rng.standard_normal((rows, cols)).astype(np.float32)
    return gguf.quants.quantize(values, GT[qtype])


def reference_matrix(raw: np.ndarray, qtype: str, rows: int, cols: int) -> np.ndarray:
    """gguf-py's float values of the stored weight, as float64 [rows, cols]."""
    if qtype in _FLOAT:
        return raw.astype(np.float64)
    return gguf.quants.dequantize(raw, GT[qtype]).astype(np.float64).reshape(rows, cols)


def raw_tensor(raw: np.ndarray, qtype: str) -> torch.Tensor:
    """``make_raw``'s data as the tensor a QWeight holds."""
    t = torch.from_numpy(np.ascontiguousarray(raw))
    return t.to(_FLOAT[qtype]) if qtype in _FLOAT else t
