"""GGUF (llama.cpp): our own header parser and writer; tensor data memory-mapped, materialized lazily.

Layout (versions 2 and 3; every integer in the file's byte order):
  magic "GGUF", u32 version, u64 tensor count, u64 key-value count,
  key-values (string key, u32 value type, value),
  tensor infos (string name, u32 n_dims, n_dims x u64 dims in ggml order, u32 ggml type, u64 offset),
  padding to ``general.alignment`` (default 32), then the data section; tensor offsets are relative
  to it. A string is a u64 byte length followed by UTF-8 bytes; an array is a u32 item type, a u64
  count, then the items (arrays may nest).

Every count and length read from the header is checked against the bytes left in the file before
anything is allocated or looped over, so a damaged or hostile file gives a one-line ``FormatError``
with the byte offset of the bad field.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError, TensorLogicError, UnsupportedError
from ..model import Metadata, ModelFile, TensorInfo, dominant_type
from .detect import Detected

if TYPE_CHECKING:
    import torch

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
# Deeper nesting has no use in any model and would only let a crafted file exhaust the stack.
MAX_ARRAY_NESTING = 16
HEADER_BYTES = 24

# ggml type id -> (name, elements per block, bytes per block), as in ggml.h / gguf-py's GGML_QUANT_SIZES.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
GGML_TYPE_IDS = {name: tid for tid, (name, _, _) in GGML_TYPES.items()}

# Types numpy holds as they are stored.
PLAIN_TYPES = {"F32": "f4", "F16": "f2", "F64": "f8", "I8": "i1", "I16": "i2", "I32": "i4", "I64": "i8"}

# llama.cpp's llama_ftype (general.file_type) -> the name llama.cpp prints, without MOSTLY_/ALL_.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
    32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}
# llama.cpp ORs this bit into a file type it inferred rather than read.
FILE_TYPE_GUESSED = 1024

# Metadata value types: id -> (name, struct code, size) for fixed-size ones.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
VALUE_TYPE_NAMES = [
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY",
    "UINT64", "INT64", "FLOAT64",
]
_FIXED: dict[int, tuple[str, int]] = {
    UINT8: ("B", 1), INT8: ("b", 1), UINT16: ("H", 2), INT16: ("h", 2), UINT32: ("I", 4), INT32: ("i", 4),
    FLOAT32: ("f", 4), BOOL: ("B", 1), UINT64: ("Q", 8), INT64: ("q", 8), FLOAT64: ("d", 8),
}
_NUMPY_CODES = {
    UINT8: "u1", INT8: "i1", UINT16: "u2", INT16: "i2", UINT32: "u4", INT32: "i4",
    FLOAT32: "f4", UINT64: "u8", INT64: "i8", FLOAT64: "f8", BOOL: "u1",
}
# Fewest bytes one item of each type takes: bounds an array's length by the bytes left.
_MIN_ITEM_BYTES = {**{t: size for t, (_, size) in _FIXED.items()}, STRING: 8, ARRAY: 12}
# Smallest key-value (empty key, u32 type, one-byte value) and tensor info (empty name, 0 dims).
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8

# Byte offsets of the f16 fields inside one block, for the quantized types whose big-endian layout
# is defined (gguf-py's gguf_convert_endian swaps exactly these; MXFP4/NVFP4 hold only bytes).
_BIG_ENDIAN_F16_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,), "Q8_0": (0,), "Q4_K": (0, 2), "Q6_K": (208,), "MXFP4": (), "NVFP4": (),
}

_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass
class _Tensor:
    info: TensorInfo
    type_id: int
    name_offset: int  # where its tensor info starts
    offset_field: int  # where its data offset is stored


@dataclass
class _Part:
    """One GGUF file: its checked header and a private memory map of its bytes."""

    path: Path
    size: int
    version: int
    big_endian: bool
    alignment: int
    kv: dict[str, Any]
    kv_types: dict[str, int]
    kv_offsets: dict[str, int]
    tensors: dict[str, _Tensor]
    data_start: int
    buffer: mmap.mmap | None = field(default=None, repr=False)

    def raw(self, t: _Tensor) -> np.ndarray:
        if t.info.nbytes == 0:
            return np.zeros(0, np.uint8)
        if self.buffer is None:
            raise TensorLogicError(f"{self.path}: the GGUF file was closed; load it again to read tensors")
        return np.frombuffer(self.buffer, dtype=np.uint8, count=t.info.nbytes, offset=t.info.offset or 0)

    def close(self) -> None:
        if self.buffer is not None:
            try:
                self.buffer.close()
            except BufferError:
                # Tensors handed out still view the map; it closes when they are freed.
                pass
            self.buffer = None


class _HeaderReader:
    """Sequential reads from the mapped header, each bounded by the file size before it happens."""

    def __init__(self, path: Path, buf: mmap.mmap, size: int, big_endian: bool):
        self.path = path
        self.buf = buf
        self.size = size
        self.order = ">" if big_endian else "<"
        self.pos = 0
        self._u64 = struct.Struct(self.order + "Q").unpack_from

    def error(self, message: str, offset: int | None = None) -> FormatError:
        return FormatError(message, self.path, self.pos if offset is None else offset)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            left = max(self.size - self.pos, 0)
            raise self.error(f"truncated file: {what} needs {n:,} bytes, only {left:,} remain")

    def fixed(self, vtype: int, what: str) -> Any:
        code, size = _FIXED[vtype]
        self.need(size, what)
        value = struct.unpack_from(self.order + code, self.buf, self.pos)[0]
        self.pos += size
        if vtype == BOOL:
            return value != 0
        return value

    def u32(self, what: str) -> int:
        return self.fixed(UINT32, what)

    def u64(self, what: str) -> int:
        return self.fixed(UINT64, what)

    def string(self, what: str) -> str:
        start = self.pos
        n = self.u64(f"{what} length")
        if n > self.size - self.pos:
            raise self.error(
                f"{what}: string length {n:,} runs past the end of the file ({self.size - self.pos:,} bytes remain)",
                start,
            )
        try:
            text = self.buf[self.pos : self.pos + n].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(f"{what}: string is not valid UTF-8", self.pos + e.start) from None
        self.pos += n
        return text

    def value(self, vtype: int, type_offset: int, what: str, depth: int = 0) -> Any:
        if vtype in _FIXED:
            return self.fixed(vtype, what)
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            return self.array(what, depth)
        raise self.error(f"{what}: unknown metadata value type {vtype} (known: 0-12)", type_offset)

    def array(self, what: str, depth: int) -> list[Any]:
        if depth >= MAX_ARRAY_NESTING:
            raise self.error(f"{what}: arrays nested more than {MAX_ARRAY_NESTING} deep")
        type_offset = self.pos
        itype = self.u32(f"{what} array item type")
        count_offset = self.pos
        count = self.u64(f"{what} array length")
        if itype not in _MIN_ITEM_BYTES:
            raise self.error(f"{what}: unknown array item type {itype} (known: 0-12)", type_offset)
        least = count * _MIN_ITEM_BYTES[itype]
        if least > self.size - self.pos:
            raise self.error(
                f"{what}: array of {count:,} {VALUE_TYPE_NAMES[itype]} items needs at least {least:,} bytes, "
                f"only {self.size - self.pos:,} remain",
                count_offset,
            )
        if itype in _NUMPY_CODES:
            nbytes = count * _FIXED[itype][1]
            dtype = np.dtype(self.order + _NUMPY_CODES[itype])
            items = np.frombuffer(self.buf[self.pos : self.pos + nbytes], dtype=dtype)
            self.pos += nbytes
            return (items != 0).tolist() if itype == BOOL else items.tolist()
        if itype == STRING:
            return self.strings(count, what)
        return [self.array(f"{what}[{i}]", depth + 1) for i in range(count)]

    def strings(self, count: int, what: str) -> list[str]:
        """A string array (a tokenizer vocabulary: 100k+ items) in one bulk UTF-8 decode.

        Only walking the length prefixes is a Python loop; anything unusual (a bad length, invalid
        UTF-8) goes to ``_strings_checked``, which finds and reports the exact offset.
        """
        if count == 0:
            return []
        buf, u64 = self.buf, self._u64
        start = pos = self.pos
        lengths = [0] * count
        try:
            for i in range(count):
                n = u64(buf, pos)[0]
                lengths[i] = n
                pos += 8 + n
        except (struct.error, OverflowError):  # a length field past the end, or a length past 2**63
            return self._strings_checked(count, what)
        if pos > self.size:
            return self._strings_checked(count, what)
        lens = np.array(lengths, dtype=np.int64)
        ends = np.cumsum(lens)  # of each string within the concatenated text bytes
        keep = np.ones(pos - start, dtype=bool)
        prefixes = ends - lens + 8 * np.arange(count)  # each length field, relative to ``start``
        for j in range(8):
            keep[prefixes + j] = False
        data = np.frombuffer(buf[start:pos], dtype=np.uint8)[keep]
        firsts = (ends - lens)[lens > 0]
        try:
            text = data.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            return self._strings_checked(count, what)
        # The concatenation can be valid UTF-8 while a string alone is not (a character split
        # across two strings); then some non-empty string starts with a continuation byte.
        if ((data[firsts] & 0xC0) == 0x80).any():
            return self._strings_checked(count, what)
        if len(text) != len(data):
            chars = np.zeros(len(data) + 1, dtype=np.int64)
            np.cumsum((data & 0xC0) != 0x80, out=chars[1:])
            ends = chars[ends]
        bounds = [0, *ends.tolist()]
        self.pos = pos
        return [text[a:b] for a, b in zip(bounds, bounds[1:])]

    def _strings_checked(self, count: int, what: str) -> list[str]:
        buf, size, u64 = self.buf, self.size, self._u64
        pos = self.pos
        out: list[str] = []
        i = 0
        try:
            for i in range(count):
                if pos + 8 > size:
                    raise self.error(f"truncated file: {what}[{i}] length needs 8 bytes", pos)
                end = pos + 8 + u64(buf, pos)[0]
                if end > size:
                    raise self.error(f"{what}[{i}]: string length {end - pos - 8:,} runs past the end of the file", pos)
                out.append(buf[pos + 8 : end].decode("utf-8"))
                pos = end
        except UnicodeDecodeError as e:
            raise self.error(f"{what}[{i}]: string is not valid UTF-8", pos + 8 + e.start) from None
        self.pos = pos
        return out


def _read_part(path: Path) -> _Part:
    """Parse and check one GGUF file's header; the tensor bytes are mapped, not read."""
    size = path.stat().st_size
    if size < 8:
        raise FormatError(f"truncated GGUF header: the file has {size} bytes, magic and version need 8", path, 0)
    with open(path, "rb") as f:
        # ACCESS_COPY: writable views for torch, never written back to the user's file.
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    try:
        return _parse(path, buf, size)
    except BaseException:
        buf.close()
        raise


