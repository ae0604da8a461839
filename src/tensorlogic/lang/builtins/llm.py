"""LLM builtins: the original's lazy model loaders and weight caches, tokenizers, and generate.

The loaders return ``models.CachedModel``: a GGUF (or SafeTensors) file whose tensors are read and converted on
first access, so ``load_model_f16`` on a 1.1B model returns at once. They print the original's lines.
Tokenizers come from ``tensorlogic.llm.tokenizer`` (a tokenizer.json or a GGUF's own vocabulary); token ids are
plain lists of ints, the value ``embedding``, ``append`` and ``len`` take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..values import BoundMethod, BuiltinError, Context, Vec, as_int, first_line, type_name
from . import builtin
from .models import CachedModel, open_cached


def _print(ctx: Context, *lines: str) -> None:
    for line in lines:
        print(line, file=ctx.stdout())


def _path_text(path: Any, what: str) -> str:
    if not isinstance(path, str):
        raise BuiltinError(f"{what} takes a path string, got {type_name(path)}")
    return path


def _capacity(value: Any) -> int:
    n = as_int(value, "cache_capacity")
    if n < 1:
        raise BuiltinError(f"cache_capacity must be at least 1, got {n}")
    return n


@builtin(ctx=True)
def load_model_f16(ctx: Context, path: Any) -> CachedModel:
    """load_model_f16("model.gguf"): a lazily read GGUF model whose tensors come out float16."""
    model = open_cached(ctx, _path_text(path, "load_model_f16"), torch.float16)
    _print(ctx, f"Created mmap loader for: {path}", f"  Tensors: {len(model.names())}",
           f"  Version: {model.metadata.extra.get('gguf_version', '?')}", "Loaded model as f16 (mmap zero-copy)")
    return model


@builtin(ctx=True)
def load_model_f32(ctx: Context, path: Any) -> CachedModel:
    """load_model_f32("model.gguf"): a lazily read GGUF model whose tensors come out float32.

    The original keeps at most 200 tensors; here every tensor read is kept (a 201-tensor model read in layer
    order would otherwise miss the cache on every access)."""
    model = open_cached(ctx, _path_text(path, "load_model_f32"), torch.float32)
    _print(ctx, f"Loaded model from: {path} (f32, lazy)", f"  Weights available: {len(model.names())}")
    return model


def _weight_cache(ctx: Context, path: Any, capacity: Any, dtype: torch.dtype, gguf: bool, name: str) -> CachedModel:
    n = _capacity(capacity)
    model = open_cached(ctx, _path_text(path, name), dtype, n, what=name)
    if gguf and model.file.format != "GGUF":
        raise BuiltinError(f"{ctx.path(path)}: {name} needs a GGUF file, this is {model.file.format}")
    kind = "GGUF weight cache" if gguf else "weight cache"
    bits = "f16" if dtype == torch.float16 else "f32"
    _print(ctx, f"Created {kind} for: {path} ({bits}, capacity={n})", f"  Weights available: {len(model.names())}")
    return model


@builtin(ctx=True)
def load_weight_cache_f16(ctx: Context, path: Any, cache_capacity: Any) -> CachedModel:
    """load_weight_cache_f16(path, capacity): float16 tensors read on demand, at most capacity kept (LRU)."""
    return _weight_cache(ctx, path, cache_capacity, torch.float16, False, "load_weight_cache_f16")


@builtin(ctx=True)
def load_weight_cache_f32(ctx: Context, path: Any, cache_capacity: Any) -> CachedModel:
    """load_weight_cache_f32(path, capacity): float32 tensors read on demand, at most capacity kept (LRU)."""
    return _weight_cache(ctx, path, cache_capacity, torch.float32, False, "load_weight_cache_f32")


@builtin(ctx=True)
def load_weight_cache_gguf_f16(ctx: Context, path: Any, cache_capacity: Any) -> CachedModel:
    """load_weight_cache_gguf_f16(path, capacity): a GGUF's tensors dequantized to float16 on demand (LRU)."""
    return _weight_cache(ctx, path, cache_capacity, torch.float16, True, "load_weight_cache_gguf_f16")


@builtin(ctx=True)
def load_weight_cache_gguf_f32(ctx: Context, path: Any, cache_capacity: Any) -> CachedModel:
    """load_weight_cache_gguf_f32(path, capacity): a GGUF's tensors dequantized to float32 on demand (LRU)."""
    return _weight_cache(ctx, path, cache_capacity, torch.float32, True, "load_weight_cache_gguf_f32")


# ---------------------------------------------------------------------------------------------- cndl_* on models


def _gguf(ctx: Context, path: Any, what: str) -> CachedModel:
    model = open_cached(ctx, _path_text(path, what), torch.float32, 1, what=what)
    if model.file.format != "GGUF":
        raise BuiltinError(f"{ctx.path(path)}: {what} needs a GGUF file, this is {model.file.format}")
    return model


def _shape(dims: Any) -> str:
    return "[" + ", ".join(str(int(d)) for d in dims) + "]"


