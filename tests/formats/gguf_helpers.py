"""A byte-level GGUF builder for damaged files: it writes whatever it is told and records field offsets.

Well-formed fixtures come from gguf-py's ``GGUFWriter``; this builder exists because that writer
refuses to produce the broken headers the bad-input tests need.
"""

from __future__ import annotations

import struct
from pathlib import Path

STRING, ARRAY, UINT32 = 8, 9, 4


class Builder:
    """Append GGUF fields in order; ``at[label]`` is the byte offset where a labelled field starts."""

    def __init__(self, version: int = 3, order: str = "<"):
        self.order = order
        self.buf = bytearray()
        self.at: dict[str, int] = {}
        self.mark("magic")
        self.buf += b"GGUF"
        self.u32(version, "version")

    def mark(self, label: str | None) -> None:
        if label:
            self.at[label] = len(self.buf)

    def raw(self, data: bytes, label: str | None = None) -> Builder:
        self.mark(label)
        self.buf += data
        return self

    def u32(self, v: int, label: str | None = None) -> Builder:
        return self.raw(struct.pack(self.order + "I", v), label)

    def u64(self, v: int, label: str | None = None) -> Builder:
        return self.raw(struct.pack(self.order + "Q", v), label)

    def string(self, s: str | bytes, label: str | None = None, length: int | None = None) -> Builder:
        data = s.encode() if isinstance(s, str) else s
        self.u64(len(data) if length is None else length, label)
        return self.raw(data)

    def counts(self, n_tensors: int, n_kv: int) -> Builder:
        return self.u64(n_tensors, "n_tensors").u64(n_kv, "n_kv")

    def kv_u32(self, key: str, value: int, label: str | None = None) -> Builder:
        return self.string(key, label).u32(UINT32).u32(value)

    def kv_str(self, key: str, value: str | bytes, label: str | None = None) -> Builder:
        self.string(key, label).u32(STRING)
        return self.string(value, f"{label}.value" if label else None)

    def tensor(self, name: str | bytes, dims: list[int], type_id: int, offset: int, label: str | None = None,
               n_dims: int | None = None) -> Builder:
        self.string(name, label)
        self.u32(len(dims) if n_dims is None else n_dims, f"{label}.n_dims" if label else None)
        for i, d in enumerate(dims):
            self.u64(d, f"{label}.ne{i}" if label else None)
        self.u32(type_id, f"{label}.type" if label else None)
        return self.u64(offset, f"{label}.offset" if label else None)

    def align(self, n: int = 32) -> Builder:
        self.buf += bytes(-len(self.buf) % n)
        return self

    def write(self, path: Path) -> Path:
        path.write_bytes(bytes(self.buf))
        return path
