"""SafeTensors: header parsed and checked by us, data memory-mapped, tensors materialized lazily.

Layout: 8-byte little-endian header length N, N bytes of JSON (``name -> {dtype, shape,
data_offsets}`` plus optional ``__metadata__`` of strings), then the data section. Offsets in the
header are relative to the data section. Every field is checked against the file before use, so a
damaged file gives a ``FormatError`` with the byte offset instead of a huge allocation.
"""

from __future__ import annotations

import json
import mmap
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError, TensorLogicError
from ..model import Metadata, ModelFile, TensorInfo, dominant_type
from .detect import Detected

if TYPE_CHECKING:
    import torch

# The reference implementation refuses headers above 100 MB; so do we.
MAX_HEADER_BYTES = 100_000_000

# dtype -> (bytes per element, numpy dtype as stored or None when numpy has no such type)
DTYPES: dict[str, tuple[int, Any]] = {
    "F64": (8, np.float64), "F32": (4, np.float32), "F16": (2, np.float16), "BF16": (2, None),
    "F8_E4M3": (1, None), "F8_E5M2": (1, None),
    "I64": (8, np.int64), "I32": (4, np.int32), "I16": (2, np.int16), "I8": (1, np.int8),
    "U64": (8, np.uint64), "U32": (4, np.uint32), "U16": (2, np.uint16), "U8": (1, np.uint8),
    "BOOL": (1, np.bool_),
}

_TORCH_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}


def _fp8_table(exp_bits: int, man_bits: int, bias: int, ieee_inf: bool) -> np.ndarray:
    """float32 value of every fp8 bit pattern (E4M3FN has no inf; its only NaN is S.1111.111)."""
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    man = codes & ((1 << man_bits) - 1)
    normal = (1.0 + man / (1 << man_bits)) * np.exp2(exp.astype(np.float64) - bias)
    subnormal = (man / (1 << man_bits)) * np.exp2(1.0 - bias)
    values = sign * np.where(exp == 0, subnormal, normal)
    top = exp == (1 << exp_bits) - 1
    if ieee_inf:
        values = np.where(top & (man == 0), sign * np.inf, values)
        values = np.where(top & (man != 0), np.nan, values)
    else:
        values = np.where(top & (man == (1 << man_bits) - 1), np.nan, values)
    return values.astype(np.float32)


_FP8_TABLES = {
    "F8_E4M3": _fp8_table(4, 3, 7, ieee_inf=False),
    "F8_E5M2": _fp8_table(5, 2, 15, ieee_inf=True),
}


