"""CPU path: dequantize a few rows of the weight at a time and multiply in float32.

Only one chunk of float32 rows (``CHUNK_ELEMENTS``) exists at a time, so a large quantized matrix is
never expanded whole. The numpy dequantizers of ``formats.gguf_quants`` are bit-exact with gguf-py and
faster on the CPU than the torch ones.

bfloat16 activations on Q4_0/Q4_K weights take torch's int4 CPU matmul instead (``INT4_TYPES``): both
types are 4-bit values with one scale and offset per 32 weights, which is that kernel's format, and it
multiplies ~15x faster than dequantizing chunks (11264x2048, one row, 2 cores: 3.4 ms against 52 ms).
The repacked weight is built at the first such matmul and kept beside the GGUF bytes (a second copy,
1.1x their size); its scales and offsets are bfloat16, so the weights are rounded as bfloat16 operands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ...formats import gguf_quants

if TYPE_CHECKING:
    from . import QWeight

# Float32 weight elements dequantized per chunk (4 MiB): big enough for an efficient matmul, small
# enough to stay in cache next to the activations.
CHUNK_ELEMENTS = 1 << 20


def rows_float32(w: QWeight, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``w`` as a float32 [stop - start, in] tensor on the CPU."""
    raw = w.raw[start:stop]
    if raw.dtype != torch.uint8:
        return raw.float()
    values = gguf_quants.dequantize(np.ascontiguousarray(raw.numpy()), w.qtype, (stop - start, w.shape[1]))
    return torch.from_numpy(values)


INT4_TYPES = ("Q4_0", "Q4_K")
_INT4_GROUP = 32


def _have_int4_matmul() -> bool:
    return hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(torch, "_convert_weight_to_int4pack_for_cpu")


def int4_weight(w: QWeight) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` (Q4_0/Q4_K on the CPU) in torch's int4 matmul format: (packed uint8, bfloat16 [k / 32, n, 2]
    scales and offsets), built once and kept on ``w``."""
    if w._int4 is None:
        n, k = w.shape
        q, scale, offset = gguf_quants.int4_fields(w.raw.numpy(), w.qtype, n, k)
        packed = torch._convert_weight_to_int4pack_for_cpu(torch.from_numpy(q).to(torch.int32), 1)
        fields = torch.from_numpy(np.stack([scale.T, offset.T], axis=-1)).to(torch.bfloat16).contiguous()
        w._int4 = packed, fields
    return w._int4


def chunk_rows(in_features: int) -> int:
    """Weight rows per chunk for rows of ``in_features`` elements."""
    return max(1, CHUNK_ELEMENTS // max(in_features, 1))


def qmatmul(x2: torch.Tensor, w: QWeight, out2: torch.Tensor) -> torch.Tensor:
    """``out2 = x2 @ W.T`` for x2 [rows, in] on the CPU, accumulated in float32, written in out2's dtype."""
    if w.raw.dtype in (torch.float16, torch.bfloat16) and x2.dtype == w.raw.dtype:
        # Half activations on half weights: one oneDNN matmul on the stored weights (float32 accumulation, the
        # output rounded to x's type as every path rounds it), 10-15x faster than casting chunks to float32.
        torch.matmul(x2, w.raw.T, out=out2)
        return out2
    if x2.dtype == torch.bfloat16 and w.qtype in INT4_TYPES and _have_int4_matmul():
        packed, fields = int4_weight(w)
        out2.copy_(torch._weight_int4pack_mm_for_cpu(x2, packed, _INT4_GROUP, fields))
        return out2
    x32 = x2.float()
    if w.qtype == "F32":
        out2.copy_(x32 @ w.raw.T)
        return out2
    step = chunk_rows(w.shape[1])
    for start in range(0, w.shape[0], step):
        stop = min(start + step, w.shape[0])
        out2[:, start:stop] = x32 @ rows_float32(w, start, stop).T
    return out2


def embedding(w: QWeight, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Rows ``ids`` of ``w`` (ids already checked to be in range), dequantized to ``dtype``."""
    flat = ids.reshape(-1).long()
    raw = w.raw[flat]
    if raw.dtype != torch.uint8:
        return raw.to(dtype).reshape(*ids.shape, w.shape[1])
    values = gguf_quants.dequantize(raw.numpy(), w.qtype, (flat.numel(), w.shape[1]))
    return torch.from_numpy(values).to(dtype).reshape(*ids.shape, w.shape[1])
