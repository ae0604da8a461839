"""Small random LLMs written as GGUF with gguf-py, for every architecture and weight type the tests need.

Weights are scaled so activations stay O(1) through the layers and logits are spread out (greedy choices are
not near-ties).  Q8_0/Q4_0 come from gguf-py's quantizer; K-quants (which gguf-py cannot quantize) are random
blocks whose f16 scale fields are set small, so their dequantized values are finite and weight-sized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .vocab import add_kv, bpe_vocab_kv, spm_vocab_kv

# Byte offsets of the f16 scale fields (d, then dmin where it exists) inside one block of each K-quant.
_K_SCALES = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


@dataclass(frozen=True)
class Shape:
    n_layer: int = 2
    n_embd: int = 256
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 512
    n_ctx: int = 512


def _random_kquant(rows: int, cols: int, qtype: str, rng: np.random.Generator) -> np.ndarray:
    import gguf

    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    raw = rng.integers(0, 256, size=(rows, cols // block, nbytes), dtype=np.uint8)
    # d small enough that |value| stays around weight size; dmin ~ d * mean quant so the mean is near zero.
    d = {"Q2_K": 4e-3, "Q3_K": 2e-3, "Q4_K": 3e-4, "Q5_K": 1.5e-4, "Q6_K": 2e-5}[qtype]
    fields = _K_SCALES[qtype]
    for j, at in enumerate(fields):
        value = d if j == 0 else d * {"Q2_K": 1.5, "Q4_K": 7.5, "Q5_K": 15.5}[qtype]
        scale = (value * rng.uniform(0.5, 1.5, size=raw.shape[:2])).astype(np.float16)
        raw[:, :, at : at + 2] = scale.view(np.uint8).reshape(*raw.shape[:2], 2)
    return raw.reshape(rows, -1)


def _tokenizer_kv(arch: str) -> dict[str, Any]:
    if arch == "qwen2":
        return bpe_vocab_kv(4096, pre="qwen2")
    return spm_vocab_kv(32000)


def write_llm_gguf(path: str | Path, arch: str = "llama", qtype: str = "F16", shape: Shape = Shape(), *,
                   seed: int = 0, tokenizer_kv: dict[str, Any] | None = None, tied: bool = False,
                   extra_kv: dict[str, Any] | None = None, drop: tuple[str, ...] = (),
                   reshape: dict[str, tuple[int, int]] | None = None, mixed: dict[str, str] | None = None) -> Path:
    """Write a random ``arch`` model whose 2-D weights are stored as ``qtype``; return the path.

    ``mixed`` maps tensor-name endings (``"attn_v.weight"``) to another type, as llama.cpp's _M/_S mixes do;
    ``drop`` leaves tensors out and ``reshape`` gives some a wrong shape (bad-input tests).
    """
    import gguf

    rng = np.random.default_rng(seed)
    base_type = qtype
    kv = dict(tokenizer_kv if tokenizer_kv is not None else _tokenizer_kv(arch))
    n_vocab = len(kv.get("tokenizer.ggml.tokens", [])) or 32000
    s = shape
    head_dim = s.n_embd // s.n_head
    q_dim, kv_dim = s.n_embd, s.n_head_kv * head_dim
    # Mistral is written as llama.cpp's converter writes it: architecture "llama".
    writer = gguf.GGUFWriter(str(path), "llama" if arch == "mistral" else arch)
    writer.add_name(f"random-{arch}-{qtype.lower()}")
    writer.add_context_length(s.n_ctx)
    writer.add_embedding_length(s.n_embd)
    writer.add_block_count(s.n_layer)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16) if qtype == "F16" else 0)
    add_kv(writer, {**kv, **(extra_kv or {})})

    def matrix(name: str, rows: int, cols: int, std: float) -> None:
        if name in drop:
            return
        if reshape and name in reshape:
            rows, cols = reshape[name]
        qtype = next((t for end, t in (mixed or {}).items() if name.endswith(end)), base_type)
        if qtype in _K_SCALES:
            writer.add_tensor(name, _random_kquant(rows, cols, qtype, rng),
                              raw_dtype=gguf.GGMLQuantizationType[qtype])
            return
        w = (rng.standard_normal((rows, cols)) * std).astype(np.float32)
        if qtype == "F32":
            writer.add_tensor(name, w)
        elif qtype == "F16":
            writer.add_tensor(name, w.astype(np.float16))
        else:
            kind = gguf.GGMLQuantizationType[qtype]
            writer.add_tensor(name, gguf.quants.quantize(w, kind), raw_dtype=kind)

    def vector(name: str, n: int, mean: float, std: float) -> None:
        if name not in drop:
            writer.add_tensor(name, (mean + rng.standard_normal(n) * std).astype(np.float32))

    w_std = 1.0 / np.sqrt(s.n_embd)
    matrix("token_embd.weight", n_vocab, s.n_embd, 1.0)
    for i in range(s.n_layer):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", s.n_embd, 1.0, 0.1)
        if arch == "phi3":
            matrix(p + "attn_qkv.weight", q_dim + 2 * kv_dim, s.n_embd, w_std)
        else:
            matrix(p + "attn_q.weight", q_dim, s.n_embd, w_std)
            matrix(p + "attn_k.weight", kv_dim, s.n_embd, w_std)
            matrix(p + "attn_v.weight", kv_dim, s.n_embd, w_std)
        if arch == "qwen2":
            vector(p + "attn_q.bias", q_dim, 0.0, 0.1)
            vector(p + "attn_k.bias", kv_dim, 0.0, 0.1)
            vector(p + "attn_v.bias", kv_dim, 0.0, 0.1)
        matrix(p + "attn_output.weight", s.n_embd, q_dim, w_std)
        vector(p + "ffn_norm.weight", s.n_embd, 1.0, 0.1)
        if arch == "phi3":
            matrix(p + "ffn_up.weight", 2 * s.n_ff, s.n_embd, w_std)
        else:
            matrix(p + "ffn_gate.weight", s.n_ff, s.n_embd, w_std)
            matrix(p + "ffn_up.weight", s.n_ff, s.n_embd, w_std)
        matrix(p + "ffn_down.weight", s.n_embd, s.n_ff, 1.0 / np.sqrt(s.n_ff))
    vector("output_norm.weight", s.n_embd, 1.0, 0.1)
    if not tied:
        matrix("output.weight", n_vocab, s.n_embd, 4.0 * w_std)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
