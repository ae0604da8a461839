"""Batch inference over many inputs: Ray Data actors (``predict_dataset``) or this process (``run_job``).

``predict_dataset(model, dataset)`` gives a lazy ``ray.data.Dataset`` of predictions; ``run_job`` reads a folder
or Parquet file and writes ``OUT.parquet/part-*.parquet`` atomically, resumable; ``load_array`` reads an array
cell of the output. Ray is optional (``pip install 'ray[data]'``): it is imported only when a job runs on it.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"predict_dataset": "dataset", "run_job": "dataset", "connect": "dataset", "JobResult": "dataset",
          "BatchPredictor": "worker", "load_array": "worker", "open_source": "sources", "PartWriter": "output"}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
