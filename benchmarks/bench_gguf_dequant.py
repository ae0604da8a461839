"""GGUF dequantization throughput per type: ours (numpy, torch eager, torch.compile) against gguf-py.

    python benchmarks/bench_gguf_dequant.py --device cpu --types Q4_K,Q8_0 --mib 64
    python benchmarks/bench_gguf_dequant.py --device cuda --mib 1024      # float16 output

``--mib`` is the size of each type's output in float32 (elements = mib * 2**18), as rows of 4096
values. The blocks are random bytes whose scales are set to sane values, so no NaN or inf slows or
hides anything. Each time is the best of ``--repeat`` runs after a warm-up run (the best run is the
one least disturbed by other processes). ``exact`` checks the benchmarked outputs: numpy and torch
float32 bit-for-bit against gguf-py (against our numpy result for types gguf-py cannot dequantize),
float16 against the cast of that. On CPU the table also gives the speed of merely writing the
float32 output (``np.empty(n).fill``), a floor no dequantizer can beat on one thread.
Prints a markdown table, then device, versions, command, load and date.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from tensorlogic.formats import gguf_quants as gq
from tensorlogic.formats import gguf_quants_torch as gqt

ROW = 4096
# F32 is a view of the bytes in both gguf-py and ours; the integer types and F64 gguf-py cannot read.
SKIPPED = ("F32", "F64", "I8", "I16", "I32", "I64")
DEFAULT_TYPES = [t for t in gq.TYPE_INFO if t not in gq.NOT_DEQUANTIZABLE and t not in SKIPPED]


def sane_blocks(name: str, n_elements: int, rng: np.random.Generator) -> np.ndarray:
    """Random raw bytes of ``name`` with every scale set to a value in [1e-3, 1e-1] (or near 1)."""
    block, size = gq.TYPE_INFO[name]
    n_blocks = n_elements // block
    if block == 1:
        return gq.quantize(rng.standard_normal(n_elements, dtype=np.float32), name).reshape(-1)
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    scales = rng.uniform(1e-3, 1e-1, n_blocks)
    for at in gq.F16_FIELDS.get(name, ()):
        raw[:, at : at + 2] = scales.astype("<f2").view(np.uint8).reshape(-1, 2)
    if name == "Q8_K":
        raw[:, :4] = scales.astype("<f4").view(np.uint8).reshape(-1, 4)
    if name == "MXFP4":  # E8M0 exponents near 2**0
        raw[:, 0] = rng.integers(117, 137, n_blocks)
    if name == "IQ1_M":
        bits = scales.astype("<f2").view(np.uint16)
        words = raw[:, 48:56].copy().view("<u2")
        for k in range(4):
            words[:, k] = (words[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
        raw[:, 48:56] = words.view(np.uint8)
    return raw.reshape(-1)


def best_time(fn: Callable[[], object], repeat: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def gguf_py_dequantize(name: str) -> Callable[[np.ndarray], np.ndarray] | None:
    import gguf
    from gguf import quants

    qt = gguf.GGMLQuantizationType[name]
    if qt not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) and qt not in quants._type_traits:
        return None
    return lambda raw: quants.dequantize(raw, qt)


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def bench_cpu(name: str, raw: np.ndarray, shape: tuple[int, int], want: np.ndarray, args) -> dict:
    n = shape[0] * shape[1]
    row: dict = {}
    exact = bits_equal(gq.dequantize(raw, name, shape, threads=args.threads), want)
    row["numpy1"] = n / best_time(lambda: gq.dequantize(raw, name, shape, threads=1), args.repeat)
    row["numpyN"] = n / best_time(lambda: gq.dequantize(raw, name, shape, threads=args.threads), args.repeat)
    ref = gguf_py_dequantize(name)
    if ref:
        rows = raw.reshape(shape[0], -1)
        row["gguf"] = n / best_time(lambda: ref(rows), args.repeat)
    src = torch.from_numpy(raw)
    exact &= bits_equal(gqt.dequantize_torch(src, name, shape).numpy(), want)
    row["eager"] = n / best_time(lambda: gqt.dequantize_torch(src, name, shape), args.repeat)
    if args.compile:
        blocks = src.reshape(-1, gq.TYPE_INFO[name][1]) if gq.TYPE_INFO[name][0] > 1 else src
        compiled = gqt.block_kernel(name, "cpu", compile=True)
        exact &= bits_equal(compiled(blocks).reshape(shape).numpy(), want)
        row["compiled"] = n / best_time(lambda: compiled(blocks), args.repeat)
    row["exact"] = exact
    return row


def bench_cuda(name: str, raw: np.ndarray, shape: tuple[int, int], want: np.ndarray, args) -> dict:
    n = shape[0] * shape[1]
    src = torch.from_numpy(raw).to("cuda")
    half = want.astype(np.float16)
    sync = torch.cuda.synchronize
    got = gqt.dequantize_torch(src, name, shape, dtype=torch.float16)
    row: dict = {"exact": np.array_equal(got.cpu().numpy(), half)}
    exact32 = gqt.dequantize_torch(src, name, shape).cpu().numpy()
    row["exact"] &= np.array_equal(exact32, want)
    del got
    row["eager"] = n / best_time(lambda: gqt.dequantize_torch(src, name, shape, dtype=torch.float16), args.repeat, sync)
    if args.compile:
        blocks = src.reshape(-1, gq.TYPE_INFO[name][1]) if gq.TYPE_INFO[name][0] > 1 else src
        compiled = gqt.block_kernel(name, "cuda", torch.float16, compile=True)
        row["compile_exact"] = np.array_equal(compiled(blocks).reshape(shape).cpu().numpy(), half)
        row["compiled"] = n / best_time(lambda: compiled(blocks), args.repeat, sync)
    return row


def rate(value: float | None, nbytes: int) -> str:
    if value is None:
        return "—"
    return f"{value / 1e9:.2f} G/s, {value * nbytes / 1e9:.1f} GB/s"


def table(rows: list[dict], args: argparse.Namespace) -> str:
    if args.device == "cpu":
        head = ["type", "ours numpy 1 thread", f"ours numpy {args.threads} threads", "gguf-py numpy",
                "ours/gguf-py 1 thread", f"ours/gguf-py {args.threads} threads",
                f"ours torch eager ({torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)})"]
        head += ["ours torch.compile"] if args.compile else []
    else:
        head = ["type", "ours torch eager"] + (["ours torch.compile"] if args.compile else [])
    head.append("exact")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if args.device == "cpu":
            g = r.get("gguf")
            cells = [rate(r["numpy1"], 4), rate(r["numpyN"], 4), rate(g, 4),
                     f"{r['numpy1'] / g:.1f}x" if g else "—", f"{r['numpyN'] / g:.1f}x" if g else "—",
                     rate(r["eager"], 4)]
            cells += [rate(r["compiled"], 4)] if args.compile else []
        else:
            cells = [rate(r["eager"], 2)]
            if args.compile:
                cells.append(rate(r["compiled"], 2) + ("" if r["compile_exact"] else " (NOT exact)"))
        lines.append("| " + " | ".join([r["type"], *cells, "yes" if r["exact"] else "NO"]) + " |")
    return "\n".join(lines)


def environment(args: argparse.Namespace, floor: float | None) -> str:
    if args.device == "cpu":
        model = platform.processor()
        try:
            with open("/proc/cpuinfo") as f:
                model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        device = f"CPU: {model}, {os.cpu_count()} cores"
    else:
        device = f"GPU: {torch.cuda.get_device_name()}"
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("numpy", "torch", "gguf"))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Device: {device}",
        f"Versions: Python {platform.python_version()}, {versions}",
        f"Command: python {' '.join(sys.argv)}",
        f"Output per type: {args.mib} MiB of float32 ({args.mib << 18:,} values); best of {args.repeat} runs",
    ]
    if floor:
        lines.append(f"Writing the float32 output alone (np.empty(n).fill, one thread): {rate(floor, 4)}")
    if hasattr(os, "getloadavg"):
        lines.append("Load average at the end (1/5/15 min): " + " / ".join(f"{x:.1f}" for x in os.getloadavg()))
    lines.append(f"Date: {now}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--types", default="all", help="comma-separated ggml type names, or 'all'")
    parser.add_argument("--mib", type=int, default=64, help="float32 output size per type, MiB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=gq.THREADS, help="numpy threads for the threaded column")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads on CPU")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.compile (default: on for cuda, off for cpu)")
    args = parser.parse_args()
    if args.compile is None:
        args.compile = args.device == "cuda"
    if args.device == "cpu":
        torch.set_num_threads(args.torch_threads)
    types = DEFAULT_TYPES if args.types == "all" else [t.strip().upper() for t in args.types.split(",")]
    rng = np.random.default_rng(0)
    warnings.simplefilter("ignore")  # gguf-py warns about tensors in non-writable buffers
    n = args.mib << 18
    shape = (n // ROW, ROW)
    rows = []
    for name in types:
        raw = sane_blocks(name, n, rng)
        ref = gguf_py_dequantize(name)
        want = ref(raw.reshape(shape[0], -1)).reshape(shape) if ref else gq.dequantize(raw, name, shape)
        bench = bench_cpu if args.device == "cpu" else bench_cuda
        rows.append({"type": name, **bench(name, raw, shape, want, args)})
        print(f"{name}: done", file=sys.stderr, flush=True)
    floor = n / best_time(lambda: np.empty(n, np.float32).fill(1.0), args.repeat) if args.device == "cpu" else None
    print(table(rows, args))
    print()
    print(environment(args, floor))


if __name__ == "__main__":
    main()
