"""Quantized matmul on CUDA: our qmatmul per GGUF type and TinyLlama shape, against torch float16 matmul.

    python benchmarks/bench_qmatmul.py --json out.json            # the lead's H200 run

For each type (F16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) and weight shape [out, in] of TinyLlama-1.1B
(2048x2048 q/o, 256x2048 k/v, 5632x2048 gate/up, 2048x5632 down, 32000x2048 lm_head) it times
``qmatmul`` with 1 and 512 rows of float16 x, the forced paths at 512 rows (fused Triton GEMM vs
dequantize + cuBLAS), torch's float16 matmul on the dequantized matrix, and the Triton dequantization
(``triton_gguf.dequantize``).
Times are medians over ``--iters`` runs after warm-up, from CUDA events around a CUDA graph of
``--graph-calls`` back-to-back calls (decode runs in a graph, so Python launch overhead is left out;
``eager_us`` is the plain per-call time for comparison). GB/s counts the weight bytes as stored
(``QWeight.nbytes``); dequantize TB/s counts the float16 bytes written.

Prediction (bandwidth math, H200: 4.8 TB/s HBM3e, ~4.0-4.3 TB/s reachable by a streaming read; a
kernel inside a graph costs ~2 us at least, so matrices under ~8 MB are latency-bound):
- rows=1, Q4_0 (0.5625 B/weight): 2048x2048 is 2.36 MB -> ~3 us (~0.8 TB/s effective); 5632x2048
  6.5 MB -> ~3.5 us (~1.9 TB/s); 32000x2048 36.9 MB -> ~12 us (~3 TB/s). (Written when the kernels read
  GGUF order, where Q4_0/Q8_0/Q6_K blocks are only 2-byte aligned; the device layout now gives every
  type 16-byte-aligned quant runs.) F16 through cuBLAS GEMV: 32000x2048 is 131 MB -> ~33 us (~4 TB/s).
- rows=512: compute-bound for cuBLAS: 2*512*2048*2048 = 4.3 GFLOP -> ~7 us at ~600 TFLOP/s, plus the
  dequantization into scratch (8.4 MB of float16 written and re-read, ~3-4 us) -> ~11 us; 32000x2048
  67 GFLOP -> ~110 us + ~35 us. The fused Triton GEMM should lose at 512 rows (no TMA/wgmma pipeline
  for a register-dequantized operand) and win or tie at 16-64 rows.
- dequantize: writing float16 bounds it at 4.8 TB/s * 2 / (2 + bytes per weight) ~ 3.7 TB/s of
  output for Q4_0; expected 1.5-2.5 TB/s (goal >= 1 TB/s).
- Decode, TinyLlama Q4_0: 582 MB of weights per token; at ~3 TB/s that is ~0.2 ms, so per-token time
  is dominated by the ~220 kernels of a layer stack (~2-3 us each in a graph): ~1500 tok/s possible.

Results (filled in by the lead from the H200 run):
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from tensorlogic.llm.kernels import QWeight, qmatmul
from tensorlogic.llm.kernels import triton_gguf as tg

SHAPES = [(2048, 2048), (256, 2048), (5632, 2048), (2048, 5632), (32000, 2048)]
TYPES = ["F16", "Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K"]
# Byte offsets of each block's f16 scales (set to small values so no inf/NaN changes the timing).
F16_FIELDS = {"Q4_0": (0,), "Q8_0": (0,), "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2),
              "Q6_K": (208,)}


def make_weight(qtype: str, n: int, k: int) -> QWeight:
    if qtype == "F16":
        return QWeight("F16", (n, k), torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02)
    block, block_bytes = tg.BLOCKS[qtype]
    raw = torch.randint(0, 256, (n * k // block, block_bytes), dtype=torch.uint8, device="cuda")
    scales = (torch.rand(raw.shape[0], device="cuda") * 0.01 + 0.001).half().view(torch.uint8).view(-1, 2)
    for at in F16_FIELDS[qtype]:
        raw[:, at : at + 2] = scales
    return QWeight(qtype, (n, k), raw.view(n, -1))


def time_us(fn, iters: int, graph_calls: int) -> tuple[float, float]:
    """(median us per call inside a CUDA graph, median us per eager call)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(graph_calls):
            fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graphed, eager = [], []
    for _ in range(iters):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        graphed.append(start.elapsed_time(end) * 1e3 / graph_calls)
    for _ in range(iters):
        start.record()
        for _ in range(graph_calls):
            fn()
        end.record()
        end.synchronize()
        eager.append(start.elapsed_time(end) * 1e3 / graph_calls)
    return statistics.median(graphed), statistics.median(eager)


def _variants(w: QWeight, dense: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> dict:
    found = {"qmatmul": lambda: qmatmul(x, w, out=out), "torch_f16": lambda: torch.matmul(x, dense.T, out=out)}
    if x.shape[0] > tg.GEMV_MAX_ROWS and w.qtype != "F16":
        found["fused_gemm"] = lambda: tg.qmatmul(x, w.raw, w.qtype, w.shape, out, path="gemm")
        found["dequant_cublas"] = lambda: tg.qmatmul(x, w.raw, w.qtype, w.shape, out, path="cublas")
    return found


def bench_matmul(qtype: str, n: int, k: int, args) -> list[dict]:
    w = make_weight(qtype, n, k)
    dense = w.dequantize(torch.float16)
    rows_out = []
    for rows in (1, 512):
        x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
        out = torch.empty(rows, n, device="cuda", dtype=torch.float16)
        for name, fn in _variants(w, dense, x, out).items():
            graphed, eager = time_us(fn, args.iters, args.graph_calls)
            read = dense.numel() * 2 if name == "torch_f16" else w.nbytes
            row = {"type": qtype, "shape": f"{n}x{k}", "rows": rows, "impl": name, "us": round(graphed, 2),
                   "eager_us": round(eager, 2), "weight_GBps": round(read / graphed / 1e3, 1),
                   "TFLOPs": round(2 * rows * n * k / graphed / 1e6, 2)}
            rows_out.append(row)
            print(json.dumps(row), flush=True)
    return rows_out


def bench_dequant(qtype: str, args) -> dict:
    n, k = 32000, 2048
    w = make_weight(qtype, n, k)
    out = torch.empty(n, k, device="cuda", dtype=torch.float16)
    # The weight is already in the kernels' device layout; dequantize_cuda would repack GGUF bytes first.
    graphed, eager = time_us(lambda: tg.dequantize(w.raw, qtype, out), args.iters, 4)
    row = {"type": qtype, "shape": f"{n}x{k}", "impl": "dequantize", "us": round(graphed, 2),
           "eager_us": round(eager, 2), "out_TBps": round(out.numel() * 2 / graphed / 1e6, 3)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--graph-calls", type=int, default=20)
    parser.add_argument("--json", help="write all results to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_qmatmul needs a CUDA GPU")
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "matmul": [], "dequantize": []}
    for qtype in args.types.split(","):
        for n, k in SHAPES:
            results["matmul"] += bench_matmul(qtype, n, k, args)
        if qtype in tg.BLOCKS:
            results["dequantize"].append(bench_dequant(qtype, args))
    # The K-quants without a GEMV fast path still have the dequantization kernel (the >= 1 TB/s goal).
    for qtype in ("Q2_K", "Q3_K"):
        if qtype not in args.types.split(","):
            results["dequantize"].append(bench_dequant(qtype, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
