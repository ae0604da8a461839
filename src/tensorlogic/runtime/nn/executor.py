"""The NeuralNetwork executor: plan a layer list once at load, then run it layer by layer on torch.

Planning resolves every layer to its registered builder (an unsupported layer type fails here, naming
the type and the layer), dequantizes weights onto the device, and records after which step each blob
is last read so intermediates are freed early. Running walks the steps over a blob environment.

Tensors: every blob is a floating tensor in the network's compute dtype (Core ML's NeuralNetwork
engine keeps integers such as indices and shapes as float values too). Ranks follow the spec: with
the legacy rank-5 mapping model inputs become ``[Seq, Batch, C, H, W]`` blobs; with the exact mapping
they keep their rank, and each layer applies its documented rule for the rank it is given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import OpError, TensorLogicError, UnsupportedError
from . import registry
from .weights import WeightError, weight_values


class LoopSignal(Exception):
    """Raised by loopBreak / loopContinue and caught by the enclosing loop layer."""


@dataclass
class Step:
    """One layer call: the run function and the blobs it reads and writes."""

    type: str
    name: str
    fn: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    scoped: bool
    reads: frozenset[str]  # every blob read, nested networks included
    writes: frozenset[str]  # every blob written, nested networks included
    free: tuple[str, ...] = ()


def _count(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo} to {hi}" if hi < 99 else f"at least {lo}"


class LayerContext:
    """What a layer builder may use: the layer's identity, the device and dtype, and weight loading."""

    def __init__(self, layer: Any, kind: str, planner: _Planner):
        self.layer = layer
        self.type = kind
        self.name = layer.name
        self.inputs = tuple(layer.input)
        self.outputs = tuple(layer.output)
        self.device = planner.device
        self.dtype = planner.dtype
        self._planner = planner
        self.nested: list[Network] = []

    @property
    def n_inputs(self) -> int:
        return len(self.inputs)

    @property
    def n_outputs(self) -> int:
        return len(self.outputs)

    def error(self, message: str) -> OpError:
        """A one-line error naming this layer and its type."""
        return OpError(message, op=self.type, var=self.name)

    def require(self, lo: int, hi: int | None = None, outputs: tuple[int, int] = (1, 1)) -> None:
        """Check the input and output counts the spec allows for this layer (one output unless told)."""
        hi = lo if hi is None else hi
        if not lo <= self.n_inputs <= hi:
            raise self.error(f"takes {_count(lo, hi)} inputs, the layer lists {self.n_inputs}")
        if not outputs[0] <= self.n_outputs <= outputs[1]:
            raise self.error(f"makes {_count(*outputs)} outputs, the layer lists {self.n_outputs}")

    def values(self, wp: Any, count: int | None, what: str, shape: tuple[int, ...] | None = None,
               axis: int = 0) -> np.ndarray:
        """A weight as numpy (float32, or float16 when stored so), dequantized."""
        try:
            return weight_values(wp, count, shape, axis)
        except WeightError as e:
            raise self.error(f"{what}: {e}") from None

    def weight(self, wp: Any, count: int | None, what: str, shape: tuple[int, ...] | None = None,
               axis: int = 0) -> torch.Tensor:
        """A weight as a tensor on the device, in the compute dtype."""
        return self.tensor(self.values(wp, count, what, shape, axis))

    def tensor(self, data: Any) -> torch.Tensor:
        arr = np.ascontiguousarray(np.asarray(data))
        return torch.from_numpy(arr).to(device=self.device, dtype=self.dtype)

    @property
    def in_loop(self) -> bool:
        return self._planner.loop_depth > 0

    def network(self, message: Any, loop_body: bool = False) -> Network:
        """Plan a nested network (branch, loop condition or body) that shares the outer blob environment."""
        self._planner.loop_depth += loop_body
        try:
            net = self._planner.network(message.layers)
        finally:
            self._planner.loop_depth -= loop_body
        self.nested.append(net)
        return net


