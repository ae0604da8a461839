"""The TensorLogic built-in functions, value formatting and attribute access, all on torch.

Tensors are float16 unless a dtype says otherwise. An op that CPU torch lacks for float16 runs in
float32 and is cast back. A builtin raises ``BuiltinError`` for a problem the script caused; the
evaluator turns any exception escaping a builtin into a ``ScriptError`` at the call's position.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import secrets
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F

from ..model import FeatureSpec, Metadata, Model, TensorInfo

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
DEFAULT_DTYPE = torch.float16
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Element counts above which a dimension is shown as "first, second, ..., last" (as the original does).
DISPLAY_LIMIT = 10
# Tolerances of `≈` by dtype: (relative, absolute).
APPROX_TOL = {torch.float16: (1e-2, 1e-3), torch.bfloat16: (2e-2, 1e-2), torch.float32: (1e-5, 1e-6)}


class BuiltinError(Exception):
    """A problem with what the script passed to a builtin; the message is shown as is."""


@dataclass(frozen=True)
class Device:
    """The value of the names ``gpu`` and ``cpu``; resolved to a torch device when a tensor is placed."""

    name: str


class Record:
    """A small named tuple for results such as ``topk``: ``r.values``, ``r.indices`` or ``r[0]``."""

    def __init__(self, **fields: Any):
        self.fields = dict(fields)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            return list(self.fields.values())[key]
        return self.fields[key]


@dataclass
class Context:
    """What builtins need from the run: where relative paths start, the device policy, output streams."""

    base_dir: Path = field(default_factory=Path.cwd)
    device: str | None = None  # the --device option: None (GPU when present), "cpu" or "gpu"
    out: TextIO | None = None
    err: TextIO | None = None
    # Unseeded scripts draw different values each run; seed(n) or seed: n makes them repeatable.
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(secrets.randbits(63)))
    noted_cpu_fallback: bool = False

    def stdout(self) -> TextIO:
        return self.out or sys.stdout

    def stderr(self) -> TextIO:
        return self.err or sys.stderr

    def path(self, p: Any) -> Path:
        if not isinstance(p, str):
            raise BuiltinError(f"expected a file path string, got {type_name(p)}")
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def _gpu(self, explicit: bool) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        if explicit and not self.noted_cpu_fallback:
            self.noted_cpu_fallback = True
            print("tl: note: no GPU (CUDA or MPS) found; 'gpu' tensors run on the CPU", file=self.stderr())
        return torch.device("cpu")

    def torch_device(self, want: Any = None) -> torch.device:
        """The torch device for ``device: want`` (a Device, 'gpu'/'cpu', or None for the default)."""
        if isinstance(want, str):
            want = Device(want)
        if want is not None and not isinstance(want, Device):
            raise BuiltinError(f"device must be gpu or cpu, got {format_value(want, nested=True)}")
        if self.device == "cpu":
            return torch.device("cpu")
        if want is not None:
            if want.name == "cpu":
                return torch.device("cpu")
            if want.name != "gpu":
                raise BuiltinError(f"device must be gpu or cpu, got {want.name}")
            return self._gpu(explicit=True)
        return self._gpu(explicit=self.device == "gpu")

    def model_device(self) -> str:
        """The ``device`` argument for ``tensorlogic.load_model``."""
        if self.device is None:
            return "auto"
        return self.torch_device().type


@dataclass(frozen=True)
class Builtin:
    name: str
    fn: Callable[..., Any]
    needs_ctx: bool
    method: bool  # usable as a tensor method: x.sum() is sum(x)

    @property
    def signature(self) -> inspect.Signature:
        return script_signature(self.fn, 1 if self.needs_ctx else 0)


@dataclass(frozen=True)
class BoundMethod:
    """``value.name`` waiting for its call: the builtin (or model method) with ``value`` as first argument."""

    name: str
    fn: Callable[..., Any]
    self_value: Any
    needs_ctx: bool


@functools.cache
def script_signature(fn: Callable[..., Any], hidden: int) -> inspect.Signature:
    """The signature a script sees: ``fn``'s without its first ``hidden`` parameters (ctx, self)."""
    sig = inspect.signature(fn)
    return sig.replace(parameters=list(sig.parameters.values())[hidden:])


BUILTINS: dict[str, Builtin] = {}


def builtin(name: str | None = None, *, ctx: bool = False, method: bool = False) -> Callable:
    """Register a builtin under ``name`` (default: the function name without a trailing underscore)."""

    def register(fn: Callable) -> Callable:
        key = name or fn.__name__.rstrip("_")
        if key in BUILTINS:
            raise RuntimeError(f"builtin {key!r} registered twice")
        BUILTINS[key] = Builtin(key, fn, ctx, method)
        return fn

    return register


# ---------------------------------------------------------------------------------------------- helpers


def type_name(v: Any) -> str:
    """The TensorLogic name of a value's type, for messages."""
    if v is None:
        return "void"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, torch.Tensor):
        return f"{dtype_name(v.dtype)} tensor"
    if isinstance(v, (list, tuple, range)):
        return "list"
    if isinstance(v, dict):
        return "dict"
    if isinstance(v, Model):
        return "model"
    if isinstance(v, torch.dtype):
        return "dtype"
    if isinstance(v, Device):
        return "device"
    if isinstance(v, (Builtin, BoundMethod)):
        return "function"
    return type(v).__name__.lower()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def shape_text(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float))


