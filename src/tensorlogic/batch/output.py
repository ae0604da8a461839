"""The output of a batch job: a folder of Parquet parts (``OUT.parquet/part-*.parquet``), read as one table by
pyarrow, pandas and Ray alike.

Each part is written to a hidden temporary file and renamed into place, so a part is either whole or absent:
after a killed run the folder holds only complete rows, and ``resume`` reads their keys to skip them. Nothing
that was in the folder before is overwritten or removed, except the temporary files of an earlier killed run.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import FormatError, InputError
from .worker import ERROR, KEY


class PartWriter:
    """Collects result tables and writes them as parts of at least ``part_rows`` rows (or every ``flush_s``
    seconds, so a slow job keeps its progress), each atomically."""

    def __init__(self, folder: str | os.PathLike, resume: bool = False, part_rows: int = 4096,
                 flush_s: float = 30.0):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"--output-parquet {folder}: exists and is a file; the output is a folder of "
                             "Parquet parts: choose a new name")
        self.parts = sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []
        if self.folder.is_dir() and not resume and any(self.folder.iterdir()):
            raise InputError(f"--output-parquet {folder}: exists and is not empty; pass --resume to skip the rows "
                             "it holds, or choose a new name")
        for stale in self.folder.glob(".part-*.tmp"):
            stale.unlink()
        self.run_id = uuid.uuid4().hex[:8]
        self.part_rows = part_rows
        self.flush_s = flush_s
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._last_flush = time.monotonic()
        self._count = 0
        self.rows = 0
        self.errors = 0

    def done_keys(self) -> set[str]:
        """The keys of every row already written (the rows ``--resume`` skips)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys: set[str] = set()
        for part in self.parts:
            try:
                column = pq.read_table(part, columns=[KEY]).column(KEY)
            except (OSError, KeyError, pa.ArrowException) as e:
                raise FormatError(f"not a part of a batch output ({' '.join(str(e).split())}); move it away to "
                                  "resume", part) from None
            keys.update(k for k in column.to_pylist() if k is not None)
        return keys

    def add(self, table: Any) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        self.errors += table.num_rows - table.column(ERROR).null_count
        if self._pending_rows >= self.part_rows or time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._last_flush = time.monotonic()
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self.folder.mkdir(parents=True, exist_ok=True)  # only now: a job that fails to start leaves nothing
        name = f"part-{self.run_id}-{self._count:05d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / name)
        self._count += 1
        self._pending = []
        self._pending_rows = 0