@builtin(ctx=True)
def cndl_load_gguf_tensor(ctx: Context, path: Any, tensor_name: Any) -> torch.Tensor:
    """cndl_load_gguf_tensor(path, name): one tensor of a GGUF file, dequantized; F16 stays float16, the rest
    become float32 (as Candle's dequantize gives)."""
    model = _gguf(ctx, path, "cndl_load_gguf_tensor")
    if not isinstance(tensor_name, str):
        raise BuiltinError(f"cndl_load_gguf_tensor tensor_name must be a string, got {type_name(tensor_name)}")
    infos = {i.name: i for i in model.tensor_infos()}
    if tensor_name not in infos:
        import difflib

        close = difflib.get_close_matches(tensor_name, sorted(infos), n=1, cutoff=0.0)
        hint = f"; the closest tensor is '{close[0]}'" if close else ""
        raise BuiltinError(f"no tensor named '{tensor_name}' in {model.path.name}{hint}")
    dtype = torch.float16 if infos[tensor_name].dtype == "F16" else torch.float32
    t = model.get_tensor(tensor_name, dtype=dtype, device=ctx.torch_device())
    bits = "f16" if dtype == torch.float16 else "f32"
    _print(ctx, f"Loaded tensor '{tensor_name}' from {path} ({bits}, shape: {_shape(t.shape)})")
    return t


@builtin(ctx=True)
def cndl_list_gguf_tensors(ctx: Context, path: Any) -> None:
    """cndl_list_gguf_tensors(path): prints the GGUF version and each tensor's name, type and dimensions
    (GGUF order, innermost first, as the original prints them)."""
    model = _gguf(ctx, path, "cndl_list_gguf_tensors")
    infos = model.tensor_infos()
    lines = [f"Tensors in {path}:", f"  GGUF version: {model.metadata.extra.get('gguf_version', '?')}",
             f"  Total: {len(infos)} tensors", ""]
    lines += [f"  - {i.name} : {i.dtype} {_shape(reversed(i.shape))}" for i in infos]
    _print(ctx, *lines)


@builtin(ctx=True)
def cndl_save_model_safetensor(ctx: Context, model: Any, path: Any) -> None:
    """cndl_save_model_safetensor(model, path): every tensor of the model, in its dtype, to one SafeTensors file."""
    from ...errors import TensorLogicError
    from ...formats.safetensors import save_safetensors

    if not isinstance(model, CachedModel):
        raise BuiltinError(f"cndl_save_model_safetensor takes a model from load_model first, got {type_name(model)}")
    names = model.tensor_names()
    _print(ctx, f"Saving model with {len(names)} tensors ({'f16' if model.dtype == torch.float16 else 'f32'})...")
    # One tensor at a time through the model (not its cache), so a large model is never held twice.
    tensors = {n: model.file.read_torch(n, dtype=model.dtype).to(model.dtype).contiguous() for n in names}
    try:
        save_safetensors(tensors, ctx.path(_path_text(path, "cndl_save_model_safetensor")))
    except (OSError, TensorLogicError) as e:
        raise BuiltinError(f"cndl_save_model_safetensor: cannot write {path}: {first_line(e)}") from None
    _print(ctx, f"✓ Saved model to {path} ({len(tensors)} tensors)")


@builtin(ctx=True)
def cndl_load_model_safetensor(ctx: Context, path: Any) -> CachedModel:
    """cndl_load_model_safetensor(path): a SafeTensors file as a model whose dtype is its first tensor's
    (float16 or float32), read lazily."""
    model = open_cached(ctx, _path_text(path, "cndl_load_model_safetensor"), torch.float16,
                        what="cndl_load_model_safetensor")
    infos = model.tensor_infos()
    if not infos:
        raise BuiltinError(f"{ctx.path(path)}: the model file contains no tensors")
    model.dtype = torch.float32 if infos[0].dtype.upper() in ("F32", "FLOAT32") else torch.float16
    _print(ctx, f"Loading model from {path} ({len(infos)} tensors)...",
           f"✓ Loaded model ({'f16' if model.dtype == torch.float16 else 'f32'}, {len(infos)} tensors)")
    return model


# ---------------------------------------------------------------------------------------------- tokenizers


class Tokenizer:
    """A tokenizer as a script value: ``tokenizer.tokenize(text, add_special)`` and the builtins below."""

    def __init__(self, inner: Any):
        self.inner = inner

    def tl_attr(self, ctx: Context, name: str) -> Any:
        if name in TOKENIZER_METHODS:
            return BoundMethod(f"Tokenizer.{name}", TOKENIZER_METHODS[name], self, True)
        if name in ("vocab_size", "bos_id", "eos_id"):
            return getattr(self.inner, name)
        known = ", ".join([*TOKENIZER_METHODS, "vocab_size", "bos_id", "eos_id"])
        raise BuiltinError(f"a tokenizer has no attribute '{name}' (it has {known})")

    def __str__(self) -> str:
        return f"Tokenizer(vocab_size={self.inner.vocab_size})"


def _tokenizer(tok: Any, what: str) -> Any:
    if not isinstance(tok, Tokenizer):
        raise BuiltinError(f"{what} takes a tokenizer first (from load_tokenizer), got {type_name(tok)}")
    return tok.inner


