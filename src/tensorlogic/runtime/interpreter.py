"""The ML Program interpreter: plan a MIL function once at load, then run it step by step on torch.

Loading builds a ``Plan``, a plain data structure that a compiled path can lower as it is:

- every op resolved to its registry ``OpDef`` (an op TensorLogic cannot run fails here, at load);
- consts (``const`` ops and literal arguments) materialized once on the target device in their
  compute dtype, and ``constexpr_*`` ops evaluated once into consts;
- params (see ``registry.PARAM_KINDS``) bound to consts converted once into Python values;
- for each step, the variables whose last use it is, so intermediates are freed early.

Running walks the steps over an environment dict. Nested blocks (``cond``, ``while_loop``) are planned
the same way and reach their ops as plain callables, never as IR.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError, OpError, TensorLogicError, UnsupportedError
from ..mil import ir
from . import registry
from .dtypes import compute_dtype, storage_rounding, to_torch

# Inputs that bind a tuple of arguments (coremltools' TupleInputType): the op gets a tuple even
# when only one argument is bound.
VARIADIC_INPUTS = frozenset({
    ("concat", "values"),
    ("stack", "values"),
    ("einsum", "values"),
    ("while_loop", "loop_vars"),
    ("make_list", "elem_shape"),
    ("reshape_like", "ref_tensors"),
    ("reshape_like", "begins"),
    ("reshape_like", "ends"),
    ("reshape_like", "end_masks"),
})


@dataclass(frozen=True)
class Ref:
    """An argument read from the environment at run time."""

    name: str


# What a step argument is: a Ref, or a materialized constant (torch tensor, Python value), or, for a
# variadic input, a tuple of those.
Source = Any


@dataclass
class Step:
    """One op call: the resolved function and where each keyword argument comes from."""

    op_type: str
    name: str
    fn: Callable[..., Any]
    fixed: dict[str, Any]  # kwargs known at load: materialized consts and converted params
    dynamic: dict[str, Source]  # kwargs read per run (each holds at least one Ref)
    params: dict[str, str]  # kind of each param in ``dynamic``, converted per run
    outputs: tuple[str, ...]
    out_dtypes: tuple[torch.dtype | None, ...]  # compute dtype of each declared tensor output
    out_rounding: tuple[torch.dtype | None, ...]  # half type each output is rounded through (dtypes.py)
    free: tuple[str, ...] = ()  # variables whose last use is this step
    blocks: tuple[BlockPlan, ...] = ()


@dataclass
class BlockPlan:
    inputs: tuple[str, ...]
    steps: list[Step]
    outputs: tuple[Source, ...]  # a Ref, or a materialized const
    output_names: tuple[str, ...]


@dataclass
class InputSlot:
    """A function input: its name, declared type, and the torch dtype it computes in."""

    name: str
    type: ir.ValueType
    dtype: torch.dtype | None


@dataclass
class Plan:
    function: str
    opset: str
    device: torch.device
    policy: str
    inputs: list[InputSlot]
    body: BlockPlan
    consts: dict[str, Any] = field(default_factory=dict)  # const variables, for ``outputs=[...]``
    var_types: dict[str, ir.ValueType] = field(default_factory=dict)


class StateValue:
    """A mutable state tensor (iOS18 ``state<...>``), owned by the caller's state object."""

    __slots__ = ("value",)

    def __init__(self, value: torch.Tensor):
        self.value = value

    def __repr__(self) -> str:
        return f"StateValue({tuple(self.value.shape)}, {self.value.dtype})"


# --- params ------------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        t = v.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.cpu().numpy()
    return v


def convert_param(kind: str, value: Any, policy: str, device: torch.device) -> Any:
    """Turn a param input (numpy, torch or Python value) into the Python value its kind names."""
    if isinstance(value, tuple) and kind != "value":
        # A variadic input: plural kinds flatten its arguments into one tuple.
        if kind in ("ints", "floats", "bools", "strs"):
            return tuple(x for v in value for x in convert_param(kind, v, policy, device))
        return tuple(convert_param(kind, v, policy, device) for v in value)
    v = _plain(value)
    if kind == "value":
        return v
    if kind in ("str", "mil_dtype", "dtype"):
        text = v if isinstance(v, str) else np.asarray(v).reshape(()).item()
        if kind == "dtype":
            return compute_dtype(str(text), policy, device)
        return str(text)
    arr = np.asarray(v)
    if kind in ("int", "float", "bool"):
        if arr.size != 1:
            raise ValueError(f"expected a scalar, got shape {list(arr.shape)}")
        scalar = arr.reshape(()).item()
        return {"int": int, "float": float, "bool": bool}[kind](scalar)
    flat = arr.reshape(-1).tolist()
    cast = {"ints": int, "floats": float, "bools": bool, "strs": str}[kind]
    return tuple(cast(x) for x in flat)