class _Shard:
    """One .safetensors file: its checked header and a private memory map of its bytes."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self.entries, self.user_metadata, self.data_start = _read_header(path, self.size)
        self._map: mmap.mmap | None = None

    def buffer(self) -> mmap.mmap:
        if self._map is None:
            with open(self.path, "rb") as f:
                # ACCESS_COPY: writable views for torch, never written back to the user's file.
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._map

    def raw(self, name: str) -> np.ndarray:
        info = self.entries[name]
        start = info.offset or 0
        return np.frombuffer(self.buffer(), dtype=np.uint8, count=info.nbytes, offset=start)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                # Tensors handed out still view the map; it closes when they are freed.
                pass
            self._map = None


def _read_header(path: Path, size: int) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    if size < 8:
        raise FormatError(f"truncated SafeTensors file: {size} bytes, the 8-byte header length is missing", path, 0)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8:
            raise FormatError(
                f"SafeTensors header length {n:,} exceeds the {size - 8:,} bytes after it (truncated file?)", path, 0
            )
        if n > MAX_HEADER_BYTES:
            raise FormatError(f"SafeTensors header of {n:,} bytes is larger than the 100 MB limit", path, 0)
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError("SafeTensors header is not valid UTF-8", path, 8 + e.start) from None
    try:
        header = json.loads(text)
    except json.JSONDecodeError as e:
        offset = 8 + len(text[: e.pos].encode())
        raise FormatError(f"SafeTensors header is not valid JSON ({e.msg})", path, offset) from None
    if not isinstance(header, dict):
        raise FormatError(f"SafeTensors header is a JSON {type(header).__name__}, not an object", path, 8)
    data_start = 8 + n
    data_size = size - data_start
    user_metadata = header.pop("__metadata__", None) or {}
    if not isinstance(user_metadata, dict) or not all(isinstance(v, str) for v in user_metadata.values()):
        raise FormatError("SafeTensors __metadata__ must map strings to strings", path, 8)
    entries: dict[str, TensorInfo] = {}
    for name, spec in header.items():
        entries[name] = _check_entry(path, name, spec, data_start, data_size)
    _check_overlaps(path, entries)
    return entries, user_metadata, data_start


def _check_entry(path: Path, name: str, spec: Any, data_start: int, data_size: int) -> TensorInfo:
    where = f"tensor {name!r}"
    if not isinstance(spec, dict):
        raise FormatError(f"{where}: header entry is not an object", path, 8)
    dtype = spec.get("dtype")
    if dtype not in DTYPES:
        raise FormatError(f"{where}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})", path, 8)
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise FormatError(f"{where}: shape {shape!r} is not a list of non-negative integers", path, 8)
    offsets = spec.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise FormatError(f"{where}: data_offsets {offsets!r} is not [begin, end] with 0 <= begin <= end", path, 8)
    begin, end = offsets
    if end > data_size:
        raise FormatError(
            f"{where}: data ends at byte {data_start + end:,}, "
            f"past the end of the {data_start + data_size:,}-byte file",
            path,
            data_start + begin,
        )
    numel = 1
    for d in shape:
        numel *= d
    want = numel * DTYPES[dtype][0]
    if end - begin != want:
        raise FormatError(
            f"{where}: {end - begin:,} data bytes, but {dtype}{shape} needs {want:,}", path, data_start + begin
        )
    return TensorInfo(name, tuple(shape), dtype, want, data_start + begin, str(path))


def _check_overlaps(path: Path, entries: dict[str, TensorInfo]) -> None:
    spans = sorted((t.offset or 0, (t.offset or 0) + t.nbytes, t.name) for t in entries.values() if t.nbytes)
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise FormatError(f"tensors {a!r} and {b!r} overlap", path, begin)


class SafeTensorsFile(ModelFile):
    format = "SafeTensors"

    def __init__(self, path: Path, shards: list[Path], weight_map: dict[str, str] | None = None,
                 index_metadata: Mapping[str, Any] | None = None):
        super().__init__(path)
        self._shards = {p.name: _Shard(p) for p in shards}
        self._index_metadata = dict(index_metadata or {})
        self._where: dict[str, _Shard] = {}
        for shard in self._shards.values():
            for name in shard.entries:
                self._where[name] = shard
        if weight_map is not None:
            for name, file in weight_map.items():
                shard = self._shards[Path(file).name]
                if name not in shard.entries:
                    raise FormatError(f"index maps tensor {name!r} to {file}, which does not hold it", path)
                self._where[name] = shard

    def tensor_infos(self) -> list[TensorInfo]:
        return [shard.entries[name] for name, shard in self._where.items()]

    def metadata(self) -> Metadata:
        infos = self.tensor_infos()
        counts: dict[str, int] = {}
        for t in infos:
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        extra: dict[str, Any] = {}
        for shard in self._shards.values():
            extra.update(shard.user_metadata)
        extra.update({k: v for k, v in self._index_metadata.items()})
        if len(self._shards) > 1:
            extra["shards"] = sorted(self._shards)
        name = self.path.name
        for suffix in (".index.json", ".json", ".safetensors"):
            name = name.removesuffix(suffix)
        return Metadata(
            format=self.format,
            quantization=dominant_type(counts),
            name=name,
            architecture=extra.get("architecture") or extra.get("model_type"),
            parameter_count=sum(t.numel for t in infos),
            tensor_count=len(infos),
            file_size=sum(s.size for s in self._shards.values()),
            extra=extra,
        )

    def _shard(self, name: str) -> _Shard:
        try:
            return self._where[name]
        except KeyError:
            raise TensorLogicError(f"{self.path}: no tensor named {name!r}") from None

    def read_numpy(self, name: str) -> np.ndarray:
        shard = self._shard(name)
        info = shard.entries[name]
        raw = shard.raw(name)
        stored = DTYPES[info.dtype][1]
        if stored is not None:
            return raw.view(stored).reshape(info.shape)
        if info.dtype == "BF16":
            return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(info.shape)
        return _FP8_TABLES[info.dtype][raw].reshape(info.shape)

    def read_torch(self, name: str, device: Any = None, dtype: Any = None) -> torch.Tensor:
        import torch

        shard = self._shard(name)
        info = shard.entries[name]
        raw = torch.from_numpy(shard.raw(name))
        t = raw.view(getattr(torch, _TORCH_NAMES[info.dtype])).reshape(info.shape)
        return t.to(device) if device is not None else t

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()


def open_safetensors(found: Detected) -> SafeTensorsFile:
    if found.variant == "sharded":
        return _open_sharded(found.path)
    return SafeTensorsFile(found.path, [found.path])


def _open_sharded(index: Path) -> SafeTensorsFile:
    doc = json.loads(index.read_bytes())
    weight_map = doc["weight_map"]
    folder = index.parent
    shards = []
    for file in sorted(set(weight_map.values())):
        shard = (folder / file).resolve()
        if shard.parent != folder.resolve():
            raise FormatError(f"index names shard {file!r} outside its folder", index)
        if not shard.is_file():
            raise FormatError(f"shard {file} listed in the index is missing", index)
        shards.append(shard)
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return SafeTensorsFile(index, shards, weight_map, meta)


# ---------------------------------------------------------------------------------------------- writing

_FROM_TORCH = {v: k for k, v in _TORCH_NAMES.items()}
_FROM_NUMPY = {np.dtype(v[1]).str: k for k, v in DTYPES.items() if v[1] is not None}


def _as_bytes(name: str, value: Any) -> tuple[str, list[int], memoryview]:
    if isinstance(value, (np.ndarray, np.generic, int, float, bool)):
        arr = np.ascontiguousarray(value)
        dtype = _FROM_NUMPY.get(arr.dtype.newbyteorder("<").str)
        if dtype is None:
            raise TensorLogicError(f"tensor {name!r}: numpy dtype {arr.dtype} has no SafeTensors equivalent")
        return dtype, list(arr.shape), memoryview(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).cast("B")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        dtype = _FROM_TORCH.get(str(value.dtype).removeprefix("torch."))
        if dtype is None:
            raise TensorLogicError(f"tensor {name!r}: torch dtype {value.dtype} has no SafeTensors equivalent")
        t = value.detach().to("cpu").contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
        return dtype, list(t.shape), memoryview(data).cast("B")
    raise TensorLogicError(f"tensor {name!r}: cannot save a {type(value).__name__}; give a torch.Tensor or numpy array")


def save_safetensors(tensors: Mapping[str, Any], path: Path, metadata: Mapping[str, str] | None = None,
                     **options: Any) -> Path:
    """Write ``tensors`` to ``path`` atomically: a temp file in the same folder, fsync, then rename."""
    if options:
        raise TensorLogicError(f"save as SafeTensors takes no options {sorted(options)}")
    items = []
    for name in tensors:
        if not isinstance(name, str) or name == "__metadata__":
            raise TensorLogicError(f"tensor name {name!r} is not allowed in SafeTensors")
        items.append((name, *_as_bytes(name, tensors[name])))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape, data in items:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.nbytes]}
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(text).to_bytes(8, "little"))
            f.write(text)
            for _, _, _, data in items:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
