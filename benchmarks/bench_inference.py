"""Model inference benchmarks: our Core ML path beside what users would run instead, in one process.

    python -m benchmarks.bench_inference gpu --out DIR      # ResNet-50 b1/b256, BERT-base s128 (CUDA)
    python -m benchmarks.bench_inference cpu --threads 2    # ResNet-50, MobileNetV2 vs ONNX Runtime
    python -m benchmarks.bench_inference load               # load -> first prediction, fresh process

Models come from ``benchmarks/models.py`` (random weights, BatchNorm calibrated) and are converted with
coremltools to fp16 ML Programs into ``--cache`` (default ``.gpu/models``) the first time. Every anchor
is timed in the same process, interleaved with ours (``tensorlogic.runtime.bench.compare``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from benchmarks.models import build

from tensorlogic.formats import open_model_file
from tensorlogic.runtime import bench
from tensorlogic.runtime.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
OURS = "ours compiled (graph replay)"


def ensure_model(name: str, cache: Path, flexible_batch: int = 0) -> Path:
    """The fp16 ``.mlpackage`` of a benchmark model, converted once."""
    suffix = f"-flex{flexible_batch}" if flexible_batch else ""
    path = cache / f"{name}{suffix}.mlpackage"
    if path.exists():
        return path
    warnings.filterwarnings("ignore")
    import coremltools as ct
    import numpy as np

    module, shape = build(name)
    if name == "bert-base":
        example = torch.zeros(shape, dtype=torch.int32)
        spec = ct.TensorType(name="input_ids", shape=shape, dtype=np.int32)
    else:
        example = torch.rand(shape)
        dims = (ct.RangeDim(1, flexible_batch, default=1), *shape[1:]) if flexible_batch else shape
        spec = ct.TensorType(name="x", shape=ct.Shape(shape=dims) if flexible_batch else dims)
    start = time.perf_counter()
    mlmodel = ct.convert(torch.jit.trace(module, example), inputs=[spec], convert_to="mlprogram",
                         compute_precision=ct.precision.FLOAT16)
    cache.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(path))
    print(f"converted {name}{suffix} in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def _row(t: bench.Timing, ratio: float) -> str:
    return (f"  {t.name:<34} median {t.median:9.3f} ms  p90 {t.p90:9.3f} ms  min {min(t.samples):9.3f} ms  "
            f"{t.throughput:10,.0f} items/s  ours/this {ratio:5.2f}  warm-up {t.warmup_s:6.2f} s")


def report(title: str, timings: list[bench.Timing], ours: str, results: dict) -> None:
    ratio = bench.ratios(timings, ours)
    print(title, flush=True)
    for t in timings:
        print(_row(t, ratio[t.name]), flush=True)
    results[title] = [dict(t.to_dict(), min_ms=min(t.samples), ours_over_this=ratio[t.name]) for t in timings]


def environment() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cudnn"] = torch.backends.cudnn.version()
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    return info


def kernel_profile(fn, runs: int = 20, top: int = 12) -> dict:
    """GPU kernel time per run (what the time goes to), from torch.profiler over ``runs`` calls."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                fn()
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0:
            rows.append((e.key, e.self_device_time_total / runs / 1000.0, e.count // runs))
    total = sum(r[1] for r in rows)
    count = sum(r[2] for r in rows)
    rows.sort(key=lambda r: -r[1])
    return {"kernel_ms_per_run": total, "kernels_per_run": count,
            "top": [{"kernel": k[:90], "ms": ms, "calls": c} for k, ms, c in rows[:top]]}


def gpu_suite(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = True  # the anchors get cuDNN's autotuner too
    results: dict = {"environment": environment()}
    print(json.dumps(results["environment"]), flush=True)
    cache = Path(args.cache)
    runs = args.runs

    # ResNet-50, one flexible-batch package for b1 and b256.
    path = ensure_model("resnet50", cache, flexible_batch=256)
    module, _ = build("resnet50")
    start = time.perf_counter()
    file = open_model_file(path)
    compiled = Predictor(file, device=device, mode="compiled")
    load_s = time.perf_counter() - start
    data1 = bench.random_inputs(compiled, 1)
    start = time.perf_counter()
    compiled.predict(dict(data1))
    first_s = time.perf_counter() - start
    interp = Predictor(file, device=device, mode="interp")
    results["resnet50_load"] = {"load_s": load_s, "first_prediction_s": first_s,
                                "stats": {k: v for k, v in compiled.engine.stats.items() if k != "warmup_s"}}
    print(f"resnet50: load {load_s:.2f} s, first prediction (warm-up + capture) {first_s:.2f} s, "
          f"{compiled.engine.stats['fusions']}", flush=True)
    runners = {
        "ours compiled (graph replay)": bench.ours(compiled, data1),
        "ours compiled predict() numpy": bench.ours_predict(compiled, data1),
        "ours interp": bench.ours(interp, data1),
        "torch eager f16 CL": bench.torch_eager(module, data1, device, half=cuda, channels_last=True),
    }
    if cuda:
        runners["torch CUDA graph f16 CL"] = bench.torch_cuda_graph(module, data1, device)
    report("ResNet-50 f16 b1", bench.compare(runners, device, 1, args.warmup, runs), OURS, results)
    no_graph = Predictor(file, device=device, mode="compiled", compile_options={"cuda_graphs": False})
    unfused = Predictor(file, device=device, mode="compiled", compile_options={"fuse": False})
    runners = {
        "ours compiled (graph replay)": bench.ours(compiled, data1),
        "ours compiled, no graph": bench.ours(no_graph, data1),
        "ours compiled, no fusion": bench.ours(unfused, data1),
    }
    report("ResNet-50 f16 b1 ablation", bench.compare(runners, device, 1, args.warmup, runs), OURS, results)
    if cuda:
        results["resnet50_b1_profile_no_graph"] = kernel_profile(bench.ours(no_graph, data1))
        print(json.dumps(results["resnet50_b1_profile_no_graph"], indent=1), flush=True)
    del no_graph, unfused, interp

    data256 = bench.random_inputs(compiled, args.big_batch)
    start = time.perf_counter()
    compiled.predict(dict(data256))
    print(f"resnet50 b256 first prediction {time.perf_counter() - start:.2f} s", flush=True)
    runners = {
        "ours compiled (graph replay)": bench.ours(compiled, data256),
        "torch eager f16 CL": bench.torch_eager(module, data256, device, half=cuda, channels_last=True),
    }
    if cuda:
        runners["torch CUDA graph f16 CL"] = bench.torch_cuda_graph(module, data256, device)
    report(f"ResNet-50 f16 b{args.big_batch}", bench.compare(runners, device, args.big_batch, min(args.warmup, 5),
                                                             max(runs // 5, 10)),
           "ours compiled (graph replay)", results)
    if cuda:
        no_graph = Predictor(file, device=device, mode="compiled", compile_options={"cuda_graphs": False})
        results["resnet50_b256_profile_no_graph"] = kernel_profile(bench.ours(no_graph, data256), runs=5)
        print(json.dumps(results["resnet50_b256_profile_no_graph"], indent=1), flush=True)
        del no_graph
        torch.cuda.empty_cache()
    del data256

    del compiled, file
    if cuda:
        torch.cuda.empty_cache()

    if "bert" in args.models:
        path = ensure_model("bert-base", cache)
        module, _ = build("bert-base")
        file = open_model_file(path)
        start = time.perf_counter()
        compiled = Predictor(file, device=device, mode="compiled")
        data = bench.random_inputs(compiled, 1)
        compiled.predict(dict(data))
        print(f"bert-base: load + first prediction {time.perf_counter() - start:.2f} s, "
              f"{compiled.engine.stats['fusions']}", flush=True)
        no_graph = Predictor(file, device=device, mode="compiled", compile_options={"cuda_graphs": False})
        runners = {
            "ours compiled (graph replay)": bench.ours(compiled, data),
            "ours compiled, no graph": bench.ours(no_graph, data),
            "ours interp": bench.ours(Predictor(file, device=device, mode="interp"), data),
            "torch eager f16": bench.torch_eager(module, data, device, half=cuda),
        }
        if cuda:
            runners["torch CUDA graph f16"] = bench.torch_cuda_graph(module, data, device, half=True,
                                                                     channels_last=False)
        report("BERT-base f16 s128 b1", bench.compare(runners, device, 1, args.warmup, runs), OURS, results)
        if cuda:
            results["bert_profile_no_graph"] = kernel_profile(bench.ours(no_graph, data))
            print(json.dumps(results["bert_profile_no_graph"], indent=1), flush=True)
    if args.compile or args.anchor_compile:
        # Last: torch.compile's warm-up is the longest part of the suite.
        file = open_model_file(ensure_model("resnet50", cache, flexible_batch=256))
        module, _ = build("resnet50")
        compiled = Predictor(file, device=device, mode="compiled")
        data1 = bench.random_inputs(compiled, 1)
        compiled.predict(dict(data1))
    if args.compile:
        start = time.perf_counter()
        comp = Predictor(file, device=device, mode="compile", compile_options={"compile_mode": args.compile})
        comp.predict(dict(data1))
        warm = time.perf_counter() - start
        print(f"resnet50 torch.compile({args.compile}) warm-up {warm:.1f} s", flush=True)
        runners = {"ours compiled (graph replay)": bench.ours(compiled, data1),
                   f"ours compile {args.compile}": bench.ours(comp, data1)}
        report("ResNet-50 f16 b1 torch.compile mode", bench.compare(runners, device, 1, args.warmup, runs),
               "ours compiled (graph replay)", results)
        results["resnet50_compile_warmup_s"] = warm
        del comp
    if args.anchor_compile:
        eager = module.to(device).half().to(memory_format=torch.channels_last)  # CUDA only
        start = time.perf_counter()
        fn = torch.compile(eager, mode=args.anchor_compile)
        x = bench._module_inputs(data1, device, True, True)
        with torch.inference_mode():
            for _ in range(3):
                fn(*x)
        torch.cuda.synchronize()
        warm = time.perf_counter() - start
        print(f"torch.compile({args.anchor_compile}) of the eager module: warm-up {warm:.1f} s", flush=True)
        runners = {"ours compiled (graph replay)": bench.ours(compiled, data1),
                   f"torch.compile {args.anchor_compile}": lambda: fn(*x)}
        report("ResNet-50 f16 b1 vs torch.compile", bench.compare(runners, device, 1, args.warmup, runs),
               "ours compiled (graph replay)", results)
        results["anchor_compile_warmup_s"] = warm
    return results


def cpu_suite(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    results: dict = {"environment": environment()}
    print(json.dumps(results["environment"]), flush=True)
    device = torch.device("cpu")
    for name in args.models.split(","):
        path = ensure_model(name, Path(args.cache))
        module, _ = build(name)
        file = open_model_file(path)
        runners = {}
        for policy in args.policies.split(","):
            pred = Predictor(file, device="cpu", mode="compiled", policy=policy)
            data = bench.random_inputs(pred, 1)
            runners[f"ours compiled ({policy})"] = bench.ours(pred, data)
        runners["ours interp (auto)"] = bench.ours(Predictor(file, device="cpu", mode="interp"), data)
        runners["torch eager f32"] = bench.torch_eager(module, data, device)
        runners["onnxruntime cpu"] = bench.onnxruntime_cpu(module, data, args.threads)
        first = next(iter(runners))
        timings = bench.compare(runners, device, 1, min(args.warmup, 3), args.runs)
        report(f"{name} f32 compute b1, {args.threads} threads", timings, first, results)
    return results


def load_suite(args: argparse.Namespace) -> dict:
    """load_model → first prediction of ResNet-50 on the CPU, in a fresh process (imports done before)."""
    path = ensure_model("resnet50", Path(args.cache))
    code = (
        "import time, numpy as np, torch, tensorlogic as tl\n"
        f"torch.set_num_threads({args.threads})\n"
        "from tensorlogic.runtime import predictor, compiled\n"
        "x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)\n"
        "t = time.perf_counter()\n"
        f"m = tl.load_model({str(path)!r}, device='cpu')\n"
        "t1 = time.perf_counter()\n"
        "m.predict({'x': x})\n"
        "t2 = time.perf_counter()\n"
        "m.predict({'x': x})\n"
        "t3 = time.perf_counter()\n"
        "print(f'{t1 - t:.3f} {t2 - t1:.3f} {t3 - t2:.3f}')\n"
    )
    results: dict = {"environment": environment()}
    for mode in ("interp", "compiled"):
        samples = []
        for _ in range(args.repeat):
            env = dict(os.environ, TL_MODE=mode)
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            samples.append([float(v) for v in out.stdout.split()[-3:]])
        best = min(samples, key=lambda s: s[0] + s[1])
        results[f"load_{mode}"] = {"load_s": best[0], "first_prediction_s": best[1], "second_prediction_s": best[2],
                                   "samples": samples}
        print(f"{mode}: load {best[0]:.3f} s + first prediction {best[1]:.3f} s = {best[0] + best[1]:.3f} s "
              f"(second prediction {best[2]:.3f} s; best of {args.repeat})", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", choices=["gpu", "cpu", "load"])
    ap.add_argument("--cache", default=str(ROOT / ".gpu" / "models"), help="converted models live here")
    ap.add_argument("--out", default=None, help="write the results as JSON into this folder")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls per runner before timing")
    ap.add_argument("--device", default="cuda", help="gpu suite: cuda, or cpu for a smoke run of the script")
    ap.add_argument("--big-batch", type=int, default=256, help="gpu suite: the throughput batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=None)
    ap.add_argument("--policies", default="auto,fp16-storage", help="CPU precision policies for our compiled path")
    ap.add_argument("--compile", default=None, help="also time mode=compile with this torch.compile mode")
    ap.add_argument("--anchor-compile", default=None, help="also time torch.compile(MODE) of the eager module")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes for the load suite")
    args = ap.parse_args()
    if args.models is None:
        args.models = "resnet50,bert" if args.suite == "gpu" else "resnet50,mobilenetv2"
    suites = {"gpu": gpu_suite, "cpu": cpu_suite, "load": load_suite}
    results = suites[args.suite](args)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"inference_{args.suite}.json"), "w") as fh:
            json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
