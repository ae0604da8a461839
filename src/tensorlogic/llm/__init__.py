"""Local LLM inference from GGUF files: tokenizers, quantized kernels, the transformer and generation.

``load_llm(path)`` gives an ``LLM`` (``generate``, ``stream``, ``chat``, ``logits``); ``tl.load_model(path)`` on a
GGUF exposes the same through ``Model.generate`` / ``chat`` / ``logits`` / ``tokenizer``.
"""

from .config import LLMConfig
from .generate import LLM, Generation, load_llm
from .sampling import SamplingParams

__all__ = ["LLM", "Generation", "LLMConfig", "SamplingParams", "load_llm"]