def _has_tensor(v: Any) -> bool:
    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_tensor(x) for x in v)
    return False


def to_tensor(ctx: Context, v: Any, dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
    """A tensor from a tensor, number or (nested) list; numbers default to float16, lists of bools to bool."""
    if isinstance(v, torch.Tensor):
        t = v if dtype is None else v.to(dtype)
        return t if device is None else t.to(ctx.torch_device(device))
    dev = ctx.torch_device(device)
    if isinstance(v, range):
        v = list(v)
    if isinstance(v, (list, tuple)) and _has_tensor(v):
        parts = [to_tensor(ctx, x, dtype, device) for x in v]
        if not parts:
            raise BuiltinError("cannot make a tensor from an empty list")
        target = parts[0].device
        try:
            return torch.stack([p.to(target) for p in parts])
        except RuntimeError as e:
            raise BuiltinError(f"cannot stack these tensors: {_first_line(e)}") from None
    if not (is_number(v) or isinstance(v, (list, tuple))):
        raise BuiltinError(f"expected a tensor, a number or a list of numbers, got {type_name(v)}")
    if dtype is None:
        dtype = torch.bool if _all_bools(v) else DEFAULT_DTYPE
    try:
        return torch.tensor(v, dtype=dtype, device=dev)
    except (TypeError, ValueError, RuntimeError) as e:
        raise BuiltinError(f"cannot make a tensor from this list: {_first_line(e)}") from None


def _all_bools(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, (list, tuple)):
        return bool(v) and all(_all_bools(x) for x in v)
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _tensors(args: Iterable[Any]) -> list[torch.Tensor]:
    return [a for a in args if isinstance(a, torch.Tensor)]


def align(*args: Any) -> list[Any]:
    """Move tensor arguments onto one device (the first non-CPU one), so gpu and cpu tensors mix."""
    devices = {a.device for a in _tensors(args)}
    if len(devices) <= 1:
        return list(args)
    target = next((d for d in devices if d.type != "cpu"), next(iter(devices)))
    return [a.to(target) if isinstance(a, torch.Tensor) else a for a in args]


def _is_half(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.dtype == torch.float16


def _down(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.half() if out.dtype == torch.float32 else out
    if isinstance(out, tuple):
        return type(out)(*(_down(o) for o in out)) if hasattr(out, "_fields") else tuple(_down(o) for o in out)
    return out


def run_op(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a torch op; if torch has no float16 kernel for it here, run it in float32 and cast back."""
    args = tuple(align(*args))
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, NotImplementedError) as e:
        if "Half" not in str(e) or not (any(map(_is_half, args)) or any(map(_is_half, kwargs.values()))):
            raise

    def up(v: Any) -> Any:
        return v.float() if _is_half(v) else v

    return _down(fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()}))


def _tensor_arg(ctx: Context, v: Any, what: str = "x") -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    if is_number(v) or isinstance(v, (list, tuple)):
        return to_tensor(ctx, v)
    raise BuiltinError(f"{what} must be a tensor, got {type_name(v)}")


def _int(v: Any, what: str) -> int:
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
        return int(v.item())
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise BuiltinError(f"{what} must be an integer, got {format_value(v, nested=True)}")
    return v


def _shape(args: tuple[Any, ...], what: str = "shape") -> list[int]:
    """A shape given as one list (zeros([2, 3])) or as several integers (zeros(2, 3))."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])
    if len(args) == 1 and isinstance(args[0], torch.Size):
        args = tuple(args[0])
    dims = [_int(a, what) for a in args]
    if any(d < 0 for d in dims):
        raise BuiltinError(f"{what} cannot have negative sizes: {dims}")
    return dims


def _dtype(v: Any, default: torch.dtype | None = DEFAULT_DTYPE) -> torch.dtype | None:
    if v is None:
        return default
    if isinstance(v, torch.dtype):
        return v
    if isinstance(v, str) and v in DTYPES:
        return DTYPES[v]
    raise BuiltinError(f"dtype must be one of {', '.join(DTYPES)}, got {format_value(v, nested=True)}")


# ---------------------------------------------------------------------------------------------- formatting


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}"


def format_value(v: Any, nested: bool = False) -> str:
    """How ``print`` shows a value: strings plainly (quoted inside lists), tensors by value."""
    if v is None:
        return "void"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' if nested else v
    if isinstance(v, torch.Tensor):
        return format_tensor(v)
    if isinstance(v, (list, tuple, range)):
        items = list(v)
        if len(items) > DISPLAY_LIMIT:
            head = ", ".join(format_value(x, True) for x in items[:2])
            return f"[{head}, ..., {format_value(items[-1], True)}] (len={len(items)})"
        return "[" + ", ".join(format_value(x, True) for x in items) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{format_value(k, True)}: {format_value(x, True)}" for k, x in v.items()) + "}"
    if isinstance(v, torch.dtype):
        return dtype_name(v)
    if isinstance(v, Device):
        return v.name
    if isinstance(v, Model):
        return f"Model({v.metadata.format})"
    if isinstance(v, Metadata):
        keep = ("format", "quantization", "name", "architecture", "model_type", "parameter_count", "tensor_count")
        shown = {k: getattr(v, k) for k in keep if getattr(v, k) not in (None, "", 0)}
        body = ", ".join(f"{k}={format_value(x, True)}" for k, x in shown.items())
        feats = [f"inputs=[{', '.join(str(f) for f in v.inputs)}]"] if v.inputs else []
        feats += [f"outputs=[{', '.join(str(f) for f in v.outputs)}]"] if v.outputs else []
        return "Metadata(" + ", ".join([body] + feats if body else feats) + ")"
    if isinstance(v, (FeatureSpec, TensorInfo)):
        return str(v) if isinstance(v, FeatureSpec) else f"{v.name}: {v.dtype}{list(v.shape)}"
    if isinstance(v, Record):
        return "(" + ", ".join(f"{k}={format_value(x, True)}" for k, x in v.fields.items()) + ")"
    if isinstance(v, Builtin):
        return f"<builtin {v.name}>"
    if isinstance(v, BoundMethod):
        return f"<method {v.name}>"
    return str(v)


def format_tensor(t: torch.Tensor) -> str:
    """Values with 4 decimals, nested by dimension; long dimensions as ``a, b, ..., z`` plus the full shape."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.ndim == 0:
        return _fmt_scalar(t.item())
    full = list(t.shape)
    keep = []
    for size in full:
        keep.append(size > DISPLAY_LIMIT)
    for dim, size in enumerate(full):
        if keep[dim]:
            t = t.index_select(dim, torch.tensor([0, 1, size - 1]))
    text = _nested(t.tolist(), keep)
    if not any(keep):
        return text
    return text + (f" (len={full[0]})" if len(full) == 1 else f" (shape={full})")


def _nested(values: Any, cut: list[bool]) -> str:
    if not cut:
        return _fmt_scalar(values)
    parts = [_nested(v, cut[1:]) for v in values]
    if cut[0]:
        parts = [parts[0], parts[1], "...", parts[2]]
    return "[" + ", ".join(parts) + "]"


# ---------------------------------------------------------------------------------------------- attributes


def _tensor_attr(ctx: Context, t: torch.Tensor, name: str) -> Any:
    if name == "shape":
        return list(t.shape)
    if name == "dtype":
        return t.dtype
    if name == "device":
        return t.device.type
    if name in ("rank", "ndim"):
        return t.ndim
    if name == "numel":
        return t.numel()
    if name == "T":
        return t.transpose(-2, -1) if t.ndim >= 2 else t
    raise KeyError(name)


MODEL_ATTRS = ("metadata", "path", "format", "inputs", "outputs")


def _model_attr(m: Model, name: str) -> Any:
    if name == "metadata":
        return m.metadata
    if name == "path":
        return str(m.path)
    if name == "format":
        return m.metadata.format
    if name == "inputs":
        return list(m.metadata.inputs)
    if name == "outputs":
        return list(m.metadata.outputs)
    raise KeyError(name)


def get_attr(ctx: Context, value: Any, name: str) -> Any:
    """``value.name`` for the value kinds a script can see; ``BuiltinError`` names what exists."""
    if isinstance(value, torch.Tensor):
        try:
            return _tensor_attr(ctx, value, name)
        except KeyError:
            pass
        if name in BUILTINS and BUILTINS[name].method:
            b = BUILTINS[name]
            return BoundMethod(name, b.fn, value, b.needs_ctx)
        raise BuiltinError(
            f"a tensor has no attribute '{name}' (try shape, dtype, device, rank, T or a method like sum)"
        )
    if isinstance(value, Model):
        try:
            return _model_attr(value, name)
        except KeyError:
            pass
        if name in MODEL_METHODS:
            return BoundMethod(name, MODEL_METHODS[name], value, True)
        known = ", ".join(list(MODEL_ATTRS) + sorted(MODEL_METHODS))
        raise BuiltinError(f"a model has no attribute '{name}' (it has {known})")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        if name in names:
            return getattr(value, name)
        raise BuiltinError(f"{type(value).__name__.lower()} has no field '{name}' (it has {', '.join(names)})")
    if isinstance(value, Record):
        if name in value.fields:
            return value.fields[name]
        raise BuiltinError(f"this result has no field '{name}' (it has {', '.join(value.fields)})")
    if isinstance(value, dict):
        if name in value:
            return value[name]
        raise BuiltinError(f"the dict has no key '{name}'")
    raise BuiltinError(f"{type_name(value)} has no attribute '{name}'")


# ---------------------------------------------------------------------------------------------- core


@builtin(ctx=True)
def print_(ctx: Context, *values: Any) -> None:
    """print(a, b, ...) joins values with spaces; print("x = {}", x) fills {} placeholders."""
    out = ctx.stdout()
    if values and isinstance(values[0], str) and "{}" in values[0] and len(values) > 1:
        pieces = values[0].split("{}")
        if len(pieces) - 1 != len(values) - 1:
            raise BuiltinError(
                f"the format string has {len(pieces) - 1} '{{}}' placeholders but {len(values) - 1} values follow"
            )
        text = pieces[0] + "".join(format_value(v) + p for v, p in zip(values[1:], pieces[1:]))
    else:
        text = " ".join(format_value(v) for v in values)
    out.write(text + "\n")
    out.flush()


@builtin()
def range_(*args: Any) -> range:
    """range(n), range(start, stop) or range(start, stop, step)."""
    if not 1 <= len(args) <= 3:
        raise BuiltinError(f"range takes 1 to 3 integers, got {len(args)} arguments")
    ints = [_int(a, "a range bound") for a in args]
    if len(ints) == 3 and ints[2] == 0:
        raise BuiltinError("range step cannot be 0")
    return range(*ints)


@builtin()
def len_(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        if x.ndim == 0:
            raise BuiltinError("len() of a scalar tensor; use numel or shape")
        return int(x.shape[0])
    if isinstance(x, (list, tuple, str, dict, range)):
        return len(x)
    raise BuiltinError(f"len() needs a tensor, list, string or dict, got {type_name(x)}")


@builtin(method=True)
def item(x: Any) -> Any:
    """The single value of a one-element tensor as a number."""
    if not isinstance(x, torch.Tensor):
        return x
    if x.numel() != 1:
        raise BuiltinError(f"item() needs a tensor with one element, got shape {shape_text(x)}")
    return x.item()


@builtin("int")
def int_(x: Any) -> int:
    v = item(x)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            raise BuiltinError(f"cannot convert {v!r} to int") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise BuiltinError(f"cannot convert {v} to int")
    return int(v)


@builtin("float")
def float_(x: Any) -> float:
    v = item(x)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise BuiltinError(f"cannot convert {format_value(v, True)} to float") from None


@builtin("str")
def str_(x: Any) -> str:
    return format_value(x)


@builtin(ctx=True, method=True)
def round_(ctx: Context, x: Any, decimals: int = 0) -> Any:
    """round(x, 2): numbers or tensors, half to even like torch."""
    d = _int(decimals, "decimals")
    if isinstance(x, torch.Tensor):
        return run_op(torch.round, x, decimals=d)
    if is_number(x):
        return round(x, d) if d else int(round(x))
    return run_op(torch.round, _tensor_arg(ctx, x), decimals=d)


@builtin(ctx=True, method=True)
def to(ctx: Context, x: Any, target: Any) -> torch.Tensor:
    """x.to(float32) casts; x.to(gpu) / x.to(cpu) moves."""
    t = _tensor_arg(ctx, x)
    if isinstance(target, (Device, str)) and not (isinstance(target, str) and target in DTYPES):
        return t.to(ctx.torch_device(target))
    return t.to(_dtype(target))


@builtin(ctx=True)
def cast(ctx: Context, x: Any, dtype: Any) -> torch.Tensor:
    return _tensor_arg(ctx, x).to(_dtype(dtype))


@builtin(ctx=True, method=True)
def describe(ctx: Context, x: Any) -> str:
    """A one-line description: Tensor<float16>(shape=[4, 2], device=cpu), or the value's type."""
    if isinstance(x, torch.Tensor):
        return f"Tensor<{dtype_name(x.dtype)}>(shape={list(x.shape)}, device={x.device.type})"
    return f"{type_name(x)} {format_value(x, nested=True)}"


@builtin()
def assert_(cond: Any, message: str = "condition is false") -> None:
    """assert(cond, "message") stops the script with the message when cond is false."""
    if not truth(cond):
        raise BuiltinError(format_value(message))


@builtin(ctx=True, method=True)
def clone(ctx: Context, x: Any) -> torch.Tensor:
    """A copy that later index assignments to x do not change."""
    return _tensor_arg(ctx, x).detach().clone()


@builtin(ctx=True, method=True)
def any_(ctx: Context, x: Any) -> bool:
    return bool(run_op(torch.any, _tensor_arg(ctx, x)).item())


@builtin(ctx=True, method=True)
def all_(ctx: Context, x: Any) -> bool:
    return bool(run_op(torch.all, _tensor_arg(ctx, x)).item())


def truth(v: Any) -> bool:
    """Truth of a condition: a tensor must hold exactly one value."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise BuiltinError(
                f"a condition must be a single value, got a tensor of shape {shape_text(v)}; use all(...) or any(...)"
            )
        return bool(v.item())
    if v is None:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict, range)):
        return bool(v)
    return True


# ---------------------------------------------------------------------------------------------- creation


@builtin(ctx=True)
def tensor(ctx: Context, data: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """tensor(data, dtype: float32, device: gpu); float16 by default."""
    return to_tensor(ctx, data, _dtype(dtype, None), device)


def _filled(ctx: Context, fill: Callable[..., torch.Tensor], shape: tuple, dtype: Any, device: Any) -> torch.Tensor:
    return fill(_shape(shape), dtype=_dtype(dtype), device=ctx.torch_device(device))


@builtin(ctx=True)
def zeros(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    return _filled(ctx, torch.zeros, shape, dtype, device)


@builtin(ctx=True)
def ones(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    return _filled(ctx, torch.ones, shape, dtype, device)


@builtin(ctx=True)
def full(ctx: Context, shape: Any, value: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    return torch.full(_shape((shape,)), item(value), dtype=_dtype(dtype), device=ctx.torch_device(device))


@builtin(ctx=True)
def eye(ctx: Context, n: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    return torch.eye(_int(n, "n"), dtype=_dtype(dtype), device=ctx.torch_device(device))


@builtin(ctx=True)
def arange(ctx: Context, start: Any, end: Any = None, step: Any = 1, dtype: Any = None, device: Any = None):
    """arange(n) or arange(start, end, step); float16 unless a dtype is given."""
    lo, hi = (0, start) if end is None else (start, end)
    return torch.arange(item(lo), item(hi), item(step), dtype=_dtype(dtype), device=ctx.torch_device(device))


def _random(ctx: Context, fn: Callable, shape: tuple, dtype: Any, device: Any, seed: Any) -> torch.Tensor:
    if seed is not None:
        ctx.generator.manual_seed(_int(seed, "seed"))
    dt = _dtype(dtype)
    if not dt.is_floating_point:
        raise BuiltinError(f"random values need a floating dtype, got {dtype_name(dt)}")
    # Drawn on the CPU in float32 from the script's own generator, so a seed gives the same values everywhere.
    values = fn(_shape(shape), generator=ctx.generator, dtype=torch.float32)
    return values.to(dtype=dt, device=ctx.torch_device(device))


@builtin(ctx=True)
def rand(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None, seed: Any = None) -> torch.Tensor:
    """Uniform [0, 1) values; seed: n (or seed(n) first) makes them reproducible."""
    return _random(ctx, torch.rand, shape, dtype, device, seed)


@builtin(ctx=True)
def randn(ctx: Context, *shape: Any, dtype: Any = None, device: Any = None, seed: Any = None) -> torch.Tensor:
    """Standard normal values; seedable like rand."""
    return _random(ctx, torch.randn, shape, dtype, device, seed)


@builtin(ctx=True)
def seed(ctx: Context, n: Any) -> None:
    """Seed rand/randn for reproducible scripts."""
    ctx.generator.manual_seed(_int(n, "seed"))


# ---------------------------------------------------------------------------------------------- elementwise


def _unary(name: str, fn: Callable[[torch.Tensor], torch.Tensor], doc: str) -> None:
    def op(ctx: Context, x: Any) -> torch.Tensor:
        return run_op(fn, _tensor_arg(ctx, x))

    op.__doc__ = doc
    op.__name__ = name
    BUILTINS[name] = Builtin(name, op, True, True)


for _name, _fn, _doc in (
    ("relu", torch.relu, "max(x, 0)"),
    ("gelu", F.gelu, "GELU (exact, erf form)"),
    ("sigmoid", torch.sigmoid, "1 / (1 + exp(-x))"),
    ("tanh", torch.tanh, "hyperbolic tangent"),
    ("exp", torch.exp, "e ** x"),
    ("log", torch.log, "natural logarithm"),
    ("sqrt", torch.sqrt, "square root"),
    ("abs", torch.abs, "absolute value"),
    ("sin", torch.sin, "sine"),
    ("cos", torch.cos, "cosine"),
    ("neg", torch.neg, "-x"),
    ("flatten", torch.flatten, "all dimensions in one"),
):
    _unary(_name, _fn, _doc)


@builtin(ctx=True, method=True)
def softmax(ctx: Context, x: Any, dim: Any = -1) -> torch.Tensor:
    return run_op(F.softmax, _tensor_arg(ctx, x), dim=_int(dim, "dim"))


@builtin(ctx=True, method=True)
def log_softmax(ctx: Context, x: Any, dim: Any = -1) -> torch.Tensor:
    return run_op(F.log_softmax, _tensor_arg(ctx, x), dim=_int(dim, "dim"))


def _binary(name: str, fn: Callable, doc: str) -> None:
    def op(ctx: Context, a: Any, b: Any) -> torch.Tensor:
        return binary_op(ctx, fn, a, b)

    op.__doc__ = doc
    op.__name__ = name
    BUILTINS[name] = Builtin(name, op, True, True)


def binary_op(ctx: Context, fn: Callable, a: Any, b: Any) -> Any:
    """Apply a torch binary op; lists become tensors of the other operand's dtype (float16 by default)."""
    if isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and isinstance(b, (list, tuple)):
        b = to_tensor(ctx, b, a.dtype, None).to(a.device)
    elif isinstance(b, torch.Tensor) and not isinstance(a, torch.Tensor) and isinstance(a, (list, tuple)):
        a = to_tensor(ctx, a, b.dtype, None).to(b.device)
    elif not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        a = _tensor_arg(ctx, a, "a")
    return run_op(fn, a, b)


for _name, _fn, _doc in (
    ("add", torch.add, "a + b"),
    ("sub", torch.sub, "a - b"),
    ("mul", torch.mul, "a * b"),
    ("div", torch.div, "a / b"),
    ("matmul", torch.matmul, "a @ b"),
    ("pow", torch.pow, "a ** b"),
    ("maximum", torch.maximum, "elementwise larger of a and b"),
    ("minimum", torch.minimum, "elementwise smaller of a and b"),
):
    _binary(_name, _fn, _doc)


# ---------------------------------------------------------------------------------------------- reductions


def _reduce(ctx: Context, x: Any, dim: Any, keepdim: Any, fn: Callable, values_only: bool) -> torch.Tensor:
    t = _tensor_arg(ctx, x)
    if dim is None:
        return run_op(fn, t)
    d = _dims(dim)
    if values_only:
        if len(d) != 1:
            raise BuiltinError("max/min reduce one dimension at a time")
        return run_op(fn, t, dim=d[0], keepdim=bool(keepdim)).values
    return run_op(fn, t, dim=d, keepdim=bool(keepdim))


def _dims(dim: Any) -> list[int]:
    return [_int(d, "dim") for d in dim] if isinstance(dim, (list, tuple)) else [_int(dim, "dim")]


@builtin(ctx=True, method=True)
def sum_(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    """Sum of all elements, or along dim."""
    return _reduce(ctx, x, dim, keepdim, torch.sum, False)


@builtin(ctx=True, method=True)
def mean(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    t = _tensor_arg(ctx, x)
    if not t.is_floating_point():
        t = t.to(DEFAULT_DTYPE)
    return _reduce(ctx, t, dim, keepdim, torch.mean, False)


@builtin(ctx=True, method=True)
def max_(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    return _reduce(ctx, x, dim, keepdim, torch.max, True)


@builtin(ctx=True, method=True)
def min_(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    return _reduce(ctx, x, dim, keepdim, torch.min, True)


def _arg_reduce(ctx: Context, x: Any, dim: Any, keepdim: Any, fn: Callable) -> Any:
    t = _tensor_arg(ctx, x)
    if t.numel() == 0:
        raise BuiltinError("argmax/argmin of an empty tensor")
    if dim is None:
        return int(run_op(fn, t).item())
    return run_op(fn, t, dim=_int(dim, "dim"), keepdim=bool(keepdim))


@builtin(ctx=True, method=True)
def argmax(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    """Index of the largest value (of the flattened tensor, as an int), or per dim (a tensor)."""
    return _arg_reduce(ctx, x, dim, keepdim, torch.argmax)


@builtin(ctx=True, method=True)
def argmin(ctx: Context, x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    return _arg_reduce(ctx, x, dim, keepdim, torch.argmin)


@builtin(ctx=True, method=True)
def topk(ctx: Context, x: Any, k: Any, dim: Any = -1, largest: bool = True) -> Record:
    """The k largest values along dim (the last by default): a record with .values and .indices."""
    t = _tensor_arg(ctx, x)
    n, d = _int(k, "k"), _int(dim, "dim")
    if t.ndim == 0:
        raise BuiltinError("topk needs a tensor with at least one dimension")
    size = t.shape[d]
    if not 0 <= n <= size:
        raise BuiltinError(f"topk: k={n} but dimension {d} has only {size} values")
    out = run_op(torch.topk, t, n, dim=d, largest=bool(largest))
    return Record(values=out.values, indices=out.indices)


# ---------------------------------------------------------------------------------------------- shapes


@builtin(ctx=True, method=True)
def shape(ctx: Context, x: Any) -> list[int]:
    return list(_tensor_arg(ctx, x).shape)


@builtin(ctx=True, method=True)
def rank(ctx: Context, x: Any) -> int:
    return _tensor_arg(ctx, x).ndim


@builtin(ctx=True, method=True)
def transpose(ctx: Context, x: Any, dim0: Any = None, dim1: Any = None) -> torch.Tensor:
    """Swap the last two dimensions, or dim0 and dim1."""
    t = _tensor_arg(ctx, x)
    if dim0 is None and dim1 is None:
        return t.transpose(-2, -1) if t.ndim >= 2 else t
    if dim0 is None or dim1 is None:
        raise BuiltinError("transpose takes no dimensions or two (dim0, dim1)")
    return t.transpose(_int(dim0, "dim0"), _int(dim1, "dim1"))


@builtin(ctx=True, method=True)
def permute(ctx: Context, x: Any, *dims: Any) -> torch.Tensor:
    return _tensor_arg(ctx, x).permute(*_dims_list(dims))


def _dims_list(dims: tuple[Any, ...]) -> list[int]:
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = tuple(dims[0])
    return [_int(d, "dim") for d in dims]


@builtin(ctx=True, method=True)
def reshape(ctx: Context, x: Any, *shape_: Any) -> torch.Tensor:
    """reshape(x, [2, 3]) or reshape(x, 2, 3); one size may be -1."""
    t = _tensor_arg(ctx, x)
    dims = _dims_list(shape_)
    try:
        return t.reshape(dims)
    except RuntimeError:
        raise BuiltinError(f"cannot reshape a tensor of shape {shape_text(t)} ({t.numel()} values) to {dims}") from None


@builtin(ctx=True, method=True)
def squeeze(ctx: Context, x: Any, dim: Any = None) -> torch.Tensor:
    t = _tensor_arg(ctx, x)
    return t.squeeze() if dim is None else t.squeeze(_int(dim, "dim"))


@builtin(ctx=True, method=True)
def unsqueeze(ctx: Context, x: Any, dim: Any) -> torch.Tensor:
    return _tensor_arg(ctx, x).unsqueeze(_int(dim, "dim"))


def _tensor_list(ctx: Context, first: Any, more: tuple[Any, ...]) -> list[torch.Tensor]:
    items = list(first) if isinstance(first, (list, tuple)) and not more else [first, *more]
    if not items:
        raise BuiltinError("needs at least one tensor")
    return align(*[_tensor_arg(ctx, t, "each item") for t in items])


@builtin(ctx=True)
def concat(ctx: Context, tensors: Any, *more: Any, dim: Any = 0) -> torch.Tensor:
    """concat([a, b], dim: 0) or concat(a, b, dim: 0)."""
    return run_op(torch.cat, _tensor_list(ctx, tensors, more), dim=_int(dim, "dim"))


@builtin(ctx=True)
def stack(ctx: Context, tensors: Any, *more: Any, dim: Any = 0) -> torch.Tensor:
    return run_op(torch.stack, _tensor_list(ctx, tensors, more), dim=_int(dim, "dim"))


@builtin(ctx=True)
def einsum(ctx: Context, equation: Any, *tensors: Any) -> torch.Tensor:
    """einsum("ij,jk->ik", A, B)."""
    if not isinstance(equation, str):
        raise BuiltinError(f"einsum's first argument must be an equation string, got {type_name(equation)}")
    if not tensors:
        raise BuiltinError("einsum needs at least one tensor after the equation")
    ts = align(*[_tensor_arg(ctx, t, "each operand") for t in tensors])
    return run_op(torch.einsum, equation, *ts)


# ---------------------------------------------------------------------------------------------- layers


def _pair(v: Any, what: str) -> int | tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise BuiltinError(f"{what} must be an integer or a pair [h, w]")
        return (_int(v[0], what), _int(v[1], what))
    return _int(v, what)


def _opt(ctx: Context, v: Any, what: str) -> torch.Tensor | None:
    return None if v is None else _tensor_arg(ctx, v, what)


@builtin(ctx=True)
def linear(ctx: Context, x: Any, weight: Any, bias: Any = None) -> torch.Tensor:
    """x @ weight.T + bias, weight shaped [out, in] as in PyTorch."""
    return run_op(F.linear, _tensor_arg(ctx, x), _tensor_arg(ctx, weight, "weight"), _opt(ctx, bias, "bias"))


@builtin(ctx=True)
def conv2d(
    ctx: Context, x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
    groups: Any = 1,
) -> torch.Tensor:
    """2-D convolution of x [N, C, H, W] with weight [O, C/groups, kH, kW]."""
    return run_op(
        F.conv2d, _tensor_arg(ctx, x), _tensor_arg(ctx, weight, "weight"), _opt(ctx, bias, "bias"),
        stride=_pair(stride, "stride"), padding=_pair(padding, "padding"), dilation=_pair(dilation, "dilation"),
        groups=_int(groups, "groups"),
    )


@builtin(ctx=True)
def depthwise_conv2d(
    ctx: Context, x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
) -> torch.Tensor:
    """Per-channel convolution: weight [C * m, 1, kH, kW] for x [N, C, H, W]."""
    t = _tensor_arg(ctx, x)
    if t.ndim != 4:
        raise BuiltinError(f"depthwise_conv2d needs x shaped [N, C, H, W], got {shape_text(t)}")
    return conv2d(ctx, t, weight, bias, stride, padding, dilation, groups=t.shape[1])


@builtin(ctx=True)
def max_pool2d(ctx: Context, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> torch.Tensor:
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    return run_op(F.max_pool2d, _tensor_arg(ctx, x), k, stride=s, padding=_pair(padding, "padding"))


@builtin(ctx=True)
def avg_pool2d(ctx: Context, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> torch.Tensor:
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    return run_op(F.avg_pool2d, _tensor_arg(ctx, x), k, stride=s, padding=_pair(padding, "padding"))


@builtin(ctx=True)
def batch_norm(
    ctx: Context, x: Any, mean: Any, var: Any, weight: Any = None, bias: Any = None, eps: Any = 1e-5
) -> torch.Tensor:
    """Inference batch norm over dim 1 with the given running mean and variance."""
    return run_op(
        F.batch_norm, _tensor_arg(ctx, x), _tensor_arg(ctx, mean, "mean"), _tensor_arg(ctx, var, "var"),
        _opt(ctx, weight, "weight"), _opt(ctx, bias, "bias"), False, 0.0, float(eps),
    )


@builtin(ctx=True)
def layer_norm(
    ctx: Context, x: Any, weight: Any = None, bias: Any = None, eps: Any = 1e-5, normalized_shape: Any = None
) -> torch.Tensor:
    """Normalize over the trailing dimensions of weight's shape (the last dimension when no weight)."""
    t = _tensor_arg(ctx, x)
    w, b = _opt(ctx, weight, "weight"), _opt(ctx, bias, "bias")
    if normalized_shape is not None:
        dims = _shape((normalized_shape,), "normalized_shape")
    elif w is not None:
        dims = list(w.shape)
    else:
        dims = [t.shape[-1]] if t.ndim else []
    return run_op(F.layer_norm, t, dims, w, b, float(eps))


# ---------------------------------------------------------------------------------------------- models


@builtin(ctx=True)
def load_model(ctx: Context, path: Any) -> Model:
    """Load a Core ML, SafeTensors or GGUF model (format by content); paths are relative to the script."""
    import tensorlogic

    return tensorlogic.load_model(ctx.path(path), device=ctx.model_device())


@builtin(ctx=True)
def save_model(ctx: Context, obj: Any, path: Any) -> None:
    """save_model(model, "out.safetensors") or save_model({"w": w}, "out.safetensors"); .gguf works too."""
    import tensorlogic

    if isinstance(obj, dict):
        tensors = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise BuiltinError(f"tensor names must be strings, got {type_name(k)}")
            tensors[k] = _tensor_arg(ctx, v, f"tensor '{k}'").detach().cpu().contiguous()
        obj = tensors
    elif not isinstance(obj, Model):
        raise BuiltinError(f"save_model takes a model or a dict of tensors, got {type_name(obj)}")
    tensorlogic.save_model(obj, ctx.path(path))


def _model_get_tensor(ctx: Context, model: Model, name: Any, dtype: Any = None) -> torch.Tensor:
    """model.get_tensor("layer.0.weight"): float16 unless dtype says otherwise."""
    if not isinstance(name, str):
        raise BuiltinError(f"get_tensor takes a tensor name string, got {type_name(name)}")
    names = model.tensor_names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" ({len(names)} tensors; see tensor_names())"
        raise BuiltinError(f"no tensor named '{name}' in {model.path.name}{hint}")
    t = model.get_tensor(name, dtype=_dtype(dtype, None))
    return t.to(ctx.torch_device())


def _model_tensor_names(ctx: Context, model: Model) -> list[str]:
    return model.tensor_names()


def _feature_value(ctx: Context, value: Any, spec: FeatureSpec | None) -> Any:
    if spec is not None and spec.kind == "image" and isinstance(value, torch.Tensor):
        return _to_pil(value, spec)
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return t.numpy()
    if isinstance(value, (list, tuple)) or is_number(value):
        return np.asarray(value, dtype=np.float32)
    return value


def _to_pil(t: torch.Tensor, spec: FeatureSpec) -> Any:
    """A [3, H, W] / [1, 3, H, W] tensor of 0–255 values as a PIL image at the model's input size."""
    from PIL import Image

    x = t.detach().float().cpu()
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    gray = (spec.image or {}).get("colorspace", "RGB").upper().startswith("GRAY")
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if gray and x.ndim == 3:
        raise BuiltinError(f"input '{spec.name}' is a grayscale image; pass a [H, W] tensor")
    if not gray and (x.ndim != 3 or x.shape[0] != 3):
        raise BuiltinError(f"input '{spec.name}' is an RGB image; pass a [3, H, W] tensor of 0-255 values")
    arr = x.clamp(0, 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr if gray else arr.transpose(1, 2, 0), "L" if gray else "RGB")
    w, h = (spec.image or {}).get("width"), (spec.image or {}).get("height")
    if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 and img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    return img


def _result_value(ctx: Context, v: Any) -> Any:
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "fiub":
            return torch.from_numpy(np.ascontiguousarray(v)).to(ctx.torch_device())
        return v.tolist()
    if isinstance(v, torch.Tensor):
        return v.to(ctx.torch_device())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {k: _result_value(ctx, x) for k, x in v.items()}
    return v


def _model_predict(ctx: Context, model: Model, x: Any) -> Any:
    """model.predict(x): one tensor in and out for a one-input, one-output model; a dict in gives a dict out."""
    model.runner  # noqa: B018 — a weights-only format says so here, before inputs are looked at
    md = model.metadata
    specs = {s.name: s for s in md.inputs}
    if isinstance(x, dict):
        data = {str(k): _feature_value(ctx, v, specs.get(str(k))) for k, v in x.items()}
    else:
        if len(md.inputs) != 1:
            names = ", ".join(s.name for s in md.inputs) or "none declared"
            raise BuiltinError(
                f"the model has {len(md.inputs)} inputs ({names}); pass a dict like {{\"name\": tensor}}"
            )
        spec = md.inputs[0]
        data = {spec.name: _feature_value(ctx, x, spec)}
    out = model.predict(data)
    if not isinstance(out, dict):
        return _result_value(ctx, out)
    if len(out) == 1 and not isinstance(x, dict):
        return _result_value(ctx, next(iter(out.values())))
    return {k: _result_value(ctx, v) for k, v in out.items()}


MODEL_METHODS: dict[str, Callable[..., Any]] = {
    "get_tensor": _model_get_tensor,
    "tensor_names": _model_tensor_names,
    "predict": _model_predict,
}


@builtin(ctx=True)
def load_image(ctx: Context, path: Any) -> torch.Tensor:
    """An image file as an RGB float16 tensor [3, H, W] of 0–255 values."""
    from PIL import Image, UnidentifiedImageError

    p = ctx.path(path)
    if not p.is_file():
        raise BuiltinError(f"no image file at {p}")
    try:
        with Image.open(p) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise BuiltinError(f"{p}: not a readable image ({_first_line(e)})") from None
    t = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).to(DEFAULT_DTYPE)
    return t.to(ctx.torch_device())


@builtin(ctx=True)
def preprocess(
    ctx: Context, image: Any, size: Any = 224, mean: Any = None, std: Any = None
) -> torch.Tensor:
    """Resize an RGB image tensor (0–255) to size×size (bilinear), scale to 0–1, normalize: [1, 3, H, W]."""
    from PIL import Image

    t = _tensor_arg(ctx, image, "image").detach().float().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise BuiltinError(f"preprocess needs an RGB image tensor [3, H, W], got shape {shape_text(t)}")
    h, w = (_int(size, "size"),) * 2 if not isinstance(size, (list, tuple)) else _pair(size, "size")
    m = [float(item(v)) for v in (IMAGENET_MEAN if mean is None else mean)]
    s = [float(item(v)) for v in (IMAGENET_STD if std is None else std)]
    if len(m) != 3 or len(s) != 3:
        raise BuiltinError("mean and std need one value per channel (3 each)")
    if any(v == 0 for v in s):
        raise BuiltinError("std values must not be 0")
    arr = t.clamp(0, 255).round().to(torch.uint8).numpy().transpose(1, 2, 0)
    img = Image.fromarray(arr, "RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(m, dtype=np.float32)) / np.asarray(s, dtype=np.float32)
    out = torch.from_numpy(x.transpose(2, 0, 1).copy()).unsqueeze(0)
    return out.to(dtype=DEFAULT_DTYPE, device=ctx.torch_device())
