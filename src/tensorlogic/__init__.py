"""TensorLogic for Python: run Core ML models anywhere, load SafeTensors and GGUF by content.

``import tensorlogic as tl`` is light: torch is imported only when a tensor or a prediction needs it.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    FormatError,
    InputError,
    OpError,
    ScriptError,
    TensorLogicError,
    UnsupportedError,
)
from .model import FeatureSpec, Metadata, Model, TensorInfo, load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "FeatureSpec",
    "FormatError",
    "InputError",
    "Metadata",
    "Model",
    "OpError",
    "ScriptError",
    "TensorInfo",
    "TensorLogicError",
    "UnsupportedError",
    "coreml",
    "load_model",
    "save_model",
]


def __getattr__(name: str) -> Any:
    # `tl.coreml` is imported on first use so that `import tensorlogic` stays fast.
    if name == "coreml":
        import importlib

        return importlib.import_module(".coreml", __name__)
    raise AttributeError(f"module 'tensorlogic' has no attribute {name!r}")
