"""Core ML reading: placeholder until the container reader lands."""

from __future__ import annotations

from ..errors import UnsupportedError
from .detect import Detected


def open_coreml(found: Detected):
    raise UnsupportedError(
        f"{found.path}: Core ML model ({found.variant}) detected, but Core ML reading is not implemented yet"
    )
