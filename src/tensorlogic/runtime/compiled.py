"""The compiled execution path: a planned MIL function lowered once to a straight-line torch program.

``CompiledProgram(plan)`` takes the interpreter's load-time ``Plan`` (same registry, same constants)
and:

1. rewrites it with the fusion passes of ``fusion.py`` (conv+bias+activation, conv+add+relu,
   linear+activation, attention as ``scaled_dot_product_attention``, Q/K/V linears merged);
2. keeps 4-d convolution weights in channels_last on the device, so every conv runs in the layout
   cuDNN and oneDNN are fastest in (the first conv converts its input once);
3. generates one Python function with a line per step, locals instead of an environment dict, ``del``
   at each variable's last use, and the declared-dtype casts the interpreter does;
4. on CUDA, captures a CUDA graph per input shape on its first run (after two warm-up runs with
   cuDNN's autotuner on) and replays it afterwards;
5. in ``mode="compile"``, hands the generated function to ``torch.compile``.

The interpreter stays the reference: ``outputs=[...]`` naming intermediates, and ``TL_DEBUG`` tracing,
run through it. Errors name the failing op as the interpreter's do.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from ..errors import InputError, OpError, TensorLogicError, UnsupportedError
from ..mil import ir
from . import fusion
from .interpreter import (
    BlockPlan,
    Interpreter,
    Plan,
    Ref,
    StateValue,
    Step,
    _as_outputs,
    _as_tensor,
    _debug_level,
    _describe,
    _one_line,
    _outer_refs,
    _refs,
    convert_param,
    cudnn_flags,
    last_uses,
)

MODES = ("interp", "compiled", "compile")

# Passes whose primitives torch.compile can trace (the cuDNN and oneDNN fused convs have no meta kernels
# for a packed weight; inductor fuses conv epilogues itself).
COMPILE_PASSES = ("attention", "merge_linear")

_CONV_OPS = frozenset({"conv", "conv_transpose", "conv_quantized"})


class _Lowered:
    """The generated source of one block and the globals it runs with."""

    def __init__(self, plan: Plan, body: BlockPlan, checked: bool, blocks: Callable[[int, dict], Callable]):
        self.plan = plan
        self.body = body
        self.idents: dict[str, str] = {}
        self.globals: dict[str, Any] = {
            "_o": self._one, "_os": self._many, "_cp": self._param, "_blk": blocks, "_OpError": OpError,
            "_fail": None,
        }
        self.nested: list[BlockPlan] = []
        self.source = self._generate(checked)
        code = compile(self.source, f"<tensorlogic compiled {plan.function}>", "exec")
        namespace: dict[str, Any] = {}
        exec(code, self.globals, namespace)  # noqa: S102 - our own generated source
        self.forward: Callable[..., tuple] = namespace["forward"]

    # Helpers the generated code calls: they do what the interpreter does to each result.
    def _one(self, r: Any, dtype: torch.dtype | None, rounding: torch.dtype | None) -> Any:
        if type(r) is tuple:
            r = _as_outputs(r, 1)[0]
        if dtype is None:
            return r
        if type(r) is torch.Tensor:
            if r.dtype is not dtype:
                r = r.to(dtype)
        else:
            r = _as_tensor(r, dtype, self.plan.device)
        if rounding is not None and isinstance(r, torch.Tensor):
            r = r.to(rounding).to(dtype)
        return r

    def _many(self, r: Any, n: int, dtypes: tuple, roundings: tuple) -> tuple:
        return tuple(self._one(v, d, rd) if d is not None else v
                     for v, d, rd in zip(_as_outputs(r, n), dtypes, roundings))

    def _param(self, kind: str, value: Any) -> Any:
        return convert_param(kind, value, self.plan.policy, self.plan.device)

    # Source generation.
    def _bind(self, value: Any, prefix: str = "c") -> str:
        name = f"{prefix}{len(self.globals)}"
        self.globals[name] = value
        return name

    def _ident(self, var: str) -> str:
        if var not in self.idents:
            self.idents[var] = f"v{len(self.idents)}"
        return self.idents[var]

    def _expr(self, src: Any) -> str:
        if isinstance(src, Ref):
            if src.name not in self.idents:
                raise UnsupportedError(f"compiled path: {src.name!r} is read before it is made")
            return self.idents[src.name]
        if isinstance(src, tuple):
            return "(" + "".join(self._expr(s) + ", " for s in src) + ")"
        return self._bind(src)

    def _generate(self, checked: bool) -> str:
        body = self.body
        args = [self._ident(slot.name) for slot in self.plan.inputs]
        last = last_uses(body)
        keep = {n for src in body.outputs for n in _refs(src)}
        lines = [f"def forward({', '.join(args)}):"]
        pad = "    "
        if checked:
            lines += [pad + "i = -1", pad + "try:"]
            pad += "    "
        for i, step in enumerate(body.steps):
            if checked:
                lines.append(f"{pad}i = {i}")
            kwargs = [f"{k}={self._bind(v)}" for k, v in step.fixed.items()]
            for name, src in step.dynamic.items():
                expr = self._expr(src)
                if name in step.params:
                    expr = f"_cp({step.params[name]!r}, {expr})"
                kwargs.append(f"{name}={expr}")
            if step.blocks:
                fns = []
                for block in step.blocks:
                    self.nested.append(block)
                    env = ", ".join(f"{n!r}: {self._expr(Ref(n))}" for n in sorted(_outer_refs(block)))
                    fns.append(f"_blk({len(self.nested) - 1}, {{{env}}})")
                kwargs.append(f"blocks=({', '.join(fns)},)")
            if isinstance(step.fn, fusion.Fused):
                # Fused steps take their inputs positionally (in0, in1, ... in order).
                kwargs = [self._expr(step.dynamic[f"in{k}"]) for k in range(len(step.dynamic))]
            call = f"{self._bind(step.fn, 'f')}({', '.join(kwargs)})"
            outs = [self._ident(o) for o in step.outputs]
            if len(outs) == 1:
                dt, rd = step.out_dtypes[0], step.out_rounding[0]
                lines.append(f"{pad}{outs[0]} = _o({call}, {self._bind(dt, 'd')}, {self._bind(rd, 'd')})")
            elif outs:
                lines.append(f"{pad}{', '.join(outs)}, = _os({call}, {len(outs)}, "
                             f"{self._bind(step.out_dtypes, 'd')}, {self._bind(step.out_rounding, 'd')})")
            else:
                lines.append(f"{pad}{call}")
            dead = [self.idents[n] for n, at in last.items() if at == i and n not in keep and n in self.idents]
            if dead:
                lines.append(f"{pad}del {', '.join(dead)}")
        lines.append(f"{pad}return ({''.join(self._expr(s) + ', ' for s in body.outputs)})")
        if checked:
            lines += ["    except _OpError:", "        raise",
                      "    except Exception as e:", "        raise _fail(i, e, locals()) from e"]
        return "\n".join(lines) + "\n"


def _channels_last(body: BlockPlan, device: torch.device) -> BlockPlan:
    """Conv weights as channels_last copies (the interpreter's plan keeps its own)."""
    if device.type not in ("cuda", "cpu"):
        return body
    steps = []
    for step in body.steps:
        w = step.fixed.get("weight")
        if step.op_type in _CONV_OPS and isinstance(w, torch.Tensor) and w.dim() == 4 and w.is_floating_point():
            fixed = dict(step.fixed, weight=w.contiguous(memory_format=torch.channels_last))
            step = Step(**{**step.__dict__, "fixed": fixed})
        steps.append(step)
    return BlockPlan(body.inputs, steps, body.outputs, body.output_names)


def _capturable(body: BlockPlan, plan: Plan) -> bool:
    """Whether a CUDA graph can hold a run: no host round trips the plan already shows."""
    if any(isinstance(slot.type, ir.StateType) for slot in plan.inputs):
        return False
    return all(not step.blocks and not step.params for step in body.steps)


class _Graph:
    """One captured run for one input signature (the caller serializes captures and replays)."""

    def __init__(self, fn: Callable[..., tuple], args: list[torch.Tensor], pool: Any, warmup: int):
        self.inputs = [a.clone() for a in args]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = fn(*self.inputs)
        if not all(isinstance(o, torch.Tensor) for o in self.outputs):
            raise UnsupportedError("an output is not a tensor")

    def replay(self, args: list[torch.Tensor]) -> tuple:
        for static, a in zip(self.inputs, args):
            static.copy_(a)
        self.graph.replay()
        # Clones: the static outputs are overwritten by the next replay.
        return tuple(o.clone() for o in self.outputs)


_EAGER = object()  # a signature whose capture failed: it runs without a graph


class CompiledProgram:
    """A plan lowered to straight-line torch code, with fusions, layouts and CUDA graphs."""

    def __init__(
        self,
        plan: Plan,
        mode: str = "compiled",
        *,
        fuse: bool = True,
        passes: Iterable[str] | None = None,
        channels_last: bool = True,
        cuda_graphs: bool | None = None,
        num_threads: int | None = None,
        compile_mode: str | None = None,
        max_graphs: int = 8,
        warmup: int = 2,
    ):
        if mode not in ("compiled", "compile"):
            raise InputError(f"unknown execution mode {mode!r} (use interp, compiled or compile)")
        if num_threads is not None:
            if num_threads < 1:
                raise InputError(f"num_threads must be at least 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        start = time.perf_counter()
        self.plan = plan
        self.mode = mode
        self.device = plan.device
        self.reference = Interpreter.from_plan(plan)
        self.output_names = plan.body.output_names
        body = plan.body
        self.fusions: dict[str, int] = {}
        if fuse:
            chosen = tuple(passes) if passes is not None else (COMPILE_PASSES if mode == "compile" else None)
            unknown = [p for p in chosen or () if p not in fusion.PASSES]
            if unknown:
                raise InputError(f"unknown fusion pass {unknown[0]!r} (known: {', '.join(fusion.PASSES)})")
            body, self.fusions = fusion.fuse(body, self.device, plan.var_types, chosen)
        if channels_last:
            body = _channels_last(body, self.device)
        self.body = body
        checked = _Lowered(plan, body, True, self._block)
        checked.globals["_fail"] = self._fail
        self._checked = checked
        self.source = checked.source
        self._call: Callable[..., tuple] = checked.forward
        self.compile_mode = compile_mode
        self._compiled = False
        if mode == "compile":
            plain = _Lowered(plan, body, False, self._block)
            default = "max-autotune-no-cudagraphs" if self.device.type == "cuda" else "default"
            self.compile_mode = compile_mode or default
            self._call = torch.compile(plain.forward, mode=self.compile_mode, dynamic=False)
        own_graphs = self.compile_mode not in ("reduce-overhead", "max-autotune")
        want = cuda_graphs if cuda_graphs is not None else True
        self.graphs_enabled = bool(want and own_graphs and self.device.type == "cuda" and _capturable(body, plan))
        self._graphs: dict[tuple, Any] = {}
        self._graph_lock = threading.Lock()
        self._pool = torch.cuda.graph_pool_handle() if self.graphs_enabled else None
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.lower_s = time.perf_counter() - start
        self.warmup_s: dict[tuple, float] = {}
        self.graph_errors: dict[tuple, str] = {}
        self.compile_error: str | None = None

    # --- running -------------------------------------------------------------------------------

    def run(
        self,
        inputs: Mapping[str, Any],
        states: Mapping[str, StateValue] | None = None,
        outputs: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Same contract as ``Interpreter.run``."""
        if outputs is not None:
            wanted = list(outputs)
            if any(n not in self.output_names for n in wanted):
                return self.reference.run(inputs, states=states, outputs=wanted)
            full = self.run(inputs, states)
            return {n: full[n] for n in wanted}
        if _debug_level():
            return self.reference.run(inputs, states=states)
        args = self._args(inputs, states)
        with torch.inference_mode():
            values = self._execute(args)
        return dict(zip(self.output_names, values))

    def _args(self, inputs: Mapping[str, Any], states: Mapping[str, StateValue] | None) -> list[Any]:
        args = []
        for slot in self.plan.inputs:
            if isinstance(slot.type, ir.StateType):
                if states is None or slot.name not in states:
                    raise InputError(f"state {slot.name!r} is missing: pass state=model.make_state()")
                args.append(states[slot.name])
            else:
                if slot.name not in inputs:
                    raise InputError(f"input {slot.name!r} is missing")
                args.append(inputs[slot.name])
        return args

    def _execute(self, args: list[Any]) -> tuple:
        if self.graphs_enabled and all(isinstance(a, torch.Tensor) and a.is_cuda for a in args):
            key = tuple((tuple(a.shape), a.dtype, a.stride(), a.device) for a in args)
            # One lock for every graph of this program: they share a memory pool, so a replay must not
            # run between another's replay and the clone of its outputs.
            with self._graph_lock:
                entry = self._graphs.get(key)
                if entry is None:
                    entry = self._capture(key, args)
                if entry is not _EAGER:
                    return entry.replay(args)
        with self._flags():
            return self._run_call(args)

    def _run_call(self, args: list[Any]) -> tuple:
        if self.mode != "compile" or self._compiled:
            return self._call(*args)
        try:
            result = self._call(*args)
        except TensorLogicError:
            raise
        except Exception as e:
            # torch.compile could not build this program (no compiler, an untraceable op): say so once
            # and run the generated code as it is.
            warnings.warn(f"torch.compile failed, running the compiled path without it: {_one_line(e)}",
                          RuntimeWarning, stacklevel=3)
            self._call = self._checked.forward
            self.compile_error = _one_line(e)
            result = self._call(*args)
        self._compiled = True
        return result

    def _capture(self, key: tuple, args: list[torch.Tensor]) -> Any:
        if len(self._graphs) >= self.max_graphs:
            return _EAGER
        start = time.perf_counter()
        try:
            with self._flags():
                if self.mode == "compile" and not self._compiled:
                    self._run_call(args)  # compile outside the capture
                entry: Any = _Graph(self._call, args, self._pool, self.warmup)
        except TensorLogicError:
            raise
        except Exception as e:
            # An op that needs the host mid-run (data-dependent shapes, .item()): no graph for it.
            self.graph_errors[key] = _one_line(e)
            entry = _EAGER
        torch.cuda.synchronize(self.device)
        self.warmup_s[key] = time.perf_counter() - start
        self._graphs[key] = entry
        return entry

    def _flags(self) -> contextlib.AbstractContextManager:
        # cuDNN's autotuner picks each conv's fastest algorithm once per shape, in the warm-up runs.
        return cudnn_flags(benchmark=True) if self.device.type == "cuda" else contextlib.nullcontext()

    def _block(self, index: int, env: dict[str, Any]) -> Callable[..., tuple]:
        # Nested blocks (cond, while_loop) run in the interpreter, reading the locals they need.
        return self.reference._block_fn(self._checked.nested[index], env, 0)

    def _fail(self, index: int, error: Exception, local: dict[str, Any]) -> Exception:
        if index < 0:
            return TensorLogicError(_one_line(error))
        step = self.body.steps[index]
        idents = self._checked.idents

        def read(src: Any) -> Any:
            if isinstance(src, Ref):
                return local.get(idents.get(src.name, ""))
            return tuple(read(s) for s in src) if isinstance(src, tuple) else src

        values = dict(step.fixed)
        values.update({name: read(src) for name, src in step.dynamic.items()})
        return OpError(_one_line(error), op=step.op_type, var=step.name, inputs=_describe(values))

    # --- introspection -------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """What lowering did: fusions per pass, steps before and after, graphs captured, warm-up times."""
        return {
            "mode": self.mode,
            "compile_mode": self.compile_mode if self.mode == "compile" else None,
            "device": str(self.device),
            "steps": (len(self.plan.body.steps), len(self.body.steps)),
            "fusions": dict(self.fusions),
            "fused_calls": self._fused_calls(),
            "cuda_graphs": sum(1 for g in self._graphs.values() if g is not _EAGER),
            "graph_errors": dict(self.graph_errors),
            "compile_error": self.compile_error,
            "lower_s": self.lower_s,
            "warmup_s": list(self.warmup_s.values()),
        }

    def _fused_calls(self) -> dict[str, int]:
        calls: dict[str, int] = {}
        for step in self.body.steps:
            if isinstance(step.fn, fusion.Fused):
                calls[step.op_type] = calls.get(step.op_type, 0) + step.fn.fast_calls
        return calls

    def __repr__(self) -> str:
        return f"<CompiledProgram {self.plan.function} {self.mode} on {self.device}: {len(self.body.steps)} steps>"