# --- planning ----------------------------------------------------------------------------------


def _python_value(v: ir.Value) -> Any:
    """A literal's data as numpy / str / tuple / dict, blobs read."""
    if isinstance(v.type, (ir.ListType, ir.TupleType)):
        return tuple(_python_value(e) for e in v.data)
    if isinstance(v.type, ir.DictType):
        return {_python_value(k): _python_value(x) for k, x in v.data.items()}
    return v.numpy()


class _Const:
    """A constant known at load: its raw value, and its torch form made on first use."""

    __slots__ = ("raw", "type", "_torch")

    def __init__(self, raw: Any, type: ir.ValueType | None):
        self.raw = raw
        self.type = type
        self._torch: Any = None

    def materialize(self, policy: str, device: torch.device) -> Any:
        if self._torch is None:
            self._torch = _to_runtime(self.raw, self.type, policy, device)
        return self._torch


def _to_runtime(raw: Any, vtype: ir.ValueType | None, policy: str, device: torch.device) -> Any:
    if isinstance(vtype, ir.TensorType) and vtype.dtype != "string" and not isinstance(raw, str):
        return to_torch(raw, compute_dtype(vtype.dtype, policy, device), device)
    if isinstance(raw, np.ndarray) and raw.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(raw)).to(device)
    return raw


def _rounding(vtype: ir.ValueType, policy: str, device: torch.device, explicit: bool) -> torch.dtype | None:
    if isinstance(vtype, ir.TensorType):
        return storage_rounding(vtype.dtype, policy, device, explicit)
    return None


def _out_dtype(vtype: ir.ValueType, policy: str, device: torch.device) -> torch.dtype | None:
    if isinstance(vtype, ir.TensorType) and vtype.dtype != "string":
        return compute_dtype(vtype.dtype, policy, device)
    return None


