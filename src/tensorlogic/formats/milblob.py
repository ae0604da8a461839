"""MIL blob storage (``weight.bin``, format version 2): memory-mapped, validated, zero-copy where possible.

Layout: a 64-byte file header (``uint32 count``, ``uint32 version`` = 2, reserved), then for each blob a
64-byte metadata record (``uint32 sentinel`` = 0xDEADBEEF, ``uint32 dtype``, ``uint64 sizeInBytes``,
``uint64 offset`` of the data, ``uint64 padding_size_in_bits`` for sub-byte types, reserved) followed
by the data, each record and each data block starting on a 64-byte boundary. A model refers to a blob
by the offset of its metadata record. Sub-byte types pack elements from the least significant bit up.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..mil.ir import NUMPY_STORAGE, SUB_BYTE_BITS

HEADER_SIZE = 64
METADATA_SIZE = 64
ALIGNMENT = 64
SENTINEL = 0xDEADBEEF
STORAGE_VERSION = 2

# BlobDataType codes of the storage format -> MIL dtype names.
BLOB_DTYPES: dict[int, str] = {
    1: "fp16", 2: "fp32", 3: "uint8", 4: "int8", 5: "bf16", 6: "int16", 7: "uint16", 8: "int4",
    9: "uint1", 10: "uint2", 11: "uint4", 12: "uint3", 13: "uint6", 14: "int32", 15: "uint32",
    16: "fp8e4m3fn", 17: "fp8e5m2",
}
BLOB_CODES = {name: code for code, name in BLOB_DTYPES.items()}

# Little-endian on-disk element types of the byte-aligned dtypes (bf16 and fp8 are widened after reading).
_DISK_DTYPES = {
    "fp16": "<f2", "fp32": "<f4", "uint8": "u1", "int8": "i1", "int16": "<i2", "uint16": "<u2",
    "int32": "<i4", "uint32": "<u4", "bf16": "<u2", "fp8e4m3fn": "u1", "fp8e5m2": "u1",
}


@dataclass(frozen=True)
class BlobInfo:
    """One blob's metadata record: where it is, what it holds. ``offset`` is the record's own offset."""

    offset: int
    dtype: str
    size: int
    data_offset: int
    padding_bits: int

    def numel(self) -> int:
        """Element count the record describes (sub-byte types: bits minus padding)."""
        bits = SUB_BYTE_BITS.get(self.dtype)
        if bits is not None:
            return (self.size * 8 - self.padding_bits) // bits
        return self.size // np.dtype(_DISK_DTYPES[self.dtype]).itemsize


class BlobFile:
    """A ``weight.bin`` opened for reading; every offset and size is checked against the file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
        except OSError as e:
            raise FormatError(f"weight file cannot be opened: {e.strerror or e}", self.path) from None
        if self.size < HEADER_SIZE:
            raise FormatError(
                f"weight file of {self.size} bytes is shorter than the {HEADER_SIZE}-byte blob storage header",
                self.path, 0,
            )
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        self.count, self.version = struct.unpack_from("<II", self._map, 0)
        if self.version != STORAGE_VERSION:
            raise FormatError(
                f"blob storage version {self.version}, expected {STORAGE_VERSION} "
                "(version 1 is the legacy Espresso format, not supported)",
                self.path, 4,
            )

    def info(self, offset: int) -> BlobInfo:
        """The metadata record at ``offset``, validated against the file."""
        if offset < HEADER_SIZE or offset + METADATA_SIZE > self.size:
            raise FormatError(
                f"blob metadata offset {offset} is outside the file ({self.size} bytes, header {HEADER_SIZE})",
                self.path, offset,
            )
        sentinel, code, size, data_offset, padding = struct.unpack_from("<IIQQQ", self._map, offset)
        if sentinel != SENTINEL:
            raise FormatError(
                f"bad blob metadata sentinel 0x{sentinel:08X} (expected 0xDEADBEEF): offset does not point "
                "at a blob, or the file is damaged",
                self.path, offset,
            )
        dtype = BLOB_DTYPES.get(code)
        if dtype is None:
            raise FormatError(f"unknown blob data type code {code}", self.path, offset + 4)
        if data_offset < HEADER_SIZE or data_offset > self.size or size > self.size - data_offset:
            raise FormatError(
                f"blob data (offset {data_offset}, {size} bytes) runs past the end of the file ({self.size} bytes)",
                self.path, offset + 16,
            )
        if dtype in SUB_BYTE_BITS:
            if padding >= 8 or padding > size * 8:
                raise FormatError(f"blob padding of {padding} bits is invalid for {dtype} data", self.path, offset + 24)
        else:
            padding = 0  # reserved (and uninitialized before iOS18) for byte-aligned types
            if size % np.dtype(_DISK_DTYPES[dtype]).itemsize:
                raise FormatError(f"blob size {size} is not a whole number of {dtype} elements", self.path, offset + 8)
        return BlobInfo(offset, dtype, size, data_offset, padding)

    def infos(self) -> list[BlobInfo]:
        """Every blob in file order, following the records as the storage format chains them."""
        out: list[BlobInfo] = []
        offset = HEADER_SIZE
        for _ in range(self.count):
            if offset + METADATA_SIZE > self.size:
                raise FormatError(
                    f"header says {self.count} blobs but the file ends after {len(out)}", self.path, offset
                )
            info = self.info(offset)
            out.append(info)
            end = info.data_offset + info.size
            offset = end + (-end % ALIGNMENT)
        return out

    def read(self, offset: int, dtype: str | None = None, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The blob at ``offset`` as numpy in the IR's storage dtype (``NUMPY_STORAGE``).

        ``dtype`` (the type the model declares) must match the stored type; ``shape`` (static) must
        match its element count. Byte-aligned fp16/fp32/int data is a read-only view of the mapping.
        """
        info = self.info(offset)
        if dtype is not None and dtype != info.dtype:
            raise FormatError(f"model declares {dtype} but the blob holds {info.dtype}", self.path, offset + 4)
        bits = SUB_BYTE_BITS.get(info.dtype)
        numel = info.numel()
        if shape is not None:
            want = int(np.prod(shape, dtype=np.int64))
            fits = want * bits <= info.size * 8 if bits else want == numel
            if not fits:
                raise FormatError(
                    f"blob holds {numel} {info.dtype} elements, the model expects shape {list(shape)}",
                    self.path, offset + 8,
                )
            numel = want
        raw = self._map[info.data_offset : info.data_offset + info.size]
        if bits is not None:
            flat = unpack_bits(np.asarray(raw), bits, numel, signed=info.dtype == "int4")
        else:
            flat = _widen(info.dtype, np.asarray(raw).view(_DISK_DTYPES[info.dtype]))
        return flat.reshape(shape) if shape is not None else flat

    def close(self) -> None:
        mm = getattr(self._map, "_mmap", None)
        self._map = np.empty(0, np.uint8)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # arrays handed out still view the mapping; it closes when they are freed


def unpack_bits(packed: np.ndarray, bits: int, count: int, signed: bool = False) -> np.ndarray:
    """Unpack ``count`` LSB-first ``bits``-wide elements into one byte each (int8 if ``signed``)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if bits == 4:
        out = np.empty(packed.size * 2, np.uint8)
        out[0::2] = packed & 0x0F
        out[1::2] = packed >> 4
        values = out[:count]
    else:
        stream = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
        values = np.packbits(stream, axis=1, bitorder="little").reshape(count)
    if signed:
        v = values.astype(np.int16)
        return np.where(v >= 1 << (bits - 1), v - (1 << bits), v).astype(np.int8)
    return values.astype(NUMPY_STORAGE["uint8"], copy=False)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack integers into LSB-first ``bits``-wide fields (the inverse of ``unpack_bits``)."""
    v = np.asarray(values).reshape(-1).astype(np.int16) & ((1 << bits) - 1)
    stream = np.unpackbits(v.astype(np.uint8).reshape(-1, 1), axis=1, bitorder="little")[:, :bits]
    return np.packbits(stream.reshape(-1), bitorder="little").tobytes()


def _fp8e4m3fn_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> 3) & 0x0F
    man = (codes & 0x07).astype(np.float64)
    normal = (1.0 + man / 8.0) * np.exp2(exp.astype(np.float64) - 7.0)
    subnormal = (man / 8.0) * np.exp2(-6.0)
    table = sign * np.where(exp == 0, subnormal, normal)
    table[(codes & 0x7F) == 0x7F] = np.nan  # e4m3fn has no infinities; only S.1111.111 is NaN
    return table.astype(np.float32)


_FP8E4M3FN = _fp8e4m3fn_table()


def _widen(dtype: str, disk: np.ndarray) -> np.ndarray:
    if dtype == "bf16":
        return (disk.astype(np.uint32) << 16).view(np.float32)
    if dtype == "fp8e4m3fn":
        return _FP8E4M3FN[disk]
    if dtype == "fp8e5m2":
        # e5m2 is the high byte of an IEEE half.
        return (disk.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    return disk.astype(NUMPY_STORAGE[dtype], copy=False)


def decode_bytes(dtype: str, data: bytes, count: int) -> np.ndarray:
    """Decode ``count`` elements of ``dtype`` packed as in blobs and in MIL immediate ``bytes`` values."""
    bits = SUB_BYTE_BITS.get(dtype)
    buf = np.frombuffer(data, dtype=np.uint8)
    if bits is not None:
        if count * bits > buf.size * 8:
            raise ValueError(f"{len(data)} bytes hold fewer than {count} {dtype} elements")
        return unpack_bits(buf, bits, count, signed=dtype == "int4")
    disk = np.dtype(_DISK_DTYPES[dtype])
    if buf.size != count * disk.itemsize:
        raise ValueError(f"{len(data)} bytes are not {count} {dtype} elements")
    return _widen(dtype, buf.view(disk)).copy()


def encode_bytes(dtype: str, values: np.ndarray) -> bytes:
    """The stored byte form of ``values`` (an array in ``dtype``'s numpy storage type)."""
    bits = SUB_BYTE_BITS.get(dtype)
    if bits is not None:
        return pack_bits(values, bits)
    if dtype == "bf16":
        f = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
        return (f >> 16).astype("<u2").tobytes()
    if dtype == "fp8e5m2":
        return (np.asarray(values, np.float16).view(np.uint16) >> 8).astype(np.uint8).tobytes()
    if dtype == "fp8e4m3fn":
        return _encode_e4m3fn(np.asarray(values, np.float32))
    return np.ascontiguousarray(values, dtype=_DISK_DTYPES[dtype]).tobytes()


def _encode_e4m3fn(values: np.ndarray) -> bytes:
    # Values read from a file are exactly representable; pick each one's code by table lookup.
    finite = np.where(np.isnan(_FP8E4M3FN), np.inf, _FP8E4M3FN)
    flat = values.reshape(-1)
    codes = np.abs(flat[:, None] - finite[None, :]).argmin(axis=1).astype(np.uint8)
    codes[np.isnan(flat)] = 0x7F
    neg_zero = (flat == 0) & np.signbit(flat)
    codes[neg_zero] = 0x80
    return codes.tobytes()


def write_blob_file(path: str | os.PathLike, blobs: list[tuple[str, np.ndarray]]) -> list[int]:
    """Write ``(dtype, values)`` blobs as a version-2 blob file; returns each blob's metadata offset."""
    out = bytearray(struct.pack("<II", len(blobs), STORAGE_VERSION).ljust(HEADER_SIZE, b"\0"))
    offsets = []
    for dtype, values in blobs:
        data = encode_bytes(dtype, np.asarray(values))
        bits = SUB_BYTE_BITS.get(dtype)
        padding = len(data) * 8 - np.asarray(values).size * bits if bits else 0
        offsets.append(len(out))
        data_offset = len(out) + METADATA_SIZE
        record = struct.pack("<IIQQQ", SENTINEL, BLOB_CODES[dtype], len(data), data_offset, padding)
        out += record.ljust(METADATA_SIZE, b"\0") + data
        out += b"\0" * (-len(out) % ALIGNMENT)
    Path(path).write_bytes(bytes(out))
    return offsets
