"""``.mlpackage`` folders: Manifest.json → the root model item (``model.mlmodel``) and its weights folder.

A package is ``Manifest.json`` plus ``Data/``; the manifest's ``rootModelIdentifier`` names an entry of
``itemInfoEntries`` whose ``path`` is relative to ``Data/``. Blob paths in the model
(``@model_path/weights/weight.bin``) resolve against the folder holding ``model.mlmodel``. Item paths
that leave the package (absolute, ``..``, symlinks pointing outside) are refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import FormatError

MANIFEST = "Manifest.json"
MAX_MANIFEST_BYTES = 16 << 20


@dataclass(frozen=True)
class PackageLayout:
    """Where a package's parts live. ``model`` is the spec file; ``model_dir`` anchors ``@model_path``."""

    root: Path
    model: Path
    model_dir: Path
    items: dict[str, str]


def read_manifest(package: Path) -> dict:
    path = package / MANIFEST
    if not path.is_file():
        raise FormatError("Core ML package without Manifest.json", package)
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise FormatError(f"Manifest.json of {size:,} bytes is too large to be a manifest", path)
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as e:
        raise FormatError("Manifest.json is not UTF-8 text", path, e.start) from None
    except json.JSONDecodeError as e:
        raise FormatError(f"Manifest.json is not valid JSON: {e.msg}", path, e.pos) from None
    if not isinstance(doc, dict):
        raise FormatError("Manifest.json must hold a JSON object", path, 0)
    return doc


def inside(root: Path, relative: str, what: str, manifest: Path, where: str = "package folder") -> Path:
    """``root / relative``, refusing paths that are absolute, climb with ``..`` or resolve outside ``root``.

    ``manifest`` is the file the path came from (named in errors); ``where`` names ``root`` in them.
    """
    pure = PurePosixPath(relative.replace("\\", "/"))
    if not relative or pure.is_absolute() or ".." in pure.parts or (len(relative) > 1 and relative[1] == ":"):
        raise FormatError(f"{what} path {relative!r} escapes the {where}; refusing to follow it", manifest)
    target = root.joinpath(*pure.parts)
    real_root = os.path.realpath(root)
    real = os.path.realpath(target)
    if os.path.commonpath([real_root, real]) != real_root:
        raise FormatError(
            f"{what} path {relative!r} resolves outside the {where} (a symlink?); refusing to follow it",
            manifest,
        )
    return target


def open_package(package: str | os.PathLike) -> PackageLayout:
    """Resolve a package's root model and weights folder from its manifest, checking every step."""
    root = Path(package)
    manifest = root / MANIFEST
    doc = read_manifest(root)
    entries = doc.get("itemInfoEntries")
    root_id = doc.get("rootModelIdentifier")
    if not isinstance(entries, dict) or not isinstance(root_id, str):
        raise FormatError("Manifest.json lacks rootModelIdentifier or itemInfoEntries", manifest)
    items: dict[str, str] = {}
    for ident, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise FormatError(f"manifest item {ident!r} has no path", manifest)
        items[ident] = entry["path"]
    if root_id not in items:
        raise FormatError(f"rootModelIdentifier {root_id!r} is not among the manifest's items", manifest)
    data = root / "Data"
    for ident, rel in items.items():
        inside(data, rel, f"manifest item {ident!r}", manifest)
    model = inside(data, items[root_id], "root model", manifest)
    if not model.is_file():
        raise FormatError(
            f"manifest's root model Data/{items[root_id]} is missing (incomplete copy of the package?)", manifest
        )
    return PackageLayout(root=root, model=model, model_dir=model.parent, items=items)
