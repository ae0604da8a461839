"""The value model of TensorLogic scripts: devices, records, the run's context, type names, tensor coercion.

Values are plain Python and torch objects: int (64-bit semantics), float, bool, str, None (void), list
(the original's IntArray/FloatArray/StringArray/BoolArray), ``Vec`` (IntVec/FloatVec/...), dict,
torch.Tensor (float16 unless a dtype says otherwise), Model, and the records below.
"""

from __future__ import annotations

import functools
import inspect
import math
import secrets
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from ..model import Model

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


VEC_KINDS = {"int": "IntVec", "float": "FloatVec", "string": "StringVec", "bool": "BoolVec"}


class Vec:
    """A mutable vector of one element kind (the original's IntVec, FloatVec, StringVec, BoolVec)."""

    def __init__(self, kind: str, items: Iterable[Any] = ()):
        if kind not in VEC_KINDS:
            raise ValueError(f"unknown Vec kind {kind!r}")
        self.kind = kind
        self.items: list[Any] = []
        for x in items:
            self.items.append(self.coerce(x))

    @property
    def name(self) -> str:
        return VEC_KINDS[self.kind]

    def coerce(self, x: Any) -> Any:
        """``x`` as an element of this vector (ints widen to floats in a FloatVec), or a BuiltinError."""
        if self.kind == "int" and isinstance(x, int) and not isinstance(x, bool):
            return x
        if self.kind == "float" and isinstance(x, (int, float)) and not isinstance(x, bool):
            return float(x)
        if self.kind == "string" and isinstance(x, str):
            return x
        if self.kind == "bool" and isinstance(x, bool):
            return x
        want = {"int": "an int", "float": "a number", "string": "a string", "bool": "a bool"}[self.kind]
        raise BuiltinError(f"{self.name} holds {self.kind}s; got {type_name(x)} {format_value(x, nested=True)}, "
                           f"need {want}")

    def index(self, i: Any) -> int:
        """A valid position for ``i`` (negative counts from the end), or a BuiltinError."""
        k = as_int(i, "the index")
        n = len(self.items)
        if not -n <= k < n:
            raise BuiltinError(f"index {k} is out of range for {self.name} of length {n}")
        return k % n

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(list(self.items))

    def __getitem__(self, i: Any) -> Any:
        return self.items[self.index(i)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vec) and other.kind == self.kind and other.items == self.items

    def __repr__(self) -> str:
        return f"Vec({self.kind!r}, {self.items!r})"

    __hash__ = None  # mutable