class _Planner:
    def __init__(self, function: ir.Function, device: torch.device, policy: str,
                 resolve: Callable[[str, str], registry.OpDef]):
        self.function = function
        self.opset = function.opset
        self.device = device
        self.policy = policy
        self.resolve = resolve
        self.consts: dict[str, _Const] = {}
        self.var_types: dict[str, ir.ValueType] = {}

    # A whole block: resolve, fold constants, then compute frees.
    def block(self, block: ir.Block, outer_inputs: tuple[str, ...] = ()) -> BlockPlan:
        for var in block.inputs:
            self.var_types[var.name] = var.type
        steps: list[Step] = []
        for op in block.operations:
            for out in op.outputs:
                self.var_types[out.name] = out.type
            if op.type == "const":
                self._const_op(op)
            elif op.type.startswith("constexpr_"):
                self._constexpr_op(op)
            else:
                steps.append(self._step(op))
        outputs = tuple(_materialize_consts(self._source(n), self.policy, self.device) for n in block.outputs)
        plan = BlockPlan(tuple(v.name for v in block.inputs), steps, outputs, tuple(block.outputs))
        _assign_frees(plan, outer_inputs)
        return plan

    def _const_op(self, op: ir.Op) -> None:
        val = op.attributes.get("val")
        if val is None:
            raise UnsupportedError(f"op const -> {op.name}: no 'val' attribute")
        self.consts[op.outputs[0].name] = _Const(_python_value(val), val.type)

    def _source(self, arg: ir.Arg) -> Source:
        if isinstance(arg, ir.Value):
            return _Const(_python_value(arg), arg.type)
        if arg in self.consts:
            return self.consts[arg]
        return Ref(arg)

    def _sources(self, op: ir.Op) -> dict[str, Source]:
        out: dict[str, Source] = {}
        for name, args in op.inputs.items():
            if not args:
                continue
            srcs = tuple(self._source(a) for a in args)
            if len(srcs) == 1 and (op.type, name) not in VARIADIC_INPUTS:
                out[name] = srcs[0]
            else:
                out[name] = srcs
        return out

    def _constexpr_op(self, op: ir.Op) -> None:
        opdef = self.resolve(op.type, self.opset)
        # iOS16 forms keep their parameters in attributes, iOS18 forms in inputs.
        kwargs: dict[str, Any] = {k: _python_value(v) for k, v in op.attributes.items() if k != "name"}
        for name, src in self._sources(op).items():
            items = src if isinstance(src, tuple) else (src,)
            if any(isinstance(s, Ref) for s in items):
                raise UnsupportedError(f"op {op.type} -> {op.name}: input {name!r} is not a constant")
            raw = tuple(s.raw for s in items) if isinstance(src, tuple) else src.raw
            kind = opdef.params.get(name, "value")
            kwargs[name] = convert_param(kind, raw, self.policy, self.device)
        try:
            result = opdef.fn(**kwargs)
        except TensorLogicError:
            raise
        except Exception as e:
            raise OpError(_one_line(e), op=op.type, var=op.name, inputs=_describe(kwargs)) from e
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(op.outputs):
            raise OpError(f"returned {len(results)} values for {len(op.outputs)} outputs", op=op.type, var=op.name)
        for var, value in zip(op.outputs, results):
            if isinstance(var.type, ir.TensorType) and var.type.dtype != "string":
                value = np.asarray(value).astype(ir.NUMPY_STORAGE[var.type.dtype], copy=False)
                if var.type.is_static and tuple(value.shape) != tuple(var.type.shape or ()):
                    raise OpError(f"produced shape {list(value.shape)}, declared {list(var.type.shape or ())}",
                                  op=op.type, var=var.name)
            self.consts[var.name] = _Const(value, var.type)

    def _step(self, op: ir.Op) -> Step:
        opdef = self.resolve(op.type, self.opset)
        fixed: dict[str, Any] = {}
        dynamic: dict[str, Source] = {}
        params: dict[str, str] = {}
        for name, src in self._sources(op).items():
            kind = opdef.params.get(name)
            items = src if isinstance(src, tuple) else (src,)
            if any(isinstance(s, Ref) for s in items):
                dynamic[name] = _materialize_consts(src, self.policy, self.device) if kind is None else \
                    _raw_consts(src)
                if kind is not None:
                    params[name] = kind
            elif kind is not None:
                raw = tuple(s.raw for s in items) if isinstance(src, tuple) else src.raw
                try:
                    fixed[name] = convert_param(kind, raw, self.policy, self.device)
                except (ValueError, TypeError, TensorLogicError) as e:
                    raise OpError(f"param {name!r}: {_one_line(e)}", op=op.type, var=op.name) from e
            else:
                fixed[name] = _materialize_consts(src, self.policy, self.device)
        blocks = tuple(self.block(b) for b in op.blocks)
        return Step(
            op_type=op.type,
            name=op.outputs[0].name if op.outputs else op.name,
            fn=opdef.fn,
            fixed=fixed,
            dynamic=dynamic,
            params=params,
            outputs=tuple(v.name for v in op.outputs),
            out_dtypes=tuple(_out_dtype(v.type, self.policy, self.device) for v in op.outputs),
            out_rounding=tuple(_rounding(v.type, self.policy, self.device, op.type == "cast") for v in op.outputs),
            blocks=blocks,
        )


def _materialize_consts(src: Source, policy: str, device: torch.device) -> Source:
    if isinstance(src, tuple):
        return tuple(_materialize_consts(s, policy, device) for s in src)
    if isinstance(src, _Const):
        return src.materialize(policy, device)
    return src


def _raw_consts(src: Source) -> Source:
    if isinstance(src, tuple):
        return tuple(_raw_consts(s) for s in src)
    if isinstance(src, _Const):
        return src.raw
    return src


def _refs(src: Source) -> Iterable[str]:
    if isinstance(src, Ref):
        yield src.name
    elif isinstance(src, tuple):
        for s in src:
            yield from _refs(s)


def _outer_refs(plan: BlockPlan) -> set[str]:
    """Names a block reads that it does not define itself."""
    defined = set(plan.inputs)
    used: set[str] = set()
    for step in plan.steps:
        for src in step.dynamic.values():
            used.update(n for n in _refs(src) if n not in defined)
        for b in step.blocks:
            used.update(n for n in _outer_refs(b) if n not in defined)
        defined.update(step.outputs)
    for src in plan.outputs:
        used.update(n for n in _refs(src) if n not in defined)
    return used


def last_uses(plan: BlockPlan) -> dict[str, int]:
    """The index of the last step that reads each name (or makes it, if nothing reads it)."""
    last: dict[str, int] = {}
    for i, step in enumerate(plan.steps):
        for src in step.dynamic.values():
            for n in _refs(src):
                last[n] = i
        for b in step.blocks:
            for n in _outer_refs(b):
                last[n] = i
        for n in step.outputs:
            last.setdefault(n, i)  # never read: free right after it is made
    return last


