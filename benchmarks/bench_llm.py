"""LLM prefill and decode speed, batch 1, timed the way llama-bench times pp512 and tg128.

    python benchmarks/bench_llm.py --model X.gguf [--device cuda] [--dtype f16] [--ours]
        [--transformers eager,compile] [--pp 512] [--tg 128] [--reps 3] --json out.json

- pp: one forward of ``--pp`` random token ids from an empty cache (tokens/s = pp / time).
- tg: ``--tg`` single-token forwards after a 1-token prompt: greedy generation of tg new tokens, the first
  of which comes from the prompt's forward (tokens/s = tg / time).
Each measurement is warmed up first, bracketed by ``torch.cuda.synchronize``, repeated ``--reps`` times; the
median is reported with every repetition's time. Peak GPU memory is read after loading and after the runs.
``bytes_per_token`` is what one decode step must read from memory: every tensor of the file except
token_embd (a decode step gathers one row of it) plus the f16 KV cache at the mean context of the tg run;
``bw_limit_tok_s`` divides the H200's 4.8 TB/s datasheet bandwidth by it.
Each result says in ``timed`` what exactly its clock covered.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

H200_BANDWIDTH = 4.8e12  # bytes/s, datasheet
DTYPES = {"f16": "float16", "bf16": "bfloat16", "f32": "float32"}


def gguf_summary(path: Path) -> dict[str, Any]:
    """Shape facts and byte counts of a llama-family GGUF, read with gguf-py (an independent reader)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = str(reader.fields["general.architecture"].contents())

    def hp(key: str) -> int:
        return int(reader.fields[f"{arch}.{key}"].contents())

    n_head = hp("attention.head_count")
    n_embd = hp("embedding_length")
    types: dict[str, int] = {}
    weight_bytes = 0
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        if t.name != "token_embd.weight":
            weight_bytes += int(t.n_bytes)
    names = {t.name for t in reader.tensors}
    if "output.weight" not in names:
        # A tied head reads the embedding matrix once per token after all.
        weight_bytes += int(next(t.n_bytes for t in reader.tensors if t.name == "token_embd.weight"))
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "arch": arch,
        "n_layer": hp("block_count"),
        "n_embd": n_embd,
        "n_head": n_head,
        "n_head_kv": hp("attention.head_count_kv"),
        "head_dim": n_embd // n_head,
        "n_ff": hp("feed_forward_length"),
        "n_vocab": len(reader.fields["tokenizer.ggml.tokens"].data),
        "bos_id": int(reader.fields["tokenizer.ggml.bos_token_id"].contents()),
        "tensor_types": types,
        "weight_bytes_per_token": weight_bytes,
    }


def bandwidth_model(summary: dict[str, Any], tg: int) -> dict[str, Any]:
    mean_ctx = (1 + tg) / 2
    kv_bytes = 2 * summary["n_layer"] * summary["n_head_kv"] * summary["head_dim"] * 2 * mean_ctx
    per_token = summary["weight_bytes_per_token"] + kv_bytes
    return {
        "bytes_per_token": int(per_token),
        "kv_bytes_per_token": int(kv_bytes),
        "bw_limit_tok_s": H200_BANDWIDTH / per_token,
        "bw_note": "weights except token_embd + f16 K and V of every layer at the tg run's mean context, "
        "over 4.8e12 B/s (H200 datasheet)",
    }


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], device: str, reps: int, warmup: int, self_timed: bool = False) -> dict[str, Any]:
    """Median time of ``fn`` after ``warmup`` untimed calls; device work is synchronized on both sides.

    ``self_timed``: ``fn`` returns the seconds it measured itself (around its own synchronizations).
    """
    for _ in range(warmup):
        fn()
    times = []
    result = None
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(float(result) if self_timed else time.perf_counter() - start)
    return {"median_s": statistics.median(times), "times_s": times, "result": result}


def _memory(device: str) -> dict[str, int]:
    import torch

    if not device.startswith("cuda"):
        return {}
    return {"allocated": torch.cuda.memory_allocated(), "peak": torch.cuda.max_memory_allocated()}


def _rates(name: str, pp_m: dict[str, Any], tg_m: dict[str, Any], pp: int, tg: int) -> dict[str, Any]:
    return {
        f"pp{pp}_tok_s": pp / pp_m["median_s"],
        f"tg{tg}_tok_s": tg / tg_m["median_s"],
        "pp_times_s": pp_m["times_s"],
        "tg_times_s": tg_m["times_s"],
        "backend": name,
    }


def random_ids(n: int, n_vocab: int, seed: int = 0) -> list[int]:
    # Ids 0..2 are <unk>/<s>/</s> in Llama vocabularies: stay clear of them.
    return np.random.default_rng(seed).integers(3, n_vocab, size=n).tolist()


def bench_ours(path: Path, summary: dict[str, Any], device: str, dtype: str, pp: int, tg: int,
               reps: int) -> dict[str, Any]:
    import torch

    from tensorlogic.llm import load_llm

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    llm = load_llm(str(path), device=device, dtype=dtype)
    _sync(device)
    load_s = time.perf_counter() - start
    mem_load = _memory(device)
    pp_m = measure(lambda: llm.prefill_benchmark(pp), device, reps, warmup=2, self_timed=True)

    def decode() -> Any:
        llm.reset()
        return llm.generate([summary["bos_id"]], max_new_tokens=tg, temperature=0, ignore_eos=True)

    tg_m = measure(decode, device, reps, warmup=1)
    out = _rates("ours", pp_m, tg_m, pp, tg)
    gen = tg_m["result"]
    device_bytes = getattr(llm.model, "weight_bytes", None)
    out.update(
        timed={"pp": f"llm.prefill_benchmark({pp}): its own synchronized time of one forward of {pp} random ids "
               "from an empty cache",
               "tg": f"llm.reset(); llm.generate([bos], max_new_tokens={tg}, temperature=0, ignore_eos=True): "
               f"the 1-token prompt's forward + {tg - 1} decode forwards with greedy picks"},
        generated_tokens=len(gen.tokens), finish_reason=gen.finish_reason,
        generate_decode_tok_s=gen.decode_tok_s, load_s=load_s, dtype=str(llm.dtype),
        device_weight_bytes=device_bytes() if callable(device_bytes) else device_bytes,
        memory_after_load=mem_load, memory_after_run=_memory(device),
    )
    return out


