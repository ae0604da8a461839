"""Write a ``$HOME/.llm`` tree for the original TensorLogic's LLM programs: TinyLlama-shaped GGUF models with
random weights and a tokenizer.json.

The programs read ``~/.llm/models/tinyllama-1.1b-chat-q4_0.gguf`` (or ``-f16.gguf``) and
``~/.llm/tokenizers/tinyllama-tokenizer.json`` and run TinyLlama written in the language, so the shapes must be
TinyLlama's (22 layers, 2048 hidden, 32 heads / 4 KV heads, FFN 5632, vocabulary 32000); the values need only
keep activations finite. The files are deterministic for a given set of options.

Usage::

    python tools/llm_home.py --home /tmp/llmhome [--layers 22] [--types q4_0,f16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODEL_STEM = "tinyllama-1.1b-chat"
TOKENIZER_NAME = "tinyllama-tokenizer.json"


def tinyllama_shape(layers: int = 22) -> dict[str, int]:
    """TinyLlama 1.1B's hyperparameters (with ``layers`` blocks)."""
    return {"layers": layers, "hidden": 2048, "heads": 32, "kv_heads": 4, "ffn": 5632, "vocab": 32000, "ctx": 2048}


def tensor_shapes(shape: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every tensor of a llama GGUF in numpy order ([out, in] for matrices), in the order llama.cpp writes them."""
    h, ffn, vocab = shape["hidden"], shape["ffn"], shape["vocab"]
    kv = h // shape["heads"] * shape["kv_heads"]
    out: dict[str, tuple[int, ...]] = {"token_embd.weight": (vocab, h)}
    for i in range(shape["layers"]):
        p = f"blk.{i}."
        out.update({
            p + "attn_norm.weight": (h,),
            p + "attn_q.weight": (h, h),
            p + "attn_k.weight": (kv, h),
            p + "attn_v.weight": (kv, h),
            p + "attn_output.weight": (h, h),
            p + "ffn_norm.weight": (h,),
            p + "ffn_gate.weight": (ffn, h),
            p + "ffn_up.weight": (ffn, h),
            p + "ffn_down.weight": (h, ffn),
        })
    out["output_norm.weight"] = (h,)
    out["output.weight"] = (vocab, h)
    return out


def random_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Norm weights near 1; matrices with std 0.5/sqrt(fan_in), small enough that 22 residual blocks stay finite
    in float16, large enough that logits are not flat."""
    if len(shape) == 1:
        return (1.0 + 0.05 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    scale = 0.02 if name == "token_embd.weight" else 0.5 / np.sqrt(shape[1])
    return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def write_model(path: Path, qtype: str, shape: dict[str, int], tokenizer_kv: dict[str, Any], seed: int = 0) -> Path:
    """One llama GGUF: matrices as ``qtype`` (``q4_0`` or ``f16``), norms float32, the tokenizer's key-values."""
    import gguf

    kinds = {"q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
             "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16)}
    if qtype not in kinds:
        raise SystemExit(f"llm_home: unknown type {qtype!r}; use q4_0 or f16")
    ggml_type, file_type = kinds[qtype]
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".gguf.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(f"TinyLlama-shaped random ({qtype})")
    writer.add_file_type(int(file_type))
    writer.add_context_length(shape["ctx"])
    writer.add_embedding_length(shape["hidden"])
    writer.add_block_count(shape["layers"])
    writer.add_feed_forward_length(shape["ffn"])
    writer.add_head_count(shape["heads"])
    writer.add_head_count_kv(shape["kv_heads"])
    writer.add_rope_dimension_count(shape["hidden"] // shape["heads"])
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(shape["vocab"])
    _vocab().add_kv(writer, tokenizer_kv)
    for name, shp in tensor_shapes(shape).items():
        w = random_tensor(rng, name, shp)
        if w.ndim == 1:
            writer.add_tensor(name, w)
        elif ggml_type == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, w.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(w, ggml_type), raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def _vocab() -> Any:
    """tests/llm/vocab.py: the fixtures' Llama/SentencePiece vocabulary and its tokenizer.json writer."""
    sys.path.insert(0, str(REPO / "tests" / "llm"))
    try:
        import vocab
    finally:
        sys.path.pop(0)
    return vocab


# Words the programs tokenize and then treat as one token (reshape(Q, [1.0, 32.0, 64.0]) after
# tokenize(tokenizer, "Hello", false)), as they are in TinyLlama's vocabulary.
SINGLE_TOKEN_WORDS = ("Hello", "Hi", "test", "world")


def with_words(kv: dict[str, Any], words: tuple[str, ...] = SINGLE_TOKEN_WORDS) -> dict[str, Any]:
    """``kv`` with each ``▁word`` a single token: the word's prefixes become pieces that outscore every merge.

    They take the places of the vocabulary's rarest multi-character pieces, so the size stays the same and
    no single character (needed to spell anything) goes.
    """
    tokens, scores = list(kv["tokenizer.ggml.tokens"]), list(kv["tokenizer.ggml.scores"])
    wanted: list[str] = []
    for word in words:
        piece = "\u2581" + word
        wanted += [piece[:n] for n in range(2, len(piece) + 1) if piece[:n] not in wanted]
    index = {t: i for i, t in enumerate(tokens)}
    victims = (i for i in range(len(tokens) - 1, -1, -1)
               if len(tokens[i]) > 1 and tokens[i] not in wanted and not tokens[i].startswith("<"))
    top = max(scores) + 1.0 + len(wanted)
    for rank, piece in enumerate(wanted):
        i = index.get(piece)
        if i is None:
            i = next(victims)
            tokens[i] = piece
        # Longer prefixes score lower, so each word is built left to right before any other merge.
        scores[i] = top - rank
    return {**kv, "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores}


def write_home(home: Path, layers: int = 22, types: tuple[str, ...] = ("q4_0", "f16"), seed: int = 0) -> list[Path]:
    """The whole tree under ``home``; the paths written."""
    shape = tinyllama_shape(layers)
    vocab = _vocab()
    kv = with_words(vocab.spm_vocab_kv(shape["vocab"]))
    written = [vocab.write_tokenizer_json(home / ".llm" / "tokenizers" / TOKENIZER_NAME, kv)]
    for qtype in types:
        written.append(write_model(home / ".llm" / "models" / f"{MODEL_STEM}-{qtype}.gguf", qtype, shape, kv, seed))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True, help="the folder that plays $HOME (.llm/ goes inside)")
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--types", default="q4_0,f16", help="comma-separated: q4_0, f16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.layers < 1:
        raise SystemExit("llm_home: --layers must be at least 1")
    types = tuple(t.strip() for t in args.types.split(",") if t.strip())
    for p in write_home(args.home, args.layers, types, args.seed):
        print(f"wrote {p} ({p.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
