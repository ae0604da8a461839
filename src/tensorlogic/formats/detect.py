"""Decide a model file's format from its bytes; the extension is only a hint for error messages.

Also names what users actually point us at by mistake (Git LFS pointers, HTML error pages, pickled
PyTorch checkpoints, sharded-checkpoint index files, zipped packages) in one line.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import FormatError

SNIFF_BYTES = 4096
# Index files larger than this are not sharded-checkpoint indexes; never read them whole.
MAX_INDEX_BYTES = 64 << 20


@dataclass(frozen=True)
class Detected:
    """A detected format. ``variant`` refines it:

    SafeTensors: ``file`` | ``sharded`` (``path`` is the index JSON);
    GGUF: ``file`` | ``split`` (``path`` is the first part);
    CoreML: ``mlmodel`` | ``mlpackage`` | ``mlmodelc``.
    """

    format: str
    variant: str
    path: Path


_SUFFIX_FORMAT = {
    ".safetensors": "SafeTensors",
    ".gguf": "GGUF",
    ".mlmodel": "CoreML",
    ".mlpackage": "CoreML",
    ".mlmodelc": "CoreML",
}


def _named_as(path: Path) -> str:
    expected = _SUFFIX_FORMAT.get(path.suffix.lower())
    return f" (named {path.suffix} as if {expected})" if expected else ""


def detect(path: str | os.PathLike) -> Detected:
    p = Path(path)
    if not p.exists():
        raise FormatError("no such file or directory", p)
    if p.is_dir():
        return _detect_dir(p)
    size = p.stat().st_size
    if size == 0:
        raise FormatError(f"empty file{_named_as(p)}", p)
    with open(p, "rb") as f:
        head = f.read(SNIFF_BYTES)
    return _detect_bytes(p, head, size)


def _detect_dir(p: Path) -> Detected:
    if (p / "Manifest.json").is_file():
        return Detected("CoreML", "mlpackage", p)
    if (p / "model.mil").is_file() or (p / "coremldata.bin").is_file():
        return Detected("CoreML", "mlmodelc", p)
    indexes = sorted(p.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        return Detected("SafeTensors", "sharded", indexes[0])
    shards = sorted(p.glob("*.safetensors"))
    if len(shards) == 1:
        return Detected("SafeTensors", "file", shards[0])
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return detect(ggufs[0])
    firsts = [g for g in ggufs if re.search(r"-00001-of-\d{5}\.gguf$", g.name)]
    if len(firsts) == 1:
        return detect(firsts[0])  # the parts of one split model
    if p.suffix.lower() == ".mlpackage":
        raise FormatError("Core ML package folder without Manifest.json (incomplete copy?)", p)
    if p.suffix.lower() == ".mlmodelc":
        raise FormatError("compiled Core ML folder without model.mil or coremldata.bin (incomplete copy?)", p)
    names = sorted(c.name for c in p.iterdir())
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    raise FormatError(
        "directory is not a model: no Manifest.json (.mlpackage), model.mil/coremldata.bin (.mlmodelc), "
        f"single *.safetensors, *.safetensors.index.json or single *.gguf; it holds: {shown or 'nothing'}",
        p,
    )


_GIT_LFS = b"version https://git-lfs.github.com/spec/"
_HTML = re.compile(rb"^\s*(<!doctype html|<html|<head|<body|<\?xml)", re.IGNORECASE)


def _detect_bytes(p: Path, head: bytes, size: int) -> Detected:
    if head.startswith(b"GGUF") or head.startswith(b"FUGG"):
        return _detect_gguf(p, head, size)
    if head.startswith(_GIT_LFS):
        text = head.decode("utf-8", "replace")
        oid = re.search(r"oid sha256:([0-9a-f]{12})", text)
        want = re.search(r"size (\d+)", text)
        what = f" for a {int(want.group(1)):,}-byte file" if want else ""
        sha = f" (sha256 {oid.group(1)}…)" if oid else ""
        raise FormatError(
            f"Git LFS pointer{what}{sha}, not the model itself: run `git lfs pull` to fetch the real file", p
        )
    if _HTML.match(head):
        raise FormatError(
            "HTML page, not a model: the download probably returned an error or login page", p
        )
    if head.startswith(b"PK\x03\x04"):
        if b"Manifest.json" in head or b".mlpackage/" in head:
            raise FormatError("ZIP archive of a Core ML package: unzip it and load the .mlpackage folder", p)
        raise FormatError(
            "ZIP archive (a PyTorch .pt/.pth/.bin checkpoint or similar); TensorLogic never unpickles: "
            "convert it to SafeTensors first",
            p,
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise FormatError("Python pickle (a legacy PyTorch checkpoint); TensorLogic never unpickles", p)
    if len(head) >= 9 and head[8:9] == b"{":
        return Detected("SafeTensors", "file", p)
    if len(head) >= 9 and head[8:9] == b"[" and struct.unpack_from("<Q", head)[0] <= size - 8:
        return Detected("SafeTensors", "file", p)  # the reader says why a list header is wrong
    if head.lstrip()[:1] in (b"{", b"["):
        return _detect_json(p, size)
    if _looks_like_coreml_proto(head):
        return Detected("CoreML", "mlmodel", p)
    if size < 8 and p.suffix.lower() == ".safetensors":
        raise FormatError(f"truncated SafeTensors file: {size} bytes, the 8-byte header length is missing", p)
    shown = head[:8].hex(" ")
    raise FormatError(f"unknown format{_named_as(p)}: first bytes {shown}", p, 0)


def _detect_gguf(p: Path, head: bytes, size: int) -> Detected:
    if len(head) < 8:
        raise FormatError(f"truncated GGUF file: {size} bytes, the version field is missing", p, 4)
    if head.startswith(b"FUGG"):
        raise FormatError("GGUF magic is byte-swapped ('FUGG'): not a valid GGUF file", p, 0)
    le = struct.unpack_from("<I", head, 4)[0]
    be = struct.unpack_from(">I", head, 4)[0]
    if not (1 <= le <= 3 or 1 <= be <= 3):
        raise FormatError(f"GGUF version {le} is not supported (this reader knows versions 2 and 3)", p, 4)
    if re.search(r"-\d{5}-of-\d{5}\.gguf$", p.name):
        return Detected("GGUF", "split", p)
    return Detected("GGUF", "file", p)


def _detect_json(p: Path, size: int) -> Detected:
    if size > MAX_INDEX_BYTES:
        raise FormatError(f"JSON text of {size:,} bytes, not a model", p)
    try:
        doc = json.loads(p.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        pos = getattr(e, "pos", None) if isinstance(e, json.JSONDecodeError) else e.start
        raise FormatError("text starting with '{' or '[' that is neither JSON nor a model", p, pos) from None
    if isinstance(doc, dict) and isinstance(doc.get("weight_map"), dict):
        files = {str(v) for v in doc["weight_map"].values()}
        if files and all(f.endswith(".safetensors") for f in files):
            return Detected("SafeTensors", "sharded", p)
        other = sorted(f for f in files if not f.endswith(".safetensors"))
        raise FormatError(
            f"sharded checkpoint index whose shards are not SafeTensors (e.g. {other[0] if other else '?'}); "
            "TensorLogic never unpickles: convert the shards to SafeTensors",
            p,
        )
    if isinstance(doc, dict) and "rootModelIdentifier" in doc and "itemInfoEntries" in doc:
        raise FormatError("Core ML package manifest: load the .mlpackage folder that holds it", p)
    raise FormatError("JSON file (a config or tokenizer?), not a model", p)


# Field numbers of Core ML's Model message: specificationVersion=1, description=2, and the model
# oneof fields 200..560 plus isUpdatable=10, linkedModel etc.; a real .mlmodel begins with field 1.
def _looks_like_coreml_proto(head: bytes) -> bool:
    if len(head) < 2 or head[0] != 0x08:
        return False
    version, pos = _varint(head, 1)
    if version is None or not 1 <= version <= 20 or pos >= len(head):
        return False
    tag, _ = _varint(head, pos)
    if tag is None:
        return False
    return (tag >> 3) in (2, 10) or 200 <= (tag >> 3) <= 3000


def _varint(buf: bytes, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    while pos < len(buf) and shift < 64:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    return None, pos
