"""Latency and throughput measurement shared by ``tl bench`` and ``benchmarks/``.

Every runner is a no-argument callable that does one inference. ``compare`` warms each up, then times
them in interleaved rounds (so a noisy machine slows all of them alike), each call timed alone: with
CUDA events on a GPU, with the wall clock on the CPU. Alternatives to our engine:
``torch_eager`` (the original module), ``torch_cuda_graph`` (its forward captured once),
``onnxruntime_cpu`` (an ONNX export of the module run by ONNX Runtime's CPU provider).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError, UnsupportedError
from .dtypes import numpy_dtype, to_torch
from .features import check_shape


@dataclass
class Timing:
    """Samples of one runner, in milliseconds per call of ``batch`` items."""

    name: str
    batch: int
    samples: list[float] = field(default_factory=list)
    warmup_s: float = 0.0
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]

    @property
    def throughput(self) -> float:
        """Items per second at the median latency."""
        return self.batch * 1000.0 / self.median

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "batch": self.batch, "median_ms": self.median, "p90_ms": self.p90,
                "throughput": self.throughput, "runs": len(self.samples), "warmup_s": self.warmup_s,
                "note": self.note}


def _timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed(fn: Callable[[], Any]) -> float:
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

        return timed

    def wall(fn: Callable[[], Any]) -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1000.0

    return wall


def compare(
    runners: Mapping[str, Callable[[], Any]],
    device: torch.device,
    batch: int = 1,
    warmup: int = 10,
    runs: int = 100,
    rounds: int = 5,
    progress: Callable[[str, int], None] | None = None,
) -> list[Timing]:
    """Warm each runner up, then time ``runs`` calls of each, interleaved in ``rounds``."""
    timer = _timer(device)
    timings = {name: Timing(name, batch) for name in runners}
    with torch.inference_mode():
        for name, fn in runners.items():
            t = time.perf_counter()
            for _ in range(warmup):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings[name].warmup_s = time.perf_counter() - t
            if progress:
                progress(name, 0)
        per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
        for n in per_round:
            for name, fn in runners.items():
                for _ in range(n):
                    timings[name].samples.append(timer(fn))
                if progress:
                    progress(name, n)
    return list(timings.values())


# --- inputs ------------------------------------------------------------------------------------


def input_shape(feature: Any, batch: int) -> tuple[int, ...]:
    """A shape ``feature`` accepts with ``batch`` as its first dimension, or InputError."""
    if feature.enumerated:
        for shape in feature.enumerated:
            if shape and shape[0] == batch:
                return tuple(shape)
        raise InputError(f"input {feature.name!r} takes {feature.describe_shape()}: no shape with batch {batch}")
    if feature.ranges:
        shape = [max(lo, 1) for lo, _ in feature.ranges]
    elif feature.shape is not None:
        shape = [d if isinstance(d, int) else 1 for d in feature.shape]
    else:
        raise InputError(f"input {feature.name!r} has no declared shape to benchmark with")
    if not shape:
        return ()
    shape[0] = batch
    try:
        check_shape(feature, tuple(shape))
    except InputError:
        raise InputError(f"input {feature.name!r} takes {feature.describe_shape()}: batch {batch} does not fit "
                         "(convert the model with a flexible first dimension)") from None
    return tuple(shape)


def random_inputs(predictor: Any, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays for every input of a ``Predictor``: floats in [0, 1), integers in {0, 1}."""
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    for feat in predictor.signature.inputs:
        if feat.kind != "multiArray":
            raise UnsupportedError(f"input {feat.name!r} is a {feat.kind} input: benchmark with array inputs")
        shape = input_shape(feat, batch)
        dtype = np.dtype(numpy_dtype(feat.dtype or "fp32"))
        if dtype.kind == "f":
            data[feat.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        else:
            data[feat.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return data


def device_inputs(predictor: Any, data: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``data`` as tensors in each input's compute dtype on the predictor's device."""
    slots = {s.name: s for s in predictor.interpreter.input_slots}
    return {n: to_torch(a, slots[n].dtype or torch.float32, predictor.device) for n, a in data.items()}


# --- runners -----------------------------------------------------------------------------------


def ours(predictor: Any, data: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    """One run of the predictor's engine on device-resident inputs (no host copies)."""
    tensors = device_inputs(predictor, data)
    engine = predictor.engine
    return lambda: engine.run(tensors)


def ours_predict(predictor: Any, data: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    """``predict`` end to end: numpy in, numpy out (host ↔ device copies included)."""
    return lambda: predictor.predict(dict(data))


def _module_inputs(data: Mapping[str, np.ndarray], device: torch.device, half: bool,
                   channels_last: bool) -> list[torch.Tensor]:
    tensors = []
    for arr in data.values():
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
        if t.is_floating_point():
            t = t.half() if half else t.float()
            if channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
        elif t.dtype == torch.int32:
            t = t.long()  # embeddings in eager PyTorch take int64 indices
        tensors.append(t)
    return tensors


def torch_eager(module: torch.nn.Module, data: Mapping[str, np.ndarray], device: torch.device,
                half: bool = False, channels_last: bool = False) -> Callable[[], Any]:
    """The original PyTorch module, eager, as its users would run it."""
    module = module.to(device).eval()
    if half:
        module = module.half()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    args = _module_inputs(data, device, half, channels_last)
    return lambda: module(*args)


def torch_cuda_graph(module: torch.nn.Module, data: Mapping[str, np.ndarray], device: torch.device,
                     half: bool = True, channels_last: bool = True) -> Callable[[], Any]:
    """The module's forward captured once as a CUDA graph, then replayed."""
    eager = torch_eager(module, data, device, half, channels_last)
    with torch.inference_mode():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                eager()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            eager()
    return graph.replay


def onnxruntime_cpu(module: torch.nn.Module, data: Mapping[str, np.ndarray],
                    threads: int | None = None) -> Callable[[], Any]:
    """The module exported to ONNX (opset 17), run by ONNX Runtime's CPU provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UnsupportedError("ONNX Runtime is not installed (pip install 'tensorlogic[bench]')") from None
    module = module.cpu().float().eval()
    args = tuple(_module_inputs(data, torch.device("cpu"), False, False))
    names = list(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(module, args, path, input_names=names, opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {n: a.numpy() for n, a in zip(names, args)}
    return lambda: session.run(None, feed)


def load_torch_module(spec: str) -> torch.nn.Module:
    """``package.module:factory`` → the module the factory returns (a ``(module, ...)`` tuple is fine)."""
    import importlib
    import sys

    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise InputError(f"--torch-module {spec!r}: expected MODULE:FACTORY, e.g. benchmarks.models:resnet50")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as ``python -m`` does, so repository modules import
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"--torch-module {spec!r}: {e}") from None
    made = factory()
    module = made[0] if isinstance(made, tuple) else made
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--torch-module {spec!r}: {attr}() returned {type(module).__name__}, not a torch module")
    return module.eval()


def ratios(timings: Sequence[Timing], ours_name: str) -> dict[str, float]:
    """Our median over each runner's median (below 1: we are faster)."""
    base = next(t for t in timings if t.name == ours_name).median
    return {t.name: base / t.median for t in timings}