def _assign_frees(plan: BlockPlan, outer_inputs: tuple[str, ...] = ()) -> None:
    keep = {n for src in plan.outputs for n in _refs(src)}
    defined = set(plan.inputs) | set(outer_inputs)
    defined.update(n for step in plan.steps for n in step.outputs)
    last = last_uses(plan)
    frees: dict[int, list[str]] = {}
    for n, i in last.items():
        if n in defined and n not in keep:
            frees.setdefault(i, []).append(n)
    for i, step in enumerate(plan.steps):
        step.free = tuple(frees.get(i, ()))


def plan_function(
    function: ir.Function,
    device: str | torch.device = "cpu",
    policy: str = "auto",
    resolve: Callable[[str, str], registry.OpDef] = registry.get,
) -> Plan:
    """Plan ``function`` for ``device`` under the precision ``policy``; unsupported ops fail here."""
    dev = torch.device(device)
    compute_dtype("fp16", policy, dev)  # validates the policy name
    planner = _Planner(function, dev, policy, resolve)
    inputs = []
    for var in function.inputs:
        planner.var_types[var.name] = var.type
        inputs.append(InputSlot(var.name, var.type, _out_dtype(var.type, policy, dev)))
    body = planner.block(function.block, tuple(v.name for v in function.inputs))
    consts = {name: c.materialize(policy, dev) for name, c in planner.consts.items()}
    return Plan(function.name, function.opset, dev, policy, inputs, body, consts, planner.var_types)


# --- running -----------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0] if text else type(e).__name__
    if not isinstance(e, TensorLogicError) and type(e).__name__ not in line:
        line = f"{type(e).__name__}: {line}"
    return line[:300]


def _describe_value(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        dt = str(v.dtype).replace("torch.", "")
        return f"{dt}[{','.join(str(d) for d in v.shape)}]"
    if isinstance(v, np.ndarray):
        return f"np.{v.dtype}[{','.join(str(d) for d in v.shape)}]"
    if isinstance(v, tuple):
        inner = ", ".join(_describe_value(x) for x in v[:6])
        return f"({inner}{', ...' if len(v) > 6 else ''})"
    if callable(v):
        return "<block>"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_describe_value(v)}" for k, v in kwargs.items())


def _stats(v: Any) -> str:
    if not isinstance(v, torch.Tensor) or v.numel() == 0:
        return ""
    if v.dtype == torch.bool:
        return f" true={int(v.sum())}"
    f = v.detach().double() if v.is_floating_point() else v.detach().to(torch.float64)
    finite = torch.isfinite(f)
    nan = int(torch.isnan(f).sum())
    inf = int(torch.isinf(f).sum())
    vals = f[finite]
    lo = float(vals.min()) if vals.numel() else float("nan")
    hi = float(vals.max()) if vals.numel() else float("nan")
    return f" min={lo:.6g} max={hi:.6g} nan={nan} inf={inf}"


