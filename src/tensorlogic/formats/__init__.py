"""Format readers and writers, chosen by content (see ``detect.py``), imported only when needed."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TensorLogicError
from .detect import Detected, detect

if TYPE_CHECKING:
    from ..model import ModelFile

# format name -> "module:function" taking a Detected and returning a ModelFile
OPENERS = {
    "SafeTensors": "tensorlogic.formats.safetensors:open_safetensors",
    "GGUF": "tensorlogic.formats.gguf:open_gguf",
    "CoreML": "tensorlogic.formats.coreml:open_coreml",
}

# file suffix -> "module:function" taking (tensors, path, metadata=..., **options)
SAVERS = {
    ".safetensors": "tensorlogic.formats.safetensors:save_safetensors",
    ".gguf": "tensorlogic.formats.gguf:save_gguf",
}


def _resolve(target: str) -> Callable[..., Any]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def open_model_file(path: str | os.PathLike) -> ModelFile:
    """Detect the format of ``path`` by content and open it (metadata only; no tensor is read)."""
    found: Detected = detect(path)
    return _resolve(OPENERS[found.format])(found)


def saver_for(path: str | os.PathLike) -> Callable[..., Path]:
    suffix = Path(path).suffix.lower()
    if suffix not in SAVERS:
        known = ", ".join(sorted(SAVERS))
        raise TensorLogicError(f"{path}: cannot save as {suffix or 'a file without suffix'}; use one of {known}")
    return _resolve(SAVERS[suffix])