class TensorBuffer:
    """The original's pre-allocated tensor memory (new_tensor_buffer): here only its bookkeeping.

    Torch allocates the tensors; the buffer keeps the capacity/used accounting, the per-shape slots that
    ``alloc`` reserves, and the "buffer exhausted" error, so scripts written for it behave the same.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self.slots: dict[tuple[int, ...], int] = {}  # shape -> slots reserved by alloc and not yet taken

    def reserve(self, nbytes: int) -> None:
        if self.used + nbytes > self.capacity:
            raise BuiltinError(
                f"the tensor buffer is exhausted: {nbytes} bytes requested, {self.capacity - self.used} available"
            )
        self.used += nbytes

    def take(self, shape: tuple[int, ...], elem_size: int) -> None:
        """Use a slot reserved for ``shape``, or reserve new space for one tensor of it."""
        if self.slots.get(shape, 0) > 0:
            self.slots[shape] -= 1
            return
        self.reserve(math.prod(shape) * elem_size)


@dataclass
class Context:
    """What builtins need from the run: where relative paths start, the device policy, output streams."""

    base_dir: Path = field(default_factory=Path.cwd)
    device: str | None = None  # the --device option: None (GPU when present), "cpu" or "gpu"
    out: TextIO | None = None
    err: TextIO | None = None
    inp: TextIO | None = None  # where input() reads lines; sys.stdin when None
    # Unseeded scripts draw different values each run; seed(n) or seed: n makes them repeatable.
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(secrets.randbits(63)))
    noted_cpu_fallback: bool = False
    # The script position of the call being evaluated (file, line, col), kept by the evaluator so that a
    # builtin's warning can name the line; each distinct warning is shown once per position.
    where: tuple[str, int, int] | None = None
    # Entity types of the run's logic program: type name -> members in index order (a live view).
    entities: Any = None
    warned: set[tuple[str, tuple[str, int, int] | None]] = field(default_factory=set)

    def warn(self, message: str) -> None:
        """Print ``tl: warning: FILE:LINE:COL: message`` once for this call site."""
        key = (message, self.where)
        if key in self.warned:
            return
        self.warned.add(key)
        at = f"{self.where[0]}:{self.where[1]}:{self.where[2]}: " if self.where else ""
        print(f"tl: warning: {at}{message}", file=self.stderr())

    def stdout(self) -> TextIO:
        return self.out or sys.stdout

    def stderr(self) -> TextIO:
        return self.err or sys.stderr

    def stdin(self) -> TextIO:
        return self.inp or sys.stdin

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
    if isinstance(v, Vec):
        return v.name
    if isinstance(v, TensorBuffer):
        return "TensorBuffer"
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
            raise BuiltinError(f"cannot stack these tensors: {first_line(e)}") from None
    if not (is_number(v) or isinstance(v, (list, tuple))):
        raise BuiltinError(f"expected a tensor, a number or a list of numbers, got {type_name(v)}")
    if dtype is None:
        dtype = torch.bool if _all_bools(v) else DEFAULT_DTYPE
    try:
        return torch.tensor(v, dtype=dtype, device=dev)
    except (TypeError, ValueError, RuntimeError) as e:
        raise BuiltinError(f"cannot make a tensor from this list: {first_line(e)}") from None


def _all_bools(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, (list, tuple)):
        return bool(v) and all(_all_bools(x) for x in v)
    return False


def first_line(e: BaseException) -> str:
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


def tensor_arg(ctx: Context, v: Any, what: str = "x") -> torch.Tensor:
    """A tensor argument: tensors as they are; numbers, lists and numeric Vecs become tensors."""
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, Vec) and v.kind in ("int", "float", "bool"):
        v = v.items
    if is_number(v) or isinstance(v, (list, tuple)):
        return to_tensor(ctx, v)
    raise BuiltinError(f"{what} must be a tensor, got {type_name(v)}")


def as_int(v: Any, what: str) -> int:
    """An integer argument: an int, an integral float (the original passes dims as 2.0), or a one-element
    tensor holding an integral value."""
    if isinstance(v, torch.Tensor) and v.numel() == 1 and v.dtype != torch.bool:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise BuiltinError(f"{what} must be an integer, got {format_value(v, nested=True)}")
    return v


def int_list(v: Any, what: str) -> list[int]:
    """A list of integers from a list, an IntVec or a 1-D tensor (shape(x) and x.shape() both work)."""
    if isinstance(v, torch.Tensor):
        if v.ndim != 1:
            raise BuiltinError(f"{what} must be a list of integers, got a tensor of shape {shape_text(v)}")
        v = v.tolist()
    elif isinstance(v, (Vec, torch.Size, range)):
        v = list(v)
    if not isinstance(v, (list, tuple)):
        raise BuiltinError(f"{what} must be a list of integers, got {type_name(v)}")
    return [as_int(x, what) for x in v]


def shape_arg(args: tuple[Any, ...], what: str = "shape") -> list[int]:
    """A shape given as one list, IntVec or 1-D tensor (zeros([2, 3])) or as several integers (zeros(2, 3))."""
    if len(args) == 1 and not is_number(args[0]) and not (isinstance(args[0], torch.Tensor) and args[0].ndim == 0):
        dims = int_list(args[0], what)
    else:
        dims = [as_int(a, what) for a in args]
    if any(d < 0 for d in dims):
        raise BuiltinError(f"{what} cannot have negative sizes: {dims}")
    return dims


def narrow(ctx: Context, what: str, wide: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a result computed in float32 back to ``dtype``. Where float16 cannot hold a value float32 could
    (|x| > 65504), keep the float32 result and warn once for this script line instead of returning inf."""
    if wide.dtype == dtype:
        return wide
    out = wide.to(dtype)
    if dtype in (torch.float16, torch.bfloat16) and bool((torch.isinf(out) & torch.isfinite(wide)).any()):
        limit = f"max {torch.finfo(dtype).max:.0f}"
        ctx.warn(f"{what} overflows {dtype_name(dtype)} ({limit}); the result is kept in {dtype_name(wide.dtype)}")
        return wide
    return out


def fresh(out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """``out``, copied if it is a view of one of ``inputs``: scripts assign into tensors in place, so a
    builtin's result must never share memory with its arguments."""
    ptr = out.untyped_storage().data_ptr()
    if out.numel() and any(t.numel() and t.untyped_storage().data_ptr() == ptr for t in inputs):
        return out.clone(memory_format=torch.contiguous_format)
    return out


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
    if isinstance(v, (bool, int, float, str, list, tuple, dict, range, Vec)):
        return bool(v)
    return True


def dtype_arg(v: Any, default: torch.dtype | None = DEFAULT_DTYPE) -> torch.dtype | None:
    if v is None:
        return default
    if isinstance(v, torch.dtype):
        return v
    if isinstance(v, str) and v in DTYPES:
        return DTYPES[v]
    raise BuiltinError(f"dtype must be one of {', '.join(DTYPES)}, got {format_value(v, nested=True)}")



from .format import format_value  # noqa: E402  (format.py needs the classes above)
