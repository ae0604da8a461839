"""Write a random TinyLlama-1.1B-shaped GGUF (llama architecture) in F16, Q8_0 and Q4_0 with gguf-py.

    python benchmarks/make_tinyllama_gguf.py --out-dir /tmp/models [--types F16,Q8_0,Q4_0] [--layers 22]

Writes ``{out-dir}/{prefix}-{TYPE}.gguf`` for each type. The weights are seeded random normals (std 0.02) and
the norms are 1, so activations stay finite through all layers; every type is quantized from the same float32
weights with ``gguf.quants.quantize``. Every 2-D weight, token_embd and output included, takes the file's
type; norms stay F32 (as llama.cpp's converter keeps 1-D tensors). The vocabulary is a real-shaped 32000-piece
SentencePiece one (tests/llm/vocab.py), so llama.cpp, transformers and tensorlogic all build their tokenizer.
Tensor rows are stored as llama.cpp's converter leaves them (Q/K permuted for its "norm" rotary layout); with
random weights this only matters in that every reader of the file sees the same function.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# GGUF general.file_type (llama_ftype) for each whole-file type we write.
FILE_TYPES = {"F16": 1, "Q8_0": 7, "Q4_0": 2}
TINYLLAMA = {"n_embd": 2048, "n_ff": 5632, "n_head": 32, "n_head_kv": 4, "n_vocab": 32000, "n_ctx": 2048}


def tensor_shapes(n_layer: int, n_embd: int, n_ff: int, n_head: int, n_head_kv: int, n_vocab: int,
                  **_: Any) -> list[tuple[str, tuple[int, ...]]]:
    """Names and numpy shapes (rows = output features) of a llama model's tensors, in llama.cpp's naming."""
    kv_dim = n_embd // n_head * n_head_kv
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (n_vocab, n_embd))]
    for i in range(n_layer):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (n_embd,)),
            (f"blk.{i}.attn_q.weight", (n_embd, n_embd)),
            (f"blk.{i}.attn_k.weight", (kv_dim, n_embd)),
            (f"blk.{i}.attn_v.weight", (kv_dim, n_embd)),
            (f"blk.{i}.attn_output.weight", (n_embd, n_embd)),
            (f"blk.{i}.ffn_norm.weight", (n_embd,)),
            (f"blk.{i}.ffn_gate.weight", (n_ff, n_embd)),
            (f"blk.{i}.ffn_up.weight", (n_ff, n_embd)),
            (f"blk.{i}.ffn_down.weight", (n_embd, n_ff)),
        ]
    shapes += [("output_norm.weight", (n_embd,)), ("output.weight", (n_vocab, n_embd))]
    return shapes


def _make_tensor(job: tuple[int, int, str, tuple[int, ...], tuple[str, ...]]) -> tuple[str, dict[str, np.ndarray]]:
    """One tensor's data in every requested type; seeded by (seed, index) so jobs can run in any order."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    seed, index, name, shape, types = job
    if len(shape) == 1:
        return name, {t: np.ones(shape, dtype=np.float32) for t in types}
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    weight = rng.standard_normal(shape, dtype=np.float32)
    weight *= np.float32(0.02)
    return name, {t: quantize(weight, GGMLQuantizationType[t]) for t in types}


def _vocab_module() -> Any:
    sys.path.insert(0, str(ROOT / "tests" / "llm"))
    try:
        import vocab
    except ImportError as exc:
        raise SystemExit(f"tests/llm/vocab.py is needed for the vocabulary: {exc}") from exc
    return vocab


def _vocab_kv(n_vocab: int) -> dict[str, Any]:
    return _vocab_module().spm_vocab_kv(n_vocab)


def write_models(out_dir: Path, types: list[str], n_layer: int, seed: int = 0, prefix: str = "tinyllama",
                 jobs: int | None = None) -> dict[str, Path]:
    """Write one GGUF per type from the same random weights; returns {type: path}."""
    import gguf

    hp = dict(TINYLLAMA, n_layer=n_layer)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {t: out_dir / f"{prefix}-{t}.gguf" for t in types}
    writers = {t: gguf.GGUFWriter(str(p), "llama") for t, p in paths.items()}
    vocab = _vocab_kv(hp["n_vocab"])
    for t, w in writers.items():
        w.add_name(f"{prefix} random {n_layer}L")
        w.add_file_type(FILE_TYPES[t])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_vocab_size(hp["n_vocab"])
        w.add_context_length(hp["n_ctx"])
        w.add_embedding_length(hp["n_embd"])
        w.add_block_count(n_layer)
        w.add_feed_forward_length(hp["n_ff"])
        w.add_head_count(hp["n_head"])
        w.add_head_count_kv(hp["n_head_kv"])
        w.add_rope_dimension_count(hp["n_embd"] // hp["n_head"])
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        _vocab_module().add_kv(w, vocab)
    work = [(seed, i, name, shape, tuple(types)) for i, (name, shape) in enumerate(tensor_shapes(**hp))]
    with ProcessPoolExecutor(max_workers=jobs or min(8, os.cpu_count() or 1)) as pool:
        for name, by_type in pool.map(_make_tensor, work, chunksize=4):
            for t, data in by_type.items():
                raw = None if data.dtype != np.uint8 else gguf.GGMLQuantizationType[t]
                writers[t].add_tensor(name, data, raw_dtype=raw)
    for w in writers.values():
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/models"))
    ap.add_argument("--types", default="F16,Q8_0,Q4_0", help="comma-separated: F16, Q8_0, Q4_0")
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefix", default="tinyllama")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default min(8, cores))")
    args = ap.parse_args(argv)
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    unknown = sorted(set(types) - set(FILE_TYPES))
    if unknown:
        ap.error(f"unknown type(s) {', '.join(unknown)}; choose from {', '.join(FILE_TYPES)}")
    start = time.perf_counter()
    paths = write_models(args.out_dir, types, args.layers, args.seed, args.prefix, args.jobs)
    for t, p in paths.items():
        print(f"{t:5s} {p}  {p.stat().st_size / 1e6:.1f} MB")
    print(f"written in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
