"""GEMV block sizes measured as decode uses them: weights cold in L2, one row of x, inside a CUDA graph.

    python benchmarks/sweep_gemv.py --json sweep.json [--types Q4_0,Q8_0] [--table]

bench_qmatmul.py times back-to-back calls on one matrix, which then sits in the 50 MB L2 and reads faster
than any decode step will (a step reads each of its ~150 matrices once). Here every call reads a different
copy of the matrix, cycling through enough copies to exceed L2 several times over, so the time is what HBM
gives. For each type and TinyLlama decode shape (fused QKV 2560x2048, o 2048x2048, fused gate+up 11264x2048,
down 2048x5632 with SiLU*mul fused into its input, head 32000x2048) it times every (BLOCK_N, K per step,
warps, X_FULL) in the grid and prints the best; ``--table`` prints them as
``triton_gguf.GEMV_CONFIGS`` entries.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from tensorlogic.llm.kernels import triton_gguf as tg  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_qmatmul import make_weight  # noqa: E402

SHAPES = [(2560, 2048, False), (2048, 2048, False), (11264, 2048, False), (2048, 5632, True), (32000, 2048, False)]
COLD_BYTES = 400 << 20


def time_cold(calls: list, reps: int = 5) -> float:
    """Median us per call of one CUDA graph running ``calls`` once each."""
    for fn in calls[:3]:
        fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in calls:
            fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(calls))
    return sorted(times)[len(times) // 2]


def sweep(qtype: str, n: int, k: int, silu: bool, grid: list[tuple[int, ...]]) -> list[dict]:
    w0 = make_weight(qtype, n, k)
    copies = max(4, COLD_BYTES // w0.nbytes)
    raws = [w0.raw] + [w0.raw.clone() for _ in range(copies - 1)]
    x = torch.randn(1, 2 * k if silu else k, device="cuda", dtype=torch.float16)
    out = torch.empty(1, n, device="cuda", dtype=torch.float16)
    rows = []
    sub = tg.SUB_BLOCK[qtype]
    # Every configuration's output is checked against float32 dequantize-then-matmul before it is timed.
    xs = x.float()
    if silu:
        xs = torch.nn.functional.silu(xs[:, :k]) * xs[:, k:]
    ref = xs @ w0.dequantize(torch.float32).T
    for block_n, k_step, warps, x_full in [(None,) * 4] + grid:
        if k_step is not None and (k_step > k or k_step < sub):
            continue
        config = None if block_n is None else (1, block_n, k_step // sub, warps, bool(x_full))

        def call(raw: torch.Tensor, config=config) -> None:
            tg.qmatmul(x, raw, qtype, (n, k), out, silu_mul=silu, path="gemv", config=config)

        try:
            call(raws[0])
            err = float((out.float() - ref).abs().max() / ref.abs().max())
            if not err < 1e-2:
                print(f"  {qtype} {n}x{k} {config}: WRONG, relative error {err:.3g}", flush=True)
                continue
            us = time_cold([lambda r=r: call(r) for r in raws])
        except Exception as exc:  # a tile too large for the registers or shared memory: not a candidate
            print(f"  {qtype} {n}x{k} {config}: {type(exc).__name__}", flush=True)
            continue
        knobs = "heuristic" if config is None else [block_n, k_step, warps, bool(x_full)]
        rows.append({"type": qtype, "n": n, "k": k, "silu_mul": silu, "config": knobs,
                     "us": round(us, 2), "GBps": round(w0.nbytes / us / 1e3, 1)})
    del raws
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="Q4_0,Q8_0,Q4_K,Q6_K")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--block-n", default="2,4,8,16", help="rows per program to try")
    ap.add_argument("--k-steps", default="256,512,1024", help="elements of K per step to try")
    ap.add_argument("--warps", default="4,8")
    ap.add_argument("--x-full", default="0,1", help="X_FULL values to try (x loaded in the weight tile's shape)")
    args = ap.parse_args()
    knobs = (args.block_n, args.k_steps, args.warps, args.x_full)
    grid = list(itertools.product(*([int(v) for v in a.split(",")] for a in knobs)))
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": [], "best": []}
    for qtype in args.types.split(","):
        for n, k, silu in SHAPES:
            rows = sweep(qtype, n, k, silu, grid)
            result["rows"] += rows
            heur = next(r for r in rows if r["config"] == "heuristic")
            best = min(rows, key=lambda r: r["us"])
            result["best"].append({**best, "heuristic_us": heur["us"], "heuristic_GBps": heur["GBps"]})
            print(f"{qtype:5s} {n:6d}x{k:<5d} heuristic {heur['us']:7.2f} us {heur['GBps']:7.1f} GB/s   best "
                  f"{best['config']} {best['us']:7.2f} us {best['GBps']:7.1f} GB/s", flush=True)
            args.json.write_text(json.dumps(result, indent=1))
    if args.table:
        for b in result["best"]:
            if b["config"] != "heuristic":
                print(f'    ("{b["type"]}", {b["n"]}, {b["k"]}): {tuple(b["config"])},  # {b["us"]} us cold, '
                      f'heuristic {b["heuristic_us"]}')


if __name__ == "__main__":
    main()