class Network:
    """A planned list of layers. Reentrant: blobs live in the environment each run passes in."""

    def __init__(self, steps: list[Step]):
        self.steps = steps

    def reads(self) -> set[str]:
        return {n for s in self.steps for n in s.reads}

    def writes(self) -> set[str]:
        return {n for s in self.steps for n in s.writes}

    def run(self, env: MutableMapping[str, Any], keep: frozenset[str] = frozenset()) -> None:
        debug = debug_level()
        for step in self.steps:
            try:
                args = [env[n] for n in step.inputs]
            except KeyError as e:
                raise OpError(f"input blob {e.args[0]!r} has not been computed", op=step.type, var=step.name) \
                    from None
            try:
                result = step.fn(env, *args) if step.scoped else step.fn(*args)
            except (TensorLogicError, LoopSignal):
                raise
            except Exception as e:
                raise OpError(_one_line(e), op=step.type, var=step.name, inputs=_describe(args)) from e
            if step.outputs:
                results = result if isinstance(result, tuple) else (result,)
                if len(results) < len(step.outputs):
                    raise OpError(f"made {len(results)} outputs, the layer lists {len(step.outputs)}",
                                  op=step.type, var=step.name)
                for name, value in zip(step.outputs, results):
                    env[name] = value
                if debug:
                    _trace(step, results, debug)
            for name in step.free:
                if name not in keep:
                    env.pop(name, None)


class _Planner:
    def __init__(self, device: torch.device, dtype: torch.dtype, defined: Iterable[str]):
        self.device = device
        self.dtype = dtype
        self.defined = set(defined)
        self.loop_depth = 0

    def network(self, layers: Iterable[Any]) -> Network:
        steps = []
        for lay in layers:
            kind = lay.WhichOneof("layer")
            if kind is None:
                raise OpError("has no layer parameters (unknown or empty layer type)", op="layer", var=lay.name)
            if kind == "custom":
                raise UnsupportedError(
                    f"NeuralNetwork custom layer {lay.name!r} (class {lay.custom.className!r}) needs code "
                    "TensorLogic does not have")
            ldef = registry.get(kind, lay.name)
            for name in lay.input:
                if name not in self.defined:
                    raise OpError(f"input blob {name!r} is not produced by the model inputs or an earlier layer",
                                  op=kind, var=lay.name)
            ctx = LayerContext(lay, kind, self)
            try:
                fn = ldef.build(getattr(lay, kind), ctx)
            except TensorLogicError:
                raise
            except Exception as e:
                raise OpError(_one_line(e), op=kind, var=lay.name) from e
            reads = set(lay.input)
            writes = set(lay.output)
            for net in ctx.nested:
                reads |= net.reads()
                writes |= net.writes()
            self.defined |= writes
            steps.append(Step(kind, lay.name, fn, tuple(lay.input), tuple(lay.output), ldef.scoped,
                              frozenset(reads), frozenset(writes)))
        return Network(steps)


def plan_network(layers: Iterable[Any], inputs: Iterable[str], keep: Iterable[str], device: torch.device,
                 dtype: torch.dtype) -> Network:
    """Plan the top-level layers of a NeuralNetwork; blobs in ``keep`` (the outputs) are never freed."""
    net = _Planner(device, dtype, inputs).network(layers)
    kept = set(keep)
    last: dict[str, int] = {}
    for i, step in enumerate(net.steps):
        for name in step.reads | step.writes:
            last[name] = i
    frees: dict[int, list[str]] = {}
    for name, i in last.items():
        if name not in kept:
            frees.setdefault(i, []).append(name)
    for i, step in enumerate(net.steps):
        step.free = tuple(frees.get(i, ()))
    return net


# --- debugging ---------------------------------------------------------------------------------


def debug_level() -> int:
    raw = os.environ.get("TL_DEBUG", "")
    return int(raw) if raw.isdigit() else (1 if raw else 0)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if type(e).__name__ not in line:
        line = f"{type(e).__name__}: {line}"
    return line[:300]


def describe_value(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"{str(v.dtype).replace('torch.', '')}[{','.join(str(d) for d in v.shape)}]"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(args: list[Any]) -> str:
    return ", ".join(describe_value(a) for a in args if not isinstance(a, Mapping))


def value_stats(v: Any) -> str:
    if not isinstance(v, torch.Tensor) or v.numel() == 0:
        return ""
    f = v.detach().double()
    finite = f[torch.isfinite(f)]
    lo = float(finite.min()) if finite.numel() else float("nan")
    hi = float(finite.max()) if finite.numel() else float("nan")
    return f" min={lo:.6g} max={hi:.6g} nan={int(torch.isnan(f).sum())} inf={int(torch.isinf(f).sum())}"


def _trace(step: Step, results: tuple, debug: int) -> None:
    parts = [f"{n}: {describe_value(v)}{value_stats(v) if debug >= 2 else ''}" for n, v in zip(step.outputs, results)]
    print(f"[tl] {step.type} {step.name} -> {'; '.join(parts)}", file=sys.stderr)