class Interpreter:
    """Runs a planned MIL function. Reentrant: every run has its own environment."""

    def __init__(
        self,
        function: ir.Function,
        device: str | torch.device = "cpu",
        policy: str = "auto",
        resolve: Callable[[str, str], registry.OpDef] = registry.get,
    ):
        self.plan = plan_function(function, device, policy, resolve)

    @classmethod
    def from_plan(cls, plan: Plan) -> Interpreter:
        """An interpreter over an existing plan (the compiled path's reference and fallback)."""
        self = cls.__new__(cls)
        self.plan = plan
        return self

    @property
    def device(self) -> torch.device:
        return self.plan.device

    @property
    def input_slots(self) -> list[InputSlot]:
        return self.plan.inputs

    def run(
        self,
        inputs: Mapping[str, Any],
        states: Mapping[str, StateValue] | None = None,
        outputs: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Run with ``inputs`` (torch tensors, already in compute dtype) and ``states``.

        Returns the function's outputs by name, or the variables named in ``outputs`` (any
        intermediate of the top-level block, a const, or an input).
        """
        plan = self.plan
        env: dict[str, Any] = {}
        for slot in plan.inputs:
            if isinstance(slot.type, ir.StateType):
                if states is None or slot.name not in states:
                    raise InputError(f"state {slot.name!r} is missing: pass state=model.make_state()")
                env[slot.name] = states[slot.name]
            else:
                if slot.name not in inputs:
                    raise InputError(f"input {slot.name!r} is missing")
                env[slot.name] = inputs[slot.name]
        wanted = list(outputs) if outputs is not None else None
        keep = frozenset(wanted or ())
        if wanted is not None:
            unknown = [n for n in wanted if n not in plan.var_types and n not in plan.consts]
            if unknown:
                raise InputError(f"no variable named {unknown[0]!r} in function {plan.function!r}")
        debug = _debug_level()
        with cudnn_flags() if plan.device.type == "cuda" else contextlib.nullcontext():
            self._run_steps(plan.body.steps, env, keep, debug)
        if wanted is None:
            return {n: _read(env, s) for n, s in zip(plan.body.output_names, plan.body.outputs)}
        result = {}
        for n in wanted:
            if n in env:
                result[n] = env[n]
            elif n in plan.consts:
                result[n] = plan.consts[n]
            else:
                raise InputError(f"variable {n!r} is not computed at the top level of {plan.function!r}")
        return result

    def _run_block(self, block: BlockPlan, parent: Mapping[str, Any], args: tuple, debug: int) -> tuple:
        if len(args) != len(block.inputs):
            raise TensorLogicError(f"block takes {len(block.inputs)} values, got {len(args)}")
        local: dict[str, Any] = dict(zip(block.inputs, args))
        env = ChainMap(local, parent)  # type: ignore[arg-type]
        self._run_steps(block.steps, env, frozenset(), debug, local)
        return tuple(_read(env, s) for s in block.outputs)

    def _run_steps(
        self,
        steps: list[Step],
        env: MutableMapping[str, Any],
        keep: frozenset[str],
        debug: int,
        local: dict[str, Any] | None = None,
    ) -> None:
        own = env if local is None else local
        for step in steps:
            kwargs = dict(step.fixed) if step.fixed else {}
            for name, src in step.dynamic.items():
                kwargs[name] = _read(env, src)
            try:
                for name, kind in step.params.items():
                    kwargs[name] = convert_param(kind, kwargs[name], self.plan.policy, self.plan.device)
                if step.blocks:
                    kwargs["blocks"] = tuple(self._block_fn(b, env, debug) for b in step.blocks)
                result = step.fn(**kwargs)
                results = _as_outputs(result, len(step.outputs))
            except OpError:
                raise
            except Exception as e:
                raise OpError(_one_line(e), op=step.op_type, var=step.name, inputs=_describe(kwargs)) from e
            for out, value, dtype, rounding in zip(step.outputs, results, step.out_dtypes, step.out_rounding):
                if dtype is not None:
                    value = _as_tensor(value, dtype, self.plan.device)
                    if rounding is not None and isinstance(value, torch.Tensor):
                        value = value.to(rounding).to(dtype)
                own[out] = value
            if debug:
                _trace(step, results, debug)
            for n in step.free:
                if n not in keep:
                    own.pop(n, None)

    def _block_fn(self, block: BlockPlan, env: Mapping[str, Any], debug: int) -> Callable[..., tuple]:
        def run(*args: Any) -> tuple:
            return self._run_block(block, env, args, debug)

        return run


@contextlib.contextmanager
def cudnn_flags(benchmark: bool | None = None) -> Iterator[None]:
    """float32 convs stay float32 (PyTorch lets cuDNN use TF32 by default, ~1e-3 relative error);
    ``benchmark`` sets cuDNN's autotuner. The process's own settings come back afterwards."""
    cudnn = torch.backends.cudnn
    before = cudnn.benchmark, cudnn.allow_tf32
    cudnn.allow_tf32 = False
    if benchmark is not None:
        cudnn.benchmark = benchmark
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32 = before


def _debug_level() -> int:
    raw = os.environ.get("TL_DEBUG", "")
    return int(raw) if raw.isdigit() else (1 if raw else 0)


def _read(env: Mapping[str, Any], src: Source) -> Any:
    if isinstance(src, Ref):
        return env[src.name]
    if isinstance(src, tuple):
        return tuple(_read(env, s) for s in src)
    if isinstance(src, _Const):
        return src.raw
    return src


def _as_outputs(result: Any, n: int) -> tuple:
    if n == 0:
        return ()
    if not isinstance(result, tuple):
        result = (result,)
    if len(result) != n:
        got = len(result) if isinstance(result, tuple) else 1
        raise TensorLogicError(f"returned {got} values for {n} outputs")
    return result


def _as_tensor(value: Any, dtype: torch.dtype, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value if value.dtype == dtype else value.to(dtype)
    if isinstance(value, (StateValue, list, dict, str)) or value is None:
        return value
    return torch.as_tensor(np.asarray(value), device=device).to(dtype)


def _trace(step: Step, results: tuple, debug: int) -> None:
    parts = []
    for name, value in zip(step.outputs, results):
        parts.append(f"{name}: {_describe_value(value)}{_stats(value) if debug >= 2 else ''}")
    print(f"[tl] {step.op_type} {step.name} -> {'; '.join(parts)}", file=sys.stderr)
