"""Batch inference on Ray Data against a plain in-process loop of ``predict``: images/s and their ratio, one run.

    python benchmarks/bench_ray.py                    # CPU: 1, 2 and 4 CPU actors vs in-process
    python benchmarks/bench_ray.py --device cuda      # one GPU actor vs in-process on the GPU (goal: <= 10 % cost)

Both sides read the same JPEG files (random pixels, 224x224) and run the same fp16 MobileNetV2 ML Program
(``benchmarks/models.py``, random weights, BatchNorm calibrated, an RGB image input) in compiled mode at the same
batch size. The in-process loop decodes each batch with Pillow and calls ``Predictor.predict(batch, batch=True)``;
Ray runs ``tensorlogic.batch.predict_dataset`` on a local cluster started here. Ray's time counts from the
``predict_dataset`` call to the last row in the driver, so it includes starting the actors and loading the model
in each; the start-up alone is timed as a job of one batch just before, and ``without start-up`` is
``(images - batch) / (full - start-up)``, an estimate. The in-process loop is timed before the cluster starts and
after it stops (the ratios use their mean): Ray's idle daemons slow it down on a small machine. On a CPU each
actor gets ``cores // actors`` torch threads (at least 1), the in-process loop all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_images(folder: Path, n: int, size: int = 224) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"img{i:05d}.jpg", quality=90)
    return folder


def make_model(cache: Path) -> Path:
    """MobileNetV2 with a 224x224 RGB image input (pixels / 255), fp16, converted once into ``cache``."""
    path = cache / "mobilenetv2-image.mlpackage"
    if path.exists():
        return path
    warnings.filterwarnings("ignore")
    import coremltools as ct
    import torch
    from benchmarks.models import build

    module, shape = build("mobilenetv2")
    image = ct.ImageType(name="image", shape=shape, color_layout=ct.colorlayout.RGB, scale=1 / 255.0)
    mlmodel = ct.convert(torch.jit.trace(module, torch.rand(shape)), inputs=[image], convert_to="mlprogram",
                         compute_precision=ct.precision.FLOAT16)
    cache.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(path))
    return path


def in_process(model: Path, files: list[Path], batch: int, device: str) -> dict:
    """A plain loop: decode a batch with Pillow, predict it, next batch. The first batch warms up (untimed)."""
    from PIL import Image

    from tensorlogic.formats import open_model_file
    from tensorlogic.runtime.predictor import Predictor

    start = time.perf_counter()
    pred = Predictor(open_model_file(model), device=device, mode="compiled")

    def run(chunk: list[Path]) -> None:
        pred.predict([{"image": Image.open(p).convert("RGB")} for p in chunk], batch=True)

    run(files[:batch])
    warm_s = time.perf_counter() - start
    t0 = time.perf_counter()
    for i in range(0, len(files), batch):
        run(files[i : i + batch])
    sync(device)
    elapsed = time.perf_counter() - t0
    return {"images_per_s": len(files) / elapsed, "seconds": elapsed, "load_and_warmup_s": warm_s}


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _job(model: Path, folder: Path, batch: int, actors: int, threads: int, gpus: float) -> tuple[int, float]:
    from tensorlogic.batch import predict_dataset

    t0 = time.perf_counter()
    ds = predict_dataset(model, folder, batch_size=batch, concurrency=actors, num_cpus_per_actor=threads,
                         num_gpus_per_actor=gpus)
    rows = errors = 0
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows += table.num_rows
        errors += table.num_rows - table.column("error").null_count
    if errors:
        raise SystemExit(f"ray run with {actors} actors: {errors} rows failed")
    return rows, time.perf_counter() - t0


def on_ray(model: Path, folder: Path, one_batch: Path, n: int, batch: int, actors: int, threads: int,
           gpus: float) -> dict:
    _, startup = _job(model, one_batch, batch, actors, threads, gpus)
    rows, elapsed = _job(model, folder, batch, actors, threads, gpus)
    if rows != n:
        raise SystemExit(f"ray run with {actors} actors: {rows} rows, expected {n}")
    rest = (n - batch) / (elapsed - startup) if elapsed > startup else float("nan")
    return {"actors": actors, "threads_per_actor": threads, "images_per_s": n / elapsed, "seconds": elapsed,
            "startup_s": startup, "images_per_s_without_startup": rest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--images", type=int, default=None, help="images (default 2048 on cpu, 8192 on cuda)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--actors", default="1,2,4", help="CPU actor counts to time (cpu mode)")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "bench-models",
                        help="where the model is converted (default build/bench-models, git-ignored)")
    parser.add_argument("--model", type=Path, default=None, help="an image-input .mlpackage instead of MobileNetV2")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import ray
    import torch

    cores = os.cpu_count() or 1
    n = args.images or (8192 if args.device == "cuda" else 2048)
    model = args.model or make_model(args.cache)
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    try:
        folder = make_images(work / "images", n)
        files = sorted(folder.glob("*.jpg"))
        one_batch = work / "one_batch"
        one_batch.mkdir()
        for f in files[: args.batch_size]:
            shutil.copy(f, one_batch / f.name)
        counts = [int(a) for a in args.actors.split(",")] if args.device == "cpu" else [1]
        plans = [(a, max(1, cores // a) if args.device == "cpu" else max(1, cores - 1)) for a in counts]
        # Before the cluster starts (and again after it stops): its idle daemons would slow the loop down.
        before = in_process(model, files, args.batch_size, args.device)
        # Logical CPUs: every actor's share plus one for Ray Data's read tasks, however many cores there are.
        ray.init(address="local", num_cpus=max(a * t for a, t in plans) + 1, include_dashboard=False,
                 _node_ip_address="127.0.0.1", logging_level="WARNING", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        env = {"device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {cores} cores",
               "cpu": platform.processor(), "python": platform.python_version(), "torch": torch.__version__,
               "ray": ray.__version__, "images": n, "batch_size": args.batch_size, "model": str(model),
               "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        print(json.dumps(env), flush=True)
        runs = []
        for actors, threads in plans:
            runs.append(on_ray(model, folder, one_batch, n, args.batch_size, actors, threads,
                               1.0 if args.device == "cuda" else 0))
        ray.shutdown()
        after = in_process(model, files, args.batch_size, args.device)
        base = {"before": before, "after": after,
                "images_per_s": (before["images_per_s"] + after["images_per_s"]) / 2}
        print(f"in-process ({torch.get_num_threads()} threads): {before['images_per_s']:8.1f} images/s before the "
              f"cluster starts, {after['images_per_s']:8.1f} after it stops (load + warm-up "
              f"{before['load_and_warmup_s']:.1f} s)")
        kind = "GPU" if args.device == "cuda" else "CPU"
        for r in runs:
            r["ray_over_in_process"] = r["images_per_s"] / base["images_per_s"]
            r["without_startup_over_in_process"] = r["images_per_s_without_startup"] / base["images_per_s"]
            print(f"ray {r['actors']} {kind} actor(s) x {r['threads_per_actor']} threads: {r['images_per_s']:8.1f} "
                  f"images/s = {r['ray_over_in_process']:.2f}x in-process; start-up {r['startup_s']:.1f} s; "
                  f"without it {r['images_per_s_without_startup']:8.1f} = {r['without_startup_over_in_process']:.2f}x")
        if args.json:
            args.json.write_text(json.dumps({"environment": env, "in_process": base, "ray": runs}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if ray.is_initialized():
            ray.shutdown()


if __name__ == "__main__":
    main()
