"""Where a batch job's rows come from: a folder of files or a Parquet file, each row with a stable ``key``.

The key is what ``--resume`` matches on: a file's path relative to the folder, or a Parquet file's own ``key``
column (its row number where it has none). Rows already done are dropped here, before any work is scheduled.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, InputError
from .worker import FILE_COLUMN, KEY

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FILE_SUFFIXES = (*IMAGE_SUFFIXES, ".npy")


class Source:
    """The rows of one job: ``len()``, in-process batches, and the same rows as a Ray Dataset."""

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError

    def dataset(self) -> Any:
        raise NotImplementedError


class FolderSource(Source):
    """Every image and ``.npy`` file under ``folder`` (recursively, hidden ones skipped), sorted by path."""

    def __init__(self, folder: str | os.PathLike, skip: set[str] | frozenset[str] = frozenset()):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"--input-dir {folder}: no such folder")
        found = []
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if not name.startswith(".") and name.lower().endswith(FILE_SUFFIXES):
                    path = Path(root) / name
                    found.append((path.relative_to(self.folder).as_posix(), path))
        if not found:
            raise InputError(f"--input-dir {folder}: no image or .npy files ({', '.join(FILE_SUFFIXES)})")
        self.files = sorted((k, p) for k, p in found if k not in skip)

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.files), batch_size):
            chunk = self.files[start : start + batch_size]
            yield {KEY: np.array([k for k, _ in chunk], dtype=object),
                   FILE_COLUMN: np.array([_read_bytes(p) for _, p in chunk], dtype=object)}

    def dataset(self) -> Any:
        import ray.data

        # Bytes only: decoding happens in the actors, row by row, so a corrupt file fails its own row.
        root = self.folder.resolve()
        ds = ray.data.read_binary_files([str(root / k) for k, _ in self.files], include_paths=True)
        return ds.map_batches(_KeyFromPath(str(root)), batch_format="numpy")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""  # unreadable now: the worker records the row as unreadable instead of stopping the job


class _KeyFromPath:
    """Ray's ``path`` column (absolute) as the folder-relative key the in-process reader gives."""

    def __init__(self, root: str):
        self.root = root

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [Path(os.path.relpath(p, self.root)).as_posix() for p in batch["path"]]
        return {KEY: np.array(keys, dtype=object), FILE_COLUMN: batch[FILE_COLUMN]}


class ParquetSource(Source):
    """The rows of a Parquet file: a column per model input (or the prompt column), keyed by its ``key``
    column or else its row number. The file is read once here; Ray gets the rows still to do."""

    def __init__(self, path: str | os.PathLike, skip: set[str] | frozenset[str] = frozenset()):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"--input-parquet {path}: no such file")
        try:
            table = pq.read_table(self.path, memory_map=True)
        except (OSError, pa.ArrowException) as e:
            raise FormatError(f"not a readable Parquet file ({' '.join(str(e).split())})", self.path) from None
        if KEY in table.column_names:
            keys = pc.cast(table.column(KEY), pa.string())
            table = table.drop_columns([KEY])
        else:
            keys = pa.array([str(i) for i in range(table.num_rows)], pa.string())
        table = table.append_column(KEY, keys)
        if skip:
            table = table.filter(pc.invert(pc.is_in(table.column(KEY), value_set=pa.array(sorted(skip), pa.string()))))
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for batch in self.table.to_batches(max_chunksize=batch_size):
            yield {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}

    def dataset(self) -> Any:
        import ray.data

        return ray.data.from_arrow(self.table)


def open_source(input_dir: str | None = None, input_parquet: str | None = None,
                skip: set[str] | frozenset[str] = frozenset()) -> Source:
    """The rows of ``input_dir`` or ``input_parquet`` (exactly one), less the keys in ``skip``."""
    if (input_dir is None) == (input_parquet is None):
        raise InputError("give exactly one of --input-dir and --input-parquet")
    if input_dir is not None:
        return FolderSource(input_dir, skip)
    return ParquetSource(input_parquet, skip)