def _parse(path: Path, buf: mmap.mmap, size: int) -> _Part:
    if buf[:4] != MAGIC:
        raise FormatError(f"not a GGUF file: magic is {bytes(buf[:4])!r}, expected b'GGUF'", path, 0)
    le, be = struct.unpack_from("<I", buf, 4)[0], struct.unpack_from(">I", buf, 4)[0]
    # A version read in the wrong byte order is >= 2**24, so the small one tells the byte order.
    big_endian = not 1 <= le <= 3 and 1 <= be <= 3
    version = be if big_endian else le
    if version == 1:
        raise FormatError(
            "GGUF version 1 (2023 pre-release, 32-bit counts and lengths) is not supported: "
            "re-convert the model with a current llama.cpp",
            path,
            4,
        )
    if version not in (2, 3):
        raise FormatError(f"GGUF version {version} is not supported (this reader knows versions 2 and 3)", path, 4)
    r = _HeaderReader(path, buf, size, big_endian)
    r.pos = 8
    n_tensors = r.u64("tensor count")
    n_kv = r.u64("metadata key-value count")
    left = size - HEADER_BYTES
    if n_tensors * _MIN_TENSOR_INFO_BYTES > left:
        raise FormatError(
            f"header claims {n_tensors:,} tensors, but the {left:,} bytes after the header hold at most "
            f"{left // _MIN_TENSOR_INFO_BYTES:,} tensor infos",
            path,
            8,
        )
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > left:
        raise FormatError(
            f"header claims {n_kv:,} metadata key-values, but the {left:,} bytes after the header hold at most "
            f"{(left - n_tensors * _MIN_TENSOR_INFO_BYTES) // _MIN_KV_BYTES:,} besides the tensor infos",
            path,
            16,
        )

    kv: dict[str, Any] = {}
    kv_types: dict[str, int] = {}
    kv_offsets: dict[str, int] = {}
    for i in range(n_kv):
        start = r.pos
        key = r.string(f"metadata key #{i}")
        if key in kv:
            raise FormatError(f"metadata key {key!r} appears twice", path, start)
        type_offset = r.pos
        vtype = r.u32(f"metadata {key!r} value type")
        kv[key] = r.value(vtype, type_offset, f"metadata {key!r}")
        kv_types[key] = vtype
        kv_offsets[key] = start

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in kv:
        alignment = kv["general.alignment"]
        if kv_types["general.alignment"] not in (UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64) or (
            alignment <= 0 or alignment & (alignment - 1)
        ):
            raise FormatError(
                f"general.alignment is {alignment!r}; it must be a positive power of two",
                path,
                kv_offsets["general.alignment"],
            )

    tensors: dict[str, _Tensor] = {}
    relative: list[int] = []
    for i in range(n_tensors):
        start = r.pos
        name = r.string(f"tensor #{i} name")
        if name in tensors:
            raise FormatError(f"tensor {name!r} appears twice", path, start)
        what = f"tensor {name!r}"
        dims_offset = r.pos
        n_dims = r.u32(f"{what} dimension count")
        if n_dims > GGML_MAX_DIMS:
            raise FormatError(
                f"{what}: {n_dims:,} dimensions, more than GGML_MAX_DIMS = {GGML_MAX_DIMS}", path, dims_offset
            )
        r.need(8 * n_dims, f"{what} dimensions")
        dims = struct.unpack_from(f"{r.order}{n_dims}Q", buf, r.pos)
        r.pos += 8 * n_dims
        type_offset = r.pos
        type_id = r.u32(f"{what} type")
        if type_id not in GGML_TYPES:
            raise FormatError(f"{what}: unknown ggml type id {type_id}", path, type_offset)
        offset_field = r.pos
        offset = r.u64(f"{what} data offset")
        type_name, block, type_size = GGML_TYPES[type_id]
        if any(d >= 1 << 63 for d in dims):
            raise FormatError(f"{what}: dimension {max(dims):,} is out of range", path, dims_offset + 4)
        if n_dims and dims[0] % block:
            raise FormatError(
                f"{what}: row of {dims[0]:,} elements is not a whole number of {type_name} blocks of {block}",
                path,
                dims_offset + 4,
            )
        if offset % alignment:
            raise FormatError(
                f"{what}: data offset {offset:,} is not a multiple of the alignment {alignment}", path, offset_field
            )
        numel = 1
        for d in dims:
            numel *= d
        shape = tuple(reversed(dims))
        info = TensorInfo(name, shape, type_name, numel // block * type_size, None, str(path))
        tensors[name] = _Tensor(info, type_id, start, offset_field)
        relative.append(offset)

    data_start = r.pos + (-r.pos % alignment)
    for t, offset in zip(tensors.values(), relative):
        t.info.offset = data_start + offset
        start, end = t.info.offset, t.info.offset + t.info.nbytes
        if end > size:
            raise FormatError(
                f"tensor {t.info.name!r}: data [{start:,}, {end:,}) runs past the end of the {size:,}-byte file",
                path,
                t.offset_field,
            )
    spans = sorted((t for t in tensors.values() if t.info.nbytes), key=lambda t: t.info.offset or 0)
    for a, b in zip(spans, spans[1:]):
        a_start, a_len, b_start = a.info.offset or 0, a.info.nbytes, b.info.offset or 0
        if b_start < a_start + a_len:
            raise FormatError(
                f"tensor {b.info.name!r}: data at byte {b_start:,} overlaps tensor {a.info.name!r} "
                f"[{a_start:,}, {a_start + a_len:,})",
                path,
                b.offset_field,
            )
    return _Part(path, size, version, big_endian, alignment, kv, kv_types, kv_offsets, tensors, data_start, buf)


def _to_little_endian(raw: np.ndarray, type_name: str, path: Path, name: str) -> np.ndarray:
    """A little-endian copy of a big-endian file's bf16 or quantized tensor bytes."""
    if type_name == "BF16":
        return raw.view(">u2").astype("<u2").view(np.uint8)
    fields = _BIG_ENDIAN_F16_FIELDS.get(type_name)
    if fields is None:
        raise UnsupportedError(
            f"{path}: tensor {name!r}: {type_name} data in a big-endian GGUF file has no defined byte order "
            f"(known: BF16, {', '.join(_BIG_ENDIAN_F16_FIELDS)}); convert the file to little-endian"
        )
    block_bytes = GGML_TYPES[GGML_TYPE_IDS[type_name]][2]
    blocks = raw.reshape(-1, block_bytes).copy()
    for at in fields:
        blocks[:, at : at + 2] = blocks[:, at : at + 2][:, ::-1]
    return blocks.reshape(-1)


class GGUFFile(ModelFile):
    """A GGUF model, possibly split over several files, read through memory maps."""

    format = "GGUF"

    def __init__(self, path: Path, parts: list[_Part]):
        super().__init__(path)
        self._parts = parts
        self._where: dict[str, tuple[_Part, _Tensor]] = {}
        for part in parts:
            for name, t in part.tensors.items():
                if name in self._where:
                    first = self._where[name][0].path.name
                    raise FormatError(f"tensor {name!r} appears twice (also in {first})", part.path, t.name_offset)
                self._where[name] = (part, t)

    @property
    def kv(self) -> dict[str, Any]:
        """The key-values of the first (or only) file."""
        return self._parts[0].kv

    def tensor_infos(self) -> list[TensorInfo]:
        return [t.info for _, t in self._where.values()]

    def metadata(self) -> Metadata:
        kv = self.kv
        infos = self.tensor_infos()
        counts: dict[str, int] = {}
        for t in infos:
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        quantization = None
        file_type = kv.get("general.file_type")
        if isinstance(file_type, int) and not isinstance(file_type, bool):
            quantization = FILE_TYPES.get(file_type & ~FILE_TYPE_GUESSED)
        first = self._parts[0]
        extra = dict(kv)
        extra["gguf_version"] = first.version
        extra["alignment"] = first.alignment
        extra["endianness"] = "big" if first.big_endian else "little"
        if len(self._parts) > 1:
            extra["split_files"] = [p.path.name for p in self._parts]

        def text(key: str) -> str:
            value = kv.get(key)
            return "" if value is None else str(value)

        stem = self.path.name.removesuffix(".gguf")
        split = _SPLIT_NAME.match(self.path.name)
        return Metadata(
            format=self.format,
            quantization=quantization or dominant_type(counts),
            name=text("general.name") or (split.group("prefix") if split else stem),
            architecture=text("general.architecture") or None,
            description=text("general.description"),
            author=text("general.author"),
            license=text("general.license"),
            version=text("general.version"),
            parameter_count=sum(t.numel for t in infos),
            tensor_count=len(infos),
            file_size=sum(p.size for p in self._parts),
            extra=extra,
        )

    def _find(self, name: str) -> tuple[_Part, _Tensor]:
        try:
            return self._where[name]
        except KeyError:
            raise TensorLogicError(f"{self.path}: no tensor named {name!r}") from None

    def _little_endian_raw(self, part: _Part, t: _Tensor) -> np.ndarray:
        raw = part.raw(t)
        if part.big_endian:
            raw = _to_little_endian(raw, t.info.dtype, part.path, t.info.name)
        return raw

    def read_numpy(self, name: str) -> np.ndarray:
        """Plain types as stored (a view of the map, copied only to fix byte order); others as float32."""
        part, t = self._find(name)
        kind = t.info.dtype
        if kind in PLAIN_TYPES:
            stored = np.dtype((">" if part.big_endian else "<") + PLAIN_TYPES[kind])
            arr = part.raw(t).view(stored).reshape(t.info.shape)
            return arr.astype(stored.newbyteorder("="), copy=False)
        raw = self._little_endian_raw(part, t)
        from . import gguf_quants

        return gguf_quants.dequantize(raw, kind, t.info.shape, path=part.path, offset=t.info.offset)

    def read_torch(self, name: str, device: Any = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Plain types as stored, BF16 as bfloat16, quantized types dequantized on ``device``.

        Quantized types come out as ``dtype`` when it is float16 (straight from float32 registers,
        one pass over the output), else float32.
        """
        import torch

        part, t = self._find(name)
        kind = t.info.dtype
        if kind in PLAIN_TYPES:
            out = torch.from_numpy(self.read_numpy(name))
            return out.to(device) if device is not None else out
        raw = torch.from_numpy(self._little_endian_raw(part, t))
        if device is not None:
            # Only the packed bytes cross to the device; dequantizing there is the fast path.
            raw = raw.to(device)
        if kind == "BF16":
            return raw.view(torch.bfloat16).reshape(t.info.shape)
        from . import gguf_quants_torch

        out_dtype = torch.float16 if dtype == torch.float16 else torch.float32
        return gguf_quants_torch.dequantize_torch(
            raw, kind, t.info.shape, dtype=out_dtype, path=part.path, offset=t.info.offset
        )

    def close(self) -> None:
        for part in self._parts:
            part.close()


def open_gguf(found: Detected) -> GGUFFile:
    """Open a GGUF file; a ``name-0000K-of-0000N.gguf`` part brings in all N parts as one model."""
    part = _read_part(found.path)
    count = part.kv.get("split.count")
    if not isinstance(count, int) or isinstance(count, bool) or count <= 1:
        return GGUFFile(found.path, [part])
    try:
        parts = _open_split(part, count)
    except BaseException:
        part.close()
        raise
    return GGUFFile(parts[0].path, parts)


def _open_split(given: _Part, count: int) -> list[_Part]:
    path = given.path
    m = _SPLIT_NAME.match(path.name)
    if m is None or int(m.group("count")) != count:
        raise FormatError(
            f"split.count says the model has {count} parts, but the file name does not follow "
            f"NAME-{1:05d}-of-{count:05d}.gguf, so the other parts cannot be found",
            path,
            given.kv_offsets["split.count"],
        )
    names = [f"{m.group('prefix')}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    missing = [n for n in names if not (path.parent / n).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise FormatError(f"split model of {count} parts is missing {len(missing)}: {shown}", path)
    parts: list[_Part] = []
    try:
        for i, n in enumerate(names):
            p = path.parent / n
            part = given if p.name == path.name else _read_part(p)
            parts.append(part)
            no = part.kv.get("split.no")
            if no != i or part.kv.get("split.count") != count:
                raise FormatError(
                    f"part {i + 1} of {count} says split.no={no!r}, split.count={part.kv.get('split.count')!r}",
                    p,
                    part.kv_offsets.get("split.no", 0),
                )
        total = parts[0].kv.get("split.tensors.count")
        found = sum(len(p.tensors) for p in parts)
        if total is not None and total != found:
            raise FormatError(
                f"split.tensors.count is {total:,} but the {count} parts hold {found:,} tensors",
                parts[0].path,
                parts[0].kv_offsets["split.tensors.count"],
            )
    except BaseException:
        for part in parts:
            if part is not given:
                part.close()
        raise
    return parts


# ---------------------------------------------------------------------------------------------- writing

SAVE_QTYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0")
_QTYPE_FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "BF16": 32}
# Keys the writer owns, and keys our reader adds to ``extra`` that describe a file, not a model.
_WRITER_KEYS = {"general.alignment", "general.file_type", "split.no", "split.count", "split.tensors.count"}
_READER_EXTRAS = {"gguf_version", "alignment", "endianness", "split_files"}

_NUMPY_TO_GGML = {"float32": "F32", "float16": "F16", "float64": "F64", "int8": "I8", "int16": "I16",
                  "int32": "I32", "int64": "I64"}
_TORCH_TO_GGML = {**_NUMPY_TO_GGML, "bfloat16": "BF16"}
_VALUE_TYPE_OF_NUMPY = {"uint8": UINT8, "int8": INT8, "uint16": UINT16, "int16": INT16, "uint32": UINT32,
                        "int32": INT32, "float32": FLOAT32, "bool": BOOL, "uint64": UINT64, "int64": INT64,
                        "float64": FLOAT64}


@dataclass
class _Planned:
    name: str
    source: str
    target: str
    shape: tuple[int, ...]
    nbytes: int


def _source_type(name: str, value: Any) -> tuple[str, tuple[int, ...]]:
    if isinstance(value, np.ndarray):
        kind = _NUMPY_TO_GGML.get(value.dtype.name)
        if kind is None:
            raise TensorLogicError(f"tensor {name!r}: numpy dtype {value.dtype} has no GGUF type; cast it first")
        return kind, tuple(int(d) for d in value.shape)
    kind_name = type(value).__module__.split(".")[0]
    if kind_name == "torch":
        import torch

        if isinstance(value, torch.Tensor):
            kind = _TORCH_TO_GGML.get(str(value.dtype).removeprefix("torch."))
            if kind is None:
                raise TensorLogicError(f"tensor {name!r}: torch dtype {value.dtype} has no GGUF type; cast it first")
            return kind, tuple(int(d) for d in value.shape)
    raise TensorLogicError(f"tensor {name!r}: cannot save a {type(value).__name__}; give a torch.Tensor or numpy array")


def _target_type(source: str, shape: tuple[int, ...], qtype: str | None) -> str:
    if source.startswith("I") or qtype is None:
        return source
    if qtype in ("Q8_0", "Q4_0"):
        block = GGML_TYPES[GGML_TYPE_IDS[qtype]][1]
        # As llama.cpp does: vectors (norms, biases) and rows that do not fill whole blocks stay float.
        if len(shape) < 2 or shape[-1] % block:
            return "F16" if source == "F16" else "F32"
    return qtype


def _nbytes(kind: str, shape: tuple[int, ...]) -> int:
    _, block, size = GGML_TYPES[GGML_TYPE_IDS[kind]]
    numel = 1
    for d in shape:
        numel *= d
    return numel // block * size


def _as_numpy(value: Any, source: str) -> np.ndarray:
    """The tensor as a contiguous numpy array; bf16 as its raw uint16 bits."""
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    import torch

    t = value.detach().to("cpu").contiguous()
    if source == "BF16":
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _encode(arr: np.ndarray, source: str, target: str) -> np.ndarray:
    """The bytes to store for one tensor, as a flat little-endian array."""
    if source == target:
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1)
    f32 = (arr.astype(np.uint32) << 16).view(np.float32) if source == "BF16" else arr.astype(np.float32)
    if target == "F32":
        return f32.astype("<f4", copy=False).reshape(-1)
    if target == "F16":
        return f32.astype("<f2").reshape(-1)
    from . import gguf_quants

    return gguf_quants.quantize(f32, target).reshape(-1)


def _pack_string(text: str) -> bytes:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise TensorLogicError(f"string {text[:40]!r} cannot be stored: it is not valid Unicode") from None
    return struct.pack("<Q", len(data)) + data


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float_type(values: list[float]) -> int:
    # FLOAT32 is what llama.cpp reads its float keys as; only values it cannot hold get FLOAT64.
    return FLOAT64 if any(abs(v) > _FLOAT32_MAX and v == v and abs(v) != float("inf") for v in values) else FLOAT32


def _value_type(key: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        return BOOL
    if isinstance(value, np.generic) and value.dtype.name in _VALUE_TYPE_OF_NUMPY:
        return _VALUE_TYPE_OF_NUMPY[value.dtype.name]
    if isinstance(value, int):
        return _int_type(key, [value])
    if isinstance(value, float):
        return _float_type([value])
    if isinstance(value, str):
        return STRING
    if isinstance(value, (list, tuple, np.ndarray)):
        return ARRAY
    raise TensorLogicError(f"metadata {key!r}: cannot store a {type(value).__name__} in GGUF")


def _int_type(key: str, values: list[int]) -> int:
    lo, hi = min(values, default=0), max(values, default=0)
    # Unsigned 32-bit first: llama.cpp reads its integer keys (context length, counts) as u32.
    for vtype, low, high in ((UINT32, 0, 1 << 32), (INT32, -(1 << 31), 1 << 31), (UINT64, 0, 1 << 64),
                             (INT64, -(1 << 63), 1 << 63)):
        if low <= lo and hi < high:
            return vtype
    raise TensorLogicError(f"metadata {key!r}: integer {hi if hi >= 1 << 64 else lo} does not fit in 64 bits")


def _pack_array(key: str, value: Any) -> bytes:
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.name not in _VALUE_TYPE_OF_NUMPY:
            raise TensorLogicError(f"metadata {key!r}: only 1-D numeric numpy arrays can be stored")
        itype = _VALUE_TYPE_OF_NUMPY[value.dtype.name]
        body = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
        return struct.pack("<IQ", itype, len(value)) + body
    items = list(value)
    if items and all(type(v) is float for v in items):
        itype = _float_type(items)
        return struct.pack("<IQ", itype, len(items)) + np.asarray(items, dtype="<" + _NUMPY_CODES[itype]).tobytes()
    types = {_value_type(key, v) for v in items}
    if types <= {UINT32, INT32, UINT64, INT64} and types:
        itype = _int_type(key, items)
        return struct.pack("<IQ", itype, len(items)) + np.asarray(items, dtype=_NUMPY_CODES[itype]).astype(
            "<" + _NUMPY_CODES[itype]).tobytes()
    if len(types) > 1:
        names = ", ".join(sorted(VALUE_TYPE_NAMES[t] for t in types))
        raise TensorLogicError(f"metadata {key!r}: a GGUF array holds one item type, this list mixes {names}")
    itype = types.pop() if types else INT32
    if itype == STRING:
        return struct.pack("<IQ", itype, len(items)) + b"".join(_pack_string(v) for v in items)
    if itype == ARRAY:
        return struct.pack("<IQ", itype, len(items)) + b"".join(_pack_array(key, v) for v in items)
    code = _NUMPY_CODES[itype]
    return struct.pack("<IQ", itype, len(items)) + np.asarray(items).astype("<" + code).tobytes()


def _pack_value(key: str, value: Any) -> bytes:
    vtype = _value_type(key, value)
    if vtype == STRING:
        return struct.pack("<I", vtype) + _pack_string(value)
    if vtype == ARRAY:
        return struct.pack("<I", vtype) + _pack_array(key, value)
    code, _ = _FIXED[vtype]
    return struct.pack("<I" + code, vtype, value.item() if isinstance(value, np.generic) else value)


def _file_type(plans: list[_Planned], qtype: str | None) -> int | None:
    if qtype is not None:
        return _QTYPE_FILE_TYPE[qtype]
    counts: dict[str, int] = {}
    for p in plans:
        if p.target in ("F32", "F16", "BF16"):
            n = 1
            for d in p.shape:
                n *= d
            counts[p.target] = counts.get(p.target, 0) + n
    return _QTYPE_FILE_TYPE.get(dominant_type(counts))


def save_gguf(tensors: Mapping[str, Any], path: Path, metadata: Mapping[str, Any] | None = None,
              **options: Any) -> Path:
    """Write a GGUF v3 little-endian file atomically (temp file in the same folder, fsync, rename).

    ``qtype`` (None: keep F32/F16/BF16 as given) converts floating tensors to F32, F16, BF16, Q8_0 or
    Q4_0; vectors and rows that are not whole Q blocks stay F32/F16. Metadata values may be str, int,
    float, bool, numpy scalars or (nested) lists. The writer sets ``general.alignment`` (32) and
    ``general.file_type`` itself. ``tensors`` is read twice (shapes first, then data one at a time),
    so a lazy mapping keeps at most one tensor in memory.
    """
    qtype = options.pop("qtype", None)
    if options:
        raise TensorLogicError(f"save as GGUF: unknown options {sorted(options)} (known: qtype)")
    if qtype is not None and qtype not in SAVE_QTYPES:
        raise TensorLogicError(f"save as GGUF: qtype {qtype!r} is not one of {', '.join(SAVE_QTYPES)}")
    path = Path(path)

    plans: list[_Planned] = []
    for name in tensors:
        if not isinstance(name, str):
            raise TensorLogicError(f"tensor name {name!r} is not a string")
        source, shape = _source_type(name, tensors[name])
        if len(shape) > GGML_MAX_DIMS:
            raise TensorLogicError(f"tensor {name!r}: {len(shape)} dimensions, GGUF allows at most {GGML_MAX_DIMS}")
        target = _target_type(source, shape, qtype)
        plans.append(_Planned(name, source, target, shape, _nbytes(target, shape)))

    kv = [(str(k), v) for k, v in (metadata or {}).items() if k not in _WRITER_KEYS and k not in _READER_EXTRAS]
    kv.append(("general.alignment", np.uint32(DEFAULT_ALIGNMENT)))
    file_type = _file_type(plans, qtype)
    if file_type is not None:
        kv.append(("general.file_type", np.uint32(file_type)))

    header = bytearray(MAGIC + struct.pack("<IQQ", 3, len(plans), len(kv)))
    for key, value in kv:
        header += _pack_string(key) + _pack_value(key, value)
    offset = 0
    for p in plans:
        header += _pack_string(p.name) + struct.pack(f"<I{len(p.shape)}Q", len(p.shape), *reversed(p.shape))
        header += struct.pack("<IQ", GGML_TYPE_IDS[p.target], offset)
        offset += p.nbytes + (-p.nbytes % DEFAULT_ALIGNMENT)
    header += bytes(-len(header) % DEFAULT_ALIGNMENT)

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            for p in plans:
                data = _encode(_as_numpy(tensors[p.name], p.source), p.source, p.target)
                if data.nbytes != p.nbytes:
                    raise TensorLogicError(
                        f"tensor {p.name!r}: {p.target} encoding gave {data.nbytes:,} bytes, expected {p.nbytes:,} "
                        "(did the tensor change while saving?)"
                    )
                f.write(memoryview(np.ascontiguousarray(data)).cast("B"))
                f.write(bytes(-p.nbytes % DEFAULT_ALIGNMENT))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