def bench_transformers(path: Path, summary: dict[str, Any], device: str, variants: list[str], pp: int, tg: int,
                       reps: int) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, StaticCache

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float16)
    model = model.to(device).eval()
    _sync(device)
    load_s = time.perf_counter() - start
    mem_load = _memory(device)
    ids = torch.tensor([random_ids(pp, summary["n_vocab"])], device=device)
    bos = torch.tensor([[summary["bos_id"]]], device=device)
    # min_new_tokens pins the length; the eos/pad ids only keep generate from warning about them.
    gen = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, "pad_token_id": 0,
           "eos_token_id": None, "max_new_tokens": tg, "min_new_tokens": tg}
    q_proj = model.model.layers[0].self_attn.q_proj
    results: dict[str, Any] = {"load_s": load_s, "memory_after_load": mem_load, "version": transformers.__version__,
                               "q_proj": f"{type(q_proj).__name__} {getattr(q_proj, 'weight', None).dtype}"}
    with torch.no_grad():
        if "eager" in variants:
            pp_m = measure(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1), device, reps, warmup=2)
            tg_m = measure(lambda: model.generate(bos, **gen), device, reps, warmup=1)
            results["eager"] = _rates("transformers eager", pp_m, tg_m, pp, tg)
            results["eager"]["timed"] = {
                "pp": f"model(input_ids=<1x{pp}>, use_cache=True, logits_to_keep=1): one eager forward into a "
                "fresh DynamicCache, logits of the last position only (as llama-bench)",
                "tg": f"model.generate(<bos>, max_new_tokens={tg}, min_new_tokens={tg}, greedy): prefill of 1 "
                f"token + {tg - 1} decode forwards, DynamicCache, generate's own per-step overhead included",
            }
        if "compile" in variants:
            # One cache length for both phases keeps the compiled graphs to two shapes (pp tokens, 1 token).
            cache_len = pp + tg + 8
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)

            def run(prompt: Any, new: int) -> Any:
                cache = StaticCache(config=model.config, max_cache_len=cache_len)
                return model.generate(prompt, past_key_values=cache, disable_compile=True,
                                      **dict(gen, max_new_tokens=new, min_new_tokens=new))

            compile_start = time.perf_counter()
            run(ids, 1)
            run(bos, tg)
            _sync(device)
            compile_s = time.perf_counter() - compile_start
            pp_m = measure(lambda: run(ids, 1), device, reps, warmup=1)
            tg_m = measure(lambda: run(bos, tg), device, reps, warmup=1)
            results["compile"] = _rates("transformers static-cache torch.compile", pp_m, tg_m, pp, tg)
            results["compile"]["first_calls_s"] = compile_s
            results["compile"]["timed"] = {
                "pp": f"model.generate(<1x{pp}>, max_new_tokens=1) with a new StaticCache({cache_len}): the "
                "compiled prefill forward, cache creation and generate's setup",
                "tg": f"model.generate(<bos>, max_new_tokens={tg}, min_new_tokens={tg}) with a new "
                f"StaticCache({cache_len}): {tg} compiled forwards (mode=reduce-overhead, fullgraph) and "
                "generate's per-step overhead",
            }
    results["memory_after_run"] = _memory(device)
    return results


def _environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "host": platform.node(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="f16", choices=sorted(DTYPES))
    ap.add_argument("--ours", action="store_true", help="time tensorlogic.llm")
    ap.add_argument("--transformers", default="", help="comma-separated variants: eager, compile")
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.transformers.split(",") if v.strip()]
    bad = sorted(set(variants) - {"eager", "compile"})
    if bad:
        ap.error(f"unknown transformers variant(s): {', '.join(bad)}")
    if not args.ours and not variants:
        ap.error("nothing to time: pass --ours and/or --transformers")
    if args.pp < 1 or args.tg < 1 or args.reps < 1:
        ap.error("--pp, --tg and --reps must be positive")

    summary = gguf_summary(args.model)
    report: dict[str, Any] = {"model": summary, **bandwidth_model(summary, args.tg), "pp": args.pp, "tg": args.tg,
                              "reps": args.reps, "device": args.device, "env": _environment(args.device)}
    if args.ours:
        report["ours"] = bench_ours(args.model, summary, args.device, args.dtype, args.pp, args.tg, args.reps)
    if variants:
        report["transformers"] = bench_transformers(args.model, summary, args.device, variants, args.pp, args.tg,
                                                    args.reps)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    rows = []
    if "ours" in report:
        rows.append(("ours", report["ours"]))
    for v in variants:
        rows.append((f"transformers {v}", report["transformers"][v]))
    name = args.model.name
    for label, r in rows:
        print(f"{name:28s} {label:22s} pp{args.pp} {r[f'pp{args.pp}_tok_s']:10.1f} tok/s   "
              f"tg{args.tg} {r[f'tg{args.tg}_tok_s']:8.1f} tok/s   (bw limit {report['bw_limit_tok_s']:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
