"""Pipelines (``pipeline``, ``pipelineClassifier``, ``pipelineRegressor``) and ML Program sub-models.

A pipeline runs its models in order over one feature environment: each model reads its declared
inputs by name and adds its outputs, which later models (and the pipeline's own outputs) read.
``TL_DEBUG=1`` traces each model's outputs (``2`` adds min/max/NaN counts), as the NeuralNetwork
executor traces its layers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ...errors import InputError, UnsupportedError
from ..nn.executor import debug_level, describe_value, value_stats
from ..nn.runner import Runner

PIPELINE_TYPES = ("pipeline", "pipelineClassifier", "pipelineRegressor")


class PipelineRunner(Runner):
    """Sub-model runners chained by feature name."""

    def __init__(self, spec: Any, build: Callable[[Any], Runner]):
        kind = spec.WhichOneof("Type")
        pipe = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        if not len(pipe.models):
            raise UnsupportedError(f"the {kind} has no models")
        self.description = spec.description
        self.input_names = tuple(fd.name for fd in spec.description.input)
        self.output_names = tuple(fd.name for fd in spec.description.output)
        self.stages: list[Runner] = []
        self.kinds = [sub.WhichOneof("Type") for sub in pipe.models]
        known = set(self.input_names)
        for i, sub in enumerate(pipe.models):
            needed = [fd.name for fd in sub.description.input if fd.name not in known and not fd.type.isOptional]
            if needed:
                raise UnsupportedError(f"pipeline model {i} ({sub.WhichOneof('Type')}) needs feature {needed[0]!r}, "
                                       "which neither the pipeline inputs nor an earlier model provide")
            self.stages.append(build(sub))
            known |= {fd.name for fd in sub.description.output}
        missing = [n for n in self.output_names if n not in known]
        if missing:
            raise UnsupportedError(f"pipeline output {missing[0]!r} is not produced by any of its models")
        self.device = self.stages[-1].device

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        env = dict(feeds)
        for name in self.input_names:
            if name not in env:
                raise InputError(f"input {name!r} is missing")
        debug = debug_level()
        for i, stage in enumerate(self.stages):
            out = stage.run({n: env[n] for n in stage.input_names if n in env})
            if debug:
                parts = [f"{n}: {describe_value(v)}{value_stats(v) if debug >= 2 else ''}" for n, v in out.items()]
                print(f"[tl] pipeline model {i} ({self.kinds[i]}) -> {'; '.join(parts)}", file=sys.stderr)
            env.update(out)
        return {n: env[n] for n in self.output_names}


class MLProgramRunner(Runner):
    """An ``mlProgram`` model, run by the ML Program interpreter (its default function)."""

    def __init__(self, spec: Any, device: str | torch.device = "cpu", policy: str = "auto",
                 loader: Callable[..., np.ndarray] | None = None):
        from ...mil.from_proto import program_from_proto
        from ..interpreter import Interpreter

        program, blobs = program_from_proto(spec.mlProgram, loader=loader)
        if blobs and loader is None:
            raise UnsupportedError("the ML Program sub-model keeps its weights in "
                                   f"{sorted(blobs)[0]}: pass a blob loader (the model file) to run it")
        name = spec.description.defaultFunctionName or ("main" if "main" in program.functions else
                                                        next(iter(program.functions), ""))
        if name not in program.functions:
            raise UnsupportedError(f"the ML Program has no function {name!r}")
        self.interpreter = Interpreter(program.functions[name], device, policy)
        self.device = self.interpreter.device
        self.slots = {s.name: s for s in self.interpreter.input_slots}
        self.input_names = tuple(self.slots)
        self.output_names = tuple(fd.name for fd in spec.description.output)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        inputs = {}
        for name, slot in self.slots.items():
            if name not in feeds:
                raise InputError(f"input {name!r} is missing")
            value = feeds[name]
            t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
            inputs[name] = t.to(device=self.device, dtype=slot.dtype or torch.float32)
        with torch.inference_mode():
            out = self.interpreter.run(inputs)
        return {n: out[n] for n in self.output_names if n in out}
