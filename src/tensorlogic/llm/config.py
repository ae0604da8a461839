"""An LLM's hyper-parameters, read from a GGUF file's key-values (llama.cpp's naming)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError, UnsupportedError

# Rotary embedding layouts.  "norm" rotates adjacent pairs (x[2i], x[2i+1]): llama.cpp's layout for Llama
# GGUFs, whose converter permutes the Q/K rows to match.  "neox" rotates the halves (x[i], x[i+d/2]).
# Mistral models are stored as "llama" (llama.cpp has no "mistral" architecture;
# transformers reads such a file as MistralForCausalLM when general.name says mistral), so they run here as llama.
ROPE_STYLES = {"llama": "norm", "qwen2": "neox", "phi3": "neox"}


@dataclass(frozen=True)
class LLMConfig:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope_dim: int
    n_ff: int
    n_vocab: int
    n_ctx: int
    rms_eps: float
    rope_base: float
    rope_style: str
    rope_scale: float  # positions are divided by this (linear rope scaling)
    qkv_bias: bool
    fused_qkv: bool  # one attn_qkv tensor (phi3)
    fused_gate_up: bool  # ffn_up holds gate and up stacked (phi3)
    tied_output: bool  # no output.weight: the embedding matrix is the output head

    @property
    def kv_dim(self) -> int:
        return self.n_head_kv * self.head_dim

    @classmethod
    def from_gguf(cls, kv: Mapping[str, Any], tensor_names: set[str], path: str | Path,
                  shapes: Mapping[str, tuple[int, ...]]) -> LLMConfig:
        arch = kv.get("general.architecture")
        if not isinstance(arch, str):
            raise FormatError("no general.architecture key: not an LLM GGUF", path)
        if arch not in ROPE_STYLES:
            known = ", ".join(sorted(ROPE_STYLES))
            raise UnsupportedError(f"{path}: LLM architecture {arch!r} is not supported (supported: {known})")

        def need_int(key: str) -> int:
            value = kv.get(f"{arch}.{key}")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FormatError(f"key {arch}.{key} is missing or not a positive integer (got {value!r})", path)
            return value

        def opt_float(key: str, default: float) -> float:
            value = kv.get(f"{arch}.{key}", default)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise FormatError(f"key {arch}.{key} is not a number (got {value!r})", path)
            return float(value)

        n_embd = need_int("embedding_length")
        n_head = need_int("attention.head_count")
        n_head_kv = kv.get(f"{arch}.attention.head_count_kv", n_head)
        if not isinstance(n_head_kv, int) or n_head_kv <= 0 or n_head % n_head_kv:
            raise FormatError(f"key {arch}.attention.head_count_kv = {n_head_kv!r} does not divide the "
                              f"{n_head} attention heads", path)
        if n_embd % n_head:
            raise FormatError(f"{arch}.embedding_length {n_embd} is not a multiple of the {n_head} heads", path)
        head_dim = kv.get(f"{arch}.attention.key_length", n_embd // n_head)
        rope_dim = kv.get(f"{arch}.rope.dimension_count", head_dim)
        if not isinstance(rope_dim, int) or rope_dim <= 0 or rope_dim > head_dim or rope_dim % 2:
            raise FormatError(f"key {arch}.rope.dimension_count = {rope_dim!r} does not fit head size {head_dim}",
                              path)
        scale = 1.0
        scaling = kv.get(f"{arch}.rope.scaling.type")
        if scaling not in (None, "none"):
            if scaling != "linear":
                raise UnsupportedError(f"{path}: rope scaling {scaling!r} is not supported (supported: linear)")
            scale = opt_float("rope.scaling.factor", 1.0)
        if "rope_freqs.weight" in tensor_names:
            raise UnsupportedError(f"{path}: per-frequency rope factors (rope_freqs.weight, Llama 3.1 scaling) "
                                   "are not supported")
        if "token_embd.weight" not in tensor_names:
            raise FormatError("no token_embd.weight tensor", path)
        n_vocab = shapes["token_embd.weight"][0]
        declared = kv.get(f"{arch}.vocab_size")
        if isinstance(declared, int) and declared != n_vocab:
            raise FormatError(f"{arch}.vocab_size {declared} does not match token_embd.weight rows {n_vocab}", path)
        return cls(
            arch=arch,
            n_layer=need_int("block_count"),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            rope_dim=rope_dim,
            n_ff=need_int("feed_forward_length"),
            n_vocab=n_vocab,
            n_ctx=need_int("context_length"),
            rms_eps=opt_float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base=opt_float("rope.freq_base", 10000.0),
            rope_style=ROPE_STYLES[arch],
            rope_scale=scale,
            qkv_bias="blk.0.attn_q.bias" in tensor_names,
            fused_qkv="blk.0.attn_qkv.weight" in tensor_names,
            fused_gate_up="blk.0.ffn_gate.weight" not in tensor_names,
            tied_output="output.weight" not in tensor_names,
        )

    def expected_shapes(self, layer: int) -> dict[str, tuple[int, ...]]:
        """Shapes (rows, columns) each layer tensor must have, in GGUF's numpy order."""
        e, q, k = self.n_embd, self.n_head * self.head_dim, self.kv_dim
        p = f"blk.{layer}."
        shapes: dict[str, tuple[int, ...]] = {p + "attn_norm.weight": (e,), p + "ffn_norm.weight": (e,),
                                              p + "attn_output.weight": (e, q), p + "ffn_down.weight": (e, self.n_ff)}
        if self.fused_qkv:
            shapes[p + "attn_qkv.weight"] = (q + 2 * k, e)
        else:
            shapes.update({p + "attn_q.weight": (q, e), p + "attn_k.weight": (k, e), p + "attn_v.weight": (k, e)})
        if self.qkv_bias:
            shapes.update({p + "attn_q.bias": (q,), p + "attn_k.bias": (k,), p + "attn_v.bias": (k,)})
        if self.fused_gate_up:
            shapes[p + "ffn_up.weight"] = (2 * self.n_ff, e)
        else:
            shapes.update({p + "ffn_gate.weight": (self.n_ff, e), p + "ffn_up.weight": (self.n_ff, e)})
        return shapes
