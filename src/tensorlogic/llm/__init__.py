"""Local LLM inference from GGUF files: tokenizers, quantized kernels, the transformer and generation.

``load_llm(path)`` gives an ``LLM`` (``generate``, ``stream``, ``chat``, ``logits``); ``tl.load_model(path)`` on a
GGUF exposes the same through ``Model.generate`` / ``chat`` / ``logits`` / ``tokenizer``.

The names load on first use, so ``tensorlogic.llm.cli`` (imported by every ``tl`` command) does not pull in
torch for ``tl inspect``.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"LLM": "generate", "Generation": "generate", "load_llm": "generate",
          "LLMConfig": "config", "SamplingParams": "sampling"}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
