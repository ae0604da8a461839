"""``WeightParams`` to numpy: float32 and float16 values as stored, quantized values dequantized once at load."""

from __future__ import annotations

from typing import Any

import numpy as np


class WeightError(ValueError):
    """A WeightParams message does not hold what its layer says it should."""


def is_fp16(wp: Any) -> bool:
    return bool(wp.float16Value)


def weight_values(wp: Any, count: int | None, shape: tuple[int, ...] | None = None, axis: int = 0) -> np.ndarray:
    """The ``count`` values of ``wp`` (all of them when None), shaped to ``shape`` when given.

    Linear quantization scales and biases apply per slice along ``axis`` of ``shape`` when they have
    one entry per slice (output channels; axis 1 for deconvolution weights), else to every value.
    """
    if shape is not None and count is None:
        count = int(np.prod(shape, dtype=np.int64))
    if len(wp.floatValue):
        values = np.asarray(wp.floatValue, dtype=np.float32)
    elif wp.float16Value:
        if len(wp.float16Value) % 2:
            raise WeightError(f"float16Value has an odd byte count ({len(wp.float16Value)})")
        values = np.frombuffer(wp.float16Value, dtype="<f2").astype(np.float16)
    elif wp.int8RawValue or wp.rawValue:
        values = _dequantize(wp, count, shape, axis)
    else:
        values = np.zeros(0, dtype=np.float32)
    if count is not None and values.size != count:
        raise WeightError(f"holds {values.size} values, the layer needs {count}")
    return values.reshape(shape) if shape is not None else values


def _codes(raw: bytes, count: int, nbits: int, signed: bool) -> np.ndarray:
    data = np.frombuffer(raw, dtype=np.uint8)
    if signed:
        return data.view(np.int8)[:count].astype(np.float32)
    if nbits == 8:
        return data[:count].astype(np.float32)
    # Sub-byte codes are packed most significant bit first (coremltools' quantization_utils).
    bits = np.unpackbits(data)[: count * nbits].reshape(count, nbits)
    place = np.left_shift(1, np.arange(nbits - 1, -1, -1)).astype(np.float32)
    return bits.astype(np.float32) @ place


def _dequantize(wp: Any, count: int | None, shape: tuple[int, ...] | None, axis: int) -> np.ndarray:
    if not wp.HasField("quantization"):
        raise WeightError("holds raw bytes but no quantization parameters")
    q = wp.quantization
    nbits = int(q.numberOfBits)
    if not 1 <= nbits <= 8:
        raise WeightError(f"numberOfBits {nbits} is not in 1..8")
    raw = wp.int8RawValue or wp.rawValue
    signed = bool(wp.int8RawValue)
    capacity = len(raw) * 8 // nbits
    if count is None:
        count = capacity
    if count > capacity:
        raise WeightError(f"{len(raw)} bytes of {nbits}-bit codes hold {capacity} values, the layer needs {count}")
    codes = _codes(raw, count, nbits, signed)
    kind = q.WhichOneof("QuantizationType")
    if kind == "lookupTableQuantization":
        lut = np.asarray(q.lookupTableQuantization.floatValue, dtype=np.float32)
        if codes.size and int(codes.max()) >= lut.size:
            raise WeightError(f"a palette index reaches past the {lut.size}-entry lookup table")
        return lut[codes.astype(np.int64)]
    if kind != "linearQuantization":
        raise WeightError("quantization has neither linear nor lookup-table parameters")
    lin = q.linearQuantization
    scale = np.asarray(lin.scale, dtype=np.float32)
    bias = np.asarray(lin.bias, dtype=np.float32) if len(lin.bias) else np.zeros(1, np.float32)
    if scale.size == 0:
        raise WeightError("linear quantization has no scale")
    if scale.size == 1 and bias.size == 1:
        return codes * scale[0] + bias[0]
    grid = shape if shape is not None else (max(scale.size, bias.size), -1)
    try:
        grid_codes = np.moveaxis(codes.reshape(grid), axis, 0)
    except ValueError:
        raise WeightError(f"{count} values do not form the weight shape {list(grid)}") from None
    channels = grid_codes.shape[0]
    for name, arr in (("scales", scale), ("biases", bias)):
        if arr.size not in (1, channels):
            raise WeightError(f"{arr.size} quantization {name} for {channels} channels")
    lead = (-1,) + (1,) * (grid_codes.ndim - 1)
    out = grid_codes * scale.reshape(lead) + bias.reshape(lead)
    return np.moveaxis(out, 0, axis).reshape(-1)
