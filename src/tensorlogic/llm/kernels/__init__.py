"""Matmuls that read GGUF weights as stored: fused dequantize-matmul Triton kernels on CUDA, a CPU path.

A ``QWeight`` holds one [out_features, in_features] matrix in its GGUF encoding on a device (quantized
types as their raw block bytes, one row of blocks per output feature; on CUDA with Triton the same
bytes in the kernels' device layout, ``triton_gguf.pack``). ``qmatmul(x, w)`` computes
``x @ W.T`` with float32 accumulation, and never materializes the whole matrix in float16:

- CUDA, Triton installed, a type of ``FUSED_TYPES``: Triton kernels (``triton_gguf``) that dequantize
  inside the matmul; up to 8 rows of ``x`` (decode) take a GEMV kernel, up to 64 a fused GEMM, more
  rows (prefill) dequantize into a reused scratch buffer for cuBLAS. No host sync and no allocation
  that depends on data, so decode steps can be captured in a CUDA graph (after one call has compiled
  the kernels; set ``TL_NO_TRITON=1`` to use the generic path instead).
- F16/BF16/F32 weights: torch matmul.
- CPU, or any other type: dequantize a chunk of rows at a time and multiply.

Triton is imported only when a CUDA tensor needs it, so CPU-only installs need no Triton.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import torch

from ...errors import FormatError, OpError, TensorLogicError, UnsupportedError
from ...formats import gguf_quants
from ...formats.gguf_quants_torch import dequantize_torch
from . import cpu

__all__ = [
    "FUSED_TYPES", "FLOAT_TYPES", "QWeight", "qmatmul", "qmatmul_silu_mul", "qembedding", "dequantize_cuda",
]

# Types the Triton kernels dequantize inside the matmul (and dequantize_cuda expands).
FUSED_TYPES = ("Q4_0", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
FLOAT_TYPES: dict[str, torch.dtype] = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
_X_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Weight elements one chunk dequantizes on the generic (non-Triton) CUDA path: 32 MiB of float16.
_GENERIC_CHUNK_ELEMENTS = 1 << 24


class QWeight:
    """One [out_features, in_features] matrix in GGUF storage on a device.

    ``raw`` is uint8 [out, row_bytes] for block types (each row is in/block_size blocks, as in the
    file), or a float16/bfloat16/float32 [out, in] tensor for F16/BF16/F32. ``name`` only labels errors.
    A block type on a CUDA device with Triton is stored in the Triton kernels' device layout instead
    (``packed``: the same bytes, each row's quants, scales and f16 fields in 16-byte-aligned planes);
    ``gguf_bytes()`` gives the GGUF rows back.
    """

    __slots__ = ("qtype", "shape", "raw", "name", "packed", "_int4")

    def __init__(self, qtype: str, shape: Sequence[int], raw: torch.Tensor, name: str | None = None):
        self.name = name
        label = f"weight {name!r}" if name else "weight"
        if qtype not in gguf_quants.TYPE_INFO or qtype in gguf_quants.NOT_DEQUANTIZABLE:
            raise UnsupportedError(f"{label}: GGUF type {qtype!r} cannot be used for a matmul")
        if len(shape) != 2 or any(int(d) <= 0 for d in shape):
            raise FormatError(f"{label}: a {qtype} matmul weight needs a 2-D shape [out, in], got {tuple(shape)}")
        out_f, in_f = int(shape[0]), int(shape[1])
        block, block_bytes = gguf_quants.TYPE_INFO[qtype]
        if in_f % block:
            raise FormatError(f"{label}: in_features {in_f} is not a multiple of the {qtype} block size {block}")
        if qtype in FLOAT_TYPES:
            want_dtype, want_shape = FLOAT_TYPES[qtype], (out_f, in_f)
        elif block == 1:
            raise UnsupportedError(f"{label}: GGUF type {qtype} is not a floating-point or quantized type")
        else:
            want_dtype, want_shape = torch.uint8, (out_f, in_f // block * block_bytes)
        if raw.dtype != want_dtype or tuple(raw.shape) != want_shape:
            raise FormatError(
                f"{label}: {qtype} [{out_f}, {in_f}] needs raw {str(want_dtype).removeprefix('torch.')} "
                f"{list(want_shape)}, got {str(raw.dtype).removeprefix('torch.')} {list(raw.shape)}"
            )
        self.qtype = qtype
        self.shape = (out_f, in_f)
        self.raw = raw.contiguous()
        self._int4 = None  # the CPU int4 matmul's copy (kernels.cpu.int4_weight), built when first needed
        self.packed = qtype in FUSED_TYPES and use_triton(raw)
        if self.packed:
            from . import triton_gguf

            self.raw = triton_gguf.pack(self.raw, qtype)

    @classmethod
    def _stored(cls, qtype: str, shape: tuple[int, int], raw: torch.Tensor, name: str | None, packed: bool) -> QWeight:
        """A QWeight around bytes already in its storage layout (no checks, no repacking)."""
        w = cls.__new__(cls)
        w.qtype, w.shape, w.raw, w.name, w.packed, w._int4 = qtype, shape, raw, name, packed, None
        return w

    def gguf_bytes(self) -> torch.Tensor:
        """``raw`` in GGUF row order (the stored tensor itself unless it is in the device layout)."""
        if not self.packed:
            return self.raw
        from . import triton_gguf

        return triton_gguf.unpack(self.raw, self.qtype, self.shape[1])

    @classmethod
    def from_gguf(cls, gguf: Any, name: str, device: torch.device | str = "cpu") -> QWeight:
        """The 2-D tensor ``name`` of a ``GGUFFile``, its bytes moved to ``device`` as stored."""
        part, t = gguf._find(name)
        info = t.info
        if len(info.shape) != 2:
            raise FormatError(f"tensor {name!r} has shape {list(info.shape)}; a matmul weight is 2-D", part.path)
        if info.dtype in ("F16", "F32"):
            raw = torch.from_numpy(gguf.read_numpy(name))
        elif info.dtype == "BF16":
            raw = gguf.read_torch(name)
        elif gguf_quants.TYPE_INFO.get(info.dtype, (1, 0))[0] == 1:
            raise UnsupportedError(f"{part.path}: tensor {name!r}: GGUF type {info.dtype} cannot be a matmul weight")
        else:
            raw = torch.from_numpy(gguf._little_endian_raw(part, t)).reshape(info.shape[0], -1)
        try:
            return cls(info.dtype, info.shape, raw.to(device), name=name)
        except FormatError as e:
            raise FormatError(e.message, part.path, info.offset) from None
        except UnsupportedError as e:
            raise UnsupportedError(f"{part.path}: {e}") from None

    @staticmethod
    def cat(ws: Sequence[QWeight]) -> QWeight:
        """The rows of several same-type, same-in_features weights stacked (fused QKV, gate+up)."""
        if not ws:
            raise TensorLogicError("QWeight.cat needs at least one weight")
        first = ws[0]
        for w in ws[1:]:
            if w.qtype != first.qtype or w.shape[1] != first.shape[1] or w.raw.device != first.raw.device:
                raise UnsupportedError(
                    f"QWeight.cat: {_label(w)} is {w.qtype} [{w.shape[0]}, {w.shape[1]}] on {w.raw.device}, "
                    f"{_label(first)} is {first.qtype} [{first.shape[0]}, {first.shape[1]}] on {first.raw.device}"
                )
        name = "+".join(w.name for w in ws if w.name) or None
        rows = sum(w.shape[0] for w in ws)
        if all(w.packed for w in ws):  # rows of the device layout stack as GGUF rows do
            return QWeight._stored(first.qtype, (rows, first.shape[1]), torch.cat([w.raw for w in ws]), name, True)
        return QWeight(first.qtype, (rows, first.shape[1]), torch.cat([w.gguf_bytes() for w in ws]), name=name)

    @property
    def nbytes(self) -> int:
        return self.raw.numel() * self.raw.element_size()

    @property
    def device(self) -> torch.device:
        return self.raw.device

    def to(self, device: torch.device | str) -> QWeight:
        return QWeight(self.qtype, self.shape, self.gguf_bytes().to(device), name=self.name)

    def dequantize(self, dtype: torch.dtype = torch.float16) -> torch.Tensor:
        """The whole matrix in ``dtype`` (for tests and small tensors)."""
        if self.qtype in FLOAT_TYPES:
            return self.raw.to(dtype)
        if self.raw.device.type == "cpu":
            return cpu.rows_float32(self, 0, self.shape[0]).to(dtype)
        if self.packed:
            return _dequantize_packed(self.raw, self.qtype, self.shape, dtype)
        return _dequantize_generic(self.raw, self.qtype, self.shape, dtype)

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return f"QWeight({name}{self.qtype}, {list(self.shape)}, {self.raw.device}, {self.nbytes:,} bytes)"


def _label(w: QWeight) -> str:
    return f"weight {w.name!r}" if w.name else "weight"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@functools.cache
def _have_triton() -> bool:
    return importlib.util.find_spec("triton") is not None and os.environ.get("TL_NO_TRITON", "") in ("", "0")


def use_triton(t: torch.Tensor) -> bool:
    """Whether work on ``t`` goes to the Triton kernels (a CUDA tensor, Triton installed, TL_NO_TRITON unset)."""
    return t.device.type == "cuda" and _have_triton()


def _prepare(
    op: str, x: torch.Tensor, w: QWeight, in_features: int, out: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check ``x`` against ``w``; return (x as [rows, in] contiguous, out as given or new, out as [rows, n])."""
    if not isinstance(w, QWeight):
        raise OpError(f"expected a QWeight, got {type(w).__name__}", op=op)
    if x.dtype not in _X_DTYPES:
        raise OpError(f"x must be float16, bfloat16 or float32, got {_dtype_name(x.dtype)}", op=op)
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise OpError(
            f"x has {x.shape[-1] if x.dim() else 0} features, {_label(w)} [{w.shape[0]}, {w.shape[1]}] needs "
            f"{in_features}", op=op, inputs=f"x {list(x.shape)}",
        )
    if x.device != w.raw.device:
        raise OpError(f"x is on {x.device}, {_label(w)} on {w.raw.device}", op=op)
    shape = (*x.shape[:-1], w.shape[0])
    if out is None:
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
    elif tuple(out.shape) != shape or out.dtype != x.dtype or out.device != x.device or not out.is_contiguous():
        raise OpError(
            f"out must be a contiguous {_dtype_name(x.dtype)} {list(shape)} tensor on {x.device}, got "
            f"{_dtype_name(out.dtype)} {list(out.shape)} on {out.device}", op=op,
        )
    return x.reshape(-1, in_features).contiguous(), out, out.view(-1, w.shape[0])


def qmatmul(x: torch.Tensor, w: QWeight, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T``: x [..., in] (float16/bfloat16/float32) -> [..., out] in x.dtype, float32 accumulation."""
    x2, out, out2 = _prepare("qmatmul", x, w, w.shape[1], out)
    if x2.shape[0] == 0:
        return out
    if x2.device.type == "cpu":
        cpu.qmatmul(x2, w, out2)
    elif w.qtype in FLOAT_TYPES:
        _float_matmul(x2, w, out2)
    elif w.packed:
        from . import triton_gguf

        triton_gguf.qmatmul(x2, w.raw, w.qtype, w.shape, out2)
    else:
        _generic_matmul(x2, w, out2)
    return out


def qmatmul_silu_mul(x: torch.Tensor, w: QWeight) -> torch.Tensor:
    """``(silu(gate) * up) @ W.T`` for x [..., 2*in] = [gate | up] (the FFN down projection)."""
    x2, out, out2 = _prepare("qmatmul_silu_mul", x, w, 2 * w.shape[1], None)
    if x2.shape[0] == 0:
        return out
    if w.packed:
        from . import triton_gguf

        if x2.shape[0] <= triton_gguf.GEMV_MAX_ROWS:
            triton_gguf.qmatmul(x2, w.raw, w.qtype, w.shape, out2, silu_mul=True)
            return out
    from ..ops import silu_mul

    qmatmul(silu_mul(x2), w, out=out2)
    return out


def qembedding(w: QWeight, ids: torch.Tensor, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Rows of W for token ids: ids [...] (integers) -> [..., in] in ``dtype``.

    ids on the CPU are range-checked; on CUDA they are not (that would need a host sync).
    """
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise OpError(f"token ids must be integers, got {_dtype_name(ids.dtype)}", op="qembedding")
    if ids.device != w.raw.device:
        raise OpError(f"ids are on {ids.device}, {_label(w)} on {w.raw.device}", op="qembedding")
    if ids.device.type == "cpu" and ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= w.shape[0]:
            bad = lo if lo < 0 else hi
            raise OpError(f"token id {bad} is outside [0, {w.shape[0]}) of {_label(w)}", op="qembedding")
    if ids.device.type == "cpu":
        return cpu.embedding(w, ids, dtype)
    flat = ids.reshape(-1)
    rows = w.raw.index_select(0, flat)
    if w.qtype in FLOAT_TYPES:
        values = rows.to(dtype)
    elif w.packed:
        values = _dequantize_packed(rows, w.qtype, (flat.numel(), w.shape[1]), dtype)
    else:
        values = _dequantize_generic(rows, w.qtype, (flat.numel(), w.shape[1]), dtype)
    return values.reshape(*ids.shape, w.shape[1])


def dequantize_cuda(
    raw: torch.Tensor,
    qtype: str,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float16,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton dequantization of GGUF bytes (Q4_0, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) on raw's CUDA device."""
    if qtype not in FUSED_TYPES:
        raise UnsupportedError(f"dequantize_cuda handles {', '.join(FUSED_TYPES)}, not {qtype!r}")
    if dtype not in _X_DTYPES:
        raise UnsupportedError(f"dequantize_cuda writes float16, bfloat16 or float32, not {_dtype_name(dtype)}")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if raw.device.type != "cuda" and not interpreted:
        raise UnsupportedError(f"dequantize_cuda needs a CUDA tensor, got one on {raw.device}")
    if not _have_triton():
        raise UnsupportedError("dequantize_cuda needs Triton, which is not installed")
    if raw.dtype != torch.uint8:
        raise FormatError(f"{qtype} bytes must be a uint8 tensor, got {_dtype_name(raw.dtype)}")
    _, dims, _ = gguf_quants.check(raw.numel(), qtype, shape)
    if out is None:
        out = torch.empty(dims, dtype=dtype, device=raw.device)
    elif tuple(out.shape) != dims or out.dtype != dtype or out.device != raw.device or not out.is_contiguous():
        raise OpError(
            f"out must be a contiguous {_dtype_name(dtype)} {list(dims)} tensor on {raw.device}, got "
            f"{_dtype_name(out.dtype)} {list(out.shape)} on {out.device}", op="dequantize_cuda",
        )
    from . import triton_gguf

    block, block_bytes = gguf_quants.TYPE_INFO[qtype]
    cols = dims[-1] if dims else 1
    packed = triton_gguf.pack(raw.reshape(-1, cols // block * block_bytes), qtype)
    triton_gguf.dequantize(packed, qtype, out.view(-1, cols))
    return out


def _dequantize_packed(packed: torch.Tensor, qtype: str, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """Rows in the device layout as a ``dtype`` matrix (float32 for a dtype the kernels do not write)."""
    from . import triton_gguf

    out = torch.empty(shape, dtype=dtype if dtype in _X_DTYPES else torch.float32, device=packed.device)
    return triton_gguf.dequantize(packed, qtype, out)


def _float_matmul(x2: torch.Tensor, w: QWeight, out2: torch.Tensor) -> None:
    # Compute in the weight's dtype (the tensor-core path for F16/BF16); only F32 weights lift x to float32.
    wt = w.raw
    xc = x2.float() if wt.dtype == torch.float32 else x2.to(wt.dtype)
    if xc.dtype == out2.dtype:
        torch.matmul(xc, wt.T, out=out2)
    else:
        out2.copy_(torch.matmul(xc, wt.T))


def _dequantize_generic(raw: torch.Tensor, qtype: str, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    return dequantize_torch(raw.reshape(-1), qtype, shape, dtype=dtype if dtype in _X_DTYPES else torch.float32)


def _generic_matmul(x2: torch.Tensor, w: QWeight, out2: torch.Tensor) -> None:
    """Types without a Triton kernel (or no Triton): dequantize_torch a chunk of rows, then torch matmul."""
    k = w.shape[1]
    step = max(1, _GENERIC_CHUNK_ELEMENTS // k)
    for start in range(0, w.shape[0], step):
        stop = min(start + step, w.shape[0])
        rows = _dequantize_generic(w.raw[start:stop], w.qtype, (stop - start, k), x2.dtype)
        out2[:, start:stop] = torch.matmul(x2, rows.T)