def _flag(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise BuiltinError(f"{what} must be true or false, got {type_name(v)}")
    return v


def _ids(ids: Any, what: str) -> list[int]:
    """Token ids from a list of ints, an IntVec or an integer tensor."""
    if isinstance(ids, Vec):
        ids = ids.items
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() and not bool((ids == ids.round()).all()):
            raise BuiltinError(f"{what}: token ids must be whole numbers")
        return [int(i) for i in ids.reshape(-1).tolist()]
    if not isinstance(ids, (list, tuple)):
        raise BuiltinError(f"{what} takes a list of token ids, got {type_name(ids)}")
    return [as_int(i, "a token id") for i in ids]


def _decode(inner: Any, ids: list[int], skip_special: bool, what: str) -> str:
    try:
        return inner.decode(ids, skip_special=skip_special)
    except ValueError as e:  # an id outside the vocabulary
        raise BuiltinError(f"{what}: {first_line(e)}") from None


@builtin("load_tokenizer", ctx=True)
def load_tokenizer_(ctx: Context, path: Any) -> Tokenizer:
    """load_tokenizer("tokenizer.json"): a Hugging Face tokenizer.json, or the vocabulary of a GGUF model."""
    from ...llm.tokenizer import load_tokenizer

    tok = Tokenizer(load_tokenizer(ctx.path(_path_text(path, "load_tokenizer"))))
    _print(ctx, f"Loaded tokenizer from: {path}")
    return tok


@builtin(ctx=True)
def tokenize(ctx: Context, tokenizer: Any, text: Any, add_special_tokens: Any = True) -> list[int]:
    """tokenize(tokenizer, text, add_special_tokens): token ids; true puts BOS in front (as the model's
    tokenizer says), false adds nothing. Special tokens written in the text (</s>) become their ids."""
    inner = _tokenizer(tokenizer, "tokenize")
    if not isinstance(text, str):
        raise BuiltinError(f"tokenize takes the text as a string, got {type_name(text)}")
    return inner.encode(text, add_bos=_flag(add_special_tokens, "add_special_tokens"))


@builtin(ctx=True)
def detokenize(ctx: Context, tokenizer: Any, token_ids: Any, skip_special_tokens: Any = False) -> str:
    """detokenize(tokenizer, ids, skip_special_tokens): the text of the ids."""
    inner = _tokenizer(tokenizer, "detokenize")
    skip = _flag(skip_special_tokens, "skip_special_tokens")
    return _decode(inner, _ids(token_ids, "detokenize"), skip, "detokenize")


@builtin(ctx=True)
def detokenize_single(ctx: Context, tokenizer: Any, token_id: Any, skip_special_tokens: Any = False) -> str:
    """detokenize_single(tokenizer, id, skip_special_tokens): the text of one token id."""
    inner = _tokenizer(tokenizer, "detokenize_single")
    skip = _flag(skip_special_tokens, "skip_special_tokens")
    return _decode(inner, [as_int(token_id, "the token id")], skip, "detokenize_single")


@builtin(ctx=True)
def detokenize_incremental(ctx: Context, tokenizer: Any, token_ids: Any) -> str:
    """detokenize_incremental(tokenizer, ids): the text of all the ids decoded together (so characters split
    over several byte tokens come out whole), special tokens kept — what the original returns."""
    inner = _tokenizer(tokenizer, "detokenize_incremental")
    return _decode(inner, _ids(token_ids, "detokenize_incremental"), False, "detokenize_incremental")


@builtin()
def int_to_tokenids(token_id: Any) -> list[int]:
    """int_to_tokenids(id): the one-id list [id]."""
    return [as_int(token_id, "the token id")]


# tokenizer.tokenize(text, flag) is tokenize(tokenizer, text, flag): the tokenizer is the bound first argument.
TOKENIZER_METHODS: dict[str, Callable[..., Any]] = {
    "tokenize": tokenize,
    "detokenize": detokenize,
    "detokenize_single": detokenize_single,
    "detokenize_incremental": detokenize_incremental,
}


# ---------------------------------------------------------------------------------------------- generation


@builtin(ctx=True)
def generate(ctx: Context, model: Any, prompt: Any, max_tokens: Any = 100, temperature: Any = 0.7) -> str:
    """generate(model, prompt, max_tokens = 100, temperature = 0.7): the reply text of a loaded GGUF model.

    The original returns a placeholder string; here tensorlogic.llm runs the model (built once per model)."""
    if not isinstance(model, CachedModel) or model.file.format != "GGUF":
        raise BuiltinError(f"generate takes a GGUF model from load_model first, got {type_name(model)}")
    if not isinstance(prompt, str):
        raise BuiltinError(f"generate takes the prompt as a string, got {type_name(prompt)}")
    n = as_int(max_tokens, "max_tokens")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise BuiltinError(f"temperature must be a number, got {type_name(temperature)}")
    if model.llm is None:
        from ...llm import LLM

        model.llm = LLM(model.file, device=ctx.torch_device())
    return model.llm.generate(prompt, n, temperature=float(temperature)).text
