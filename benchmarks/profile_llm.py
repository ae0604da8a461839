"""Where a prefill and a decode step spend their time: GPU kernels by total time, and wall time per step.

    python benchmarks/profile_llm.py --model X.gguf [--pp 512] [--steps 8] [--json out.json]

The decode steps run eagerly (no CUDA graph), so the profile shows every kernel a graph replays; the graph's
own time per step is printed beside it. Wall time far above the kernels' sum means launch-bound (Python).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def _table(prof, n: int) -> list[dict]:
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if us > 0 and e.device_type.name == "CUDA":
            rows.append({"kernel": e.key[:110], "calls": e.count, "total_us": round(us, 1),
                         "mean_us": round(us / max(e.count, 1), 2)})
    rows.sort(key=lambda r: -r["total_us"])
    return rows[:n]


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from tensorlogic.llm import load_llm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    llm = load_llm(str(args.model), device="cuda", dtype="f16")
    model = llm.model
    out: dict = {"model": args.model.name}
    for _ in range(2):
        llm.prefill_benchmark(args.pp)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        wall = llm.prefill_benchmark(args.pp)
    out["prefill"] = {"wall_ms": wall * 1e3, "kernels": _table(prof, 25)}

    tok = torch.tensor([[1]], device="cuda")
    model.forward(tok, 0)
    span = model.bucket(args.steps + 2)
    for p in range(1, 3):
        model.forward(tok, p, span=span)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for p in range(3, 3 + args.steps):
            model.forward(tok, p, span=span)
        torch.cuda.synchronize()
    eager_ms = (time.perf_counter() - t0) * 1e3 / args.steps
    kernels = _table(prof, 30)
    gpu_ms = sum(r["total_us"] for r in _table(prof, 10_000)) / 1e3 / args.steps
    for p in range(3, 6):
        model.decode(tok, p)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for p in range(6, 6 + args.steps):
        model.decode(tok, p)
    torch.cuda.synchronize()
    graph_ms = (time.perf_counter() - t0) * 1e3 / args.steps
    out["decode"] = {"eager_ms_per_step": eager_ms, "kernel_ms_per_step": gpu_ms, "graph_ms_per_step": graph_ms,
                     "kernel_launches_per_step": sum(r["calls"] for r in _table(prof, 10_000)) / args.steps,
                     "kernels": kernels}
    for phase in ("prefill", "decode"):
        print(f"== {phase}: " + ", ".join(f"{k} {v:.3f}" for k, v in out[phase].items() if k != "kernels"))
        for r in out[phase]["kernels"]:
            print(f"  {r['total_us']:10.1f} us {r['calls']:6d}x {r['mean_us']:8.2f}  {r['kernel']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
