"""MIL dtypes on torch: storage types, the precision policy, and numpy ↔ torch conversion.

The precision policy decides what a declared dtype computes as:

- ``"auto"``: as declared on CUDA and MPS. On CPU half types (fp16, bf16) compute as float32 without
  rounding, as Core ML's CPU path does: faster there and more exact. An explicit ``cast`` to a half type
  still rounds to it (the program asks for that conversion).
- ``"fp32"``: half types compute as float32 everywhere, without any rounding (the most exact).
- ``"fp16"``: fp16 always computes as float16, even on CPU (for overflow studies).
- ``"fp16-storage"``: as ``auto``, but on CPU each value the program declares as a half type is rounded
  to it once made: fp16 storage with fp32 arithmetic, what the GPU path does, so CPU results track GPU
  results (slower: one rounding pass per op).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import TensorLogicError

POLICIES = ("auto", "fp32", "fp16", "fp16-storage")

# torch has no unsigned types beyond uint8 that its kernels support broadly, so wider unsigned
# types widen to the next signed type that holds every value; sub-byte ints widen to one byte.
TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
    "fp64": torch.float64,
    "fp8e4m3fn": torch.float32,
    "fp8e5m2": torch.float32,
    "int4": torch.int8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint1": torch.uint8,
    "uint2": torch.uint8,
    "uint3": torch.uint8,
    "uint4": torch.uint8,
    "uint6": torch.uint8,
    "uint8": torch.uint8,
    "uint16": torch.int32,
    "uint32": torch.int64,
    "uint64": torch.int64,
    "bool": torch.bool,
}

# numpy type of each MIL dtype at the model's boundary (predict inputs and outputs).
NUMPY_DTYPES: dict[str, Any] = {
    "fp16": np.float16,
    "bf16": np.float32,
    "fp32": np.float32,
    "fp64": np.float64,
    "fp8e4m3fn": np.float32,
    "fp8e5m2": np.float32,
    "int4": np.int8,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint1": np.uint8,
    "uint2": np.uint8,
    "uint3": np.uint8,
    "uint4": np.uint8,
    "uint6": np.uint8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
}

_HALF = ("fp16", "bf16")


def torch_dtype(mil_dtype: str) -> torch.dtype:
    """The torch storage dtype for a MIL dtype name."""
    try:
        return TORCH_DTYPES[mil_dtype]
    except KeyError:
        raise TensorLogicError(f"MIL dtype {mil_dtype!r} has no tensor representation") from None


def device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def compute_dtype(mil_dtype: str, policy: str = "auto", device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype a value declared as ``mil_dtype`` computes in under ``policy`` on ``device``."""
    if policy not in POLICIES:
        raise TensorLogicError(f"unknown precision policy {policy!r} (use one of {', '.join(POLICIES)})")
    storage = torch_dtype(mil_dtype)
    if mil_dtype not in _HALF:
        return storage
    if policy == "fp32":
        return torch.float32
    if policy == "fp16":
        return torch.float16 if mil_dtype == "fp16" else torch.bfloat16
    return torch.float32 if device_type(device) == "cpu" else storage


def storage_rounding(
    mil_dtype: str, policy: str = "auto", device: str | torch.device = "cpu", explicit: bool = False
) -> torch.dtype | None:
    """The half type that values computed wider than declared are rounded through, else None.
    ``explicit``: the value comes from a conversion the program asks for (``cast``)."""
    if mil_dtype not in _HALF or not (policy == "fp16-storage" or (explicit and policy == "auto")):
        return None
    storage = torch_dtype(mil_dtype)
    return storage if compute_dtype(mil_dtype, policy, device) != storage else None


def numpy_dtype(mil_dtype: str) -> Any:
    """The numpy dtype a MIL dtype has at the model boundary."""
    try:
        return NUMPY_DTYPES[mil_dtype]
    except KeyError:
        raise TensorLogicError(f"MIL dtype {mil_dtype!r} has no numpy representation") from None


def to_torch(array: Any, dtype: torch.dtype, device: str | torch.device = "cpu") -> torch.Tensor:
    """A numpy array (or scalar) as a torch tensor of ``dtype`` on ``device``."""
    arr = np.asarray(array)
    if arr.dtype == np.uint16:
        arr = arr.astype(np.int32)
    elif arr.dtype in (np.uint32, np.uint64):
        arr = arr.astype(np.int64)
    # torch.from_numpy needs non-negative strides and warns on read-only (memory-mapped) arrays.
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).to(device=device, dtype=dtype)


def to_numpy(tensor: torch.Tensor, mil_dtype: str | None = None) -> np.ndarray:
    """A torch tensor as numpy, in the boundary numpy type of ``mil_dtype`` when one is given."""
    t = tensor.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    arr = t.cpu().numpy()
    if mil_dtype is not None:
        want = numpy_dtype(mil_dtype)
        if arr.dtype != want:
            arr = arr.astype(want)
    return arr
