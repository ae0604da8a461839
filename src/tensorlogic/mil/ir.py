"""The MIL intermediate representation: Program → Function → Block → Op, shared by every reader.

The same IR comes out of a protobuf ML Program (``from_proto``) and out of ``model.mil`` text
(``from_text``), and ``to_text`` writes it back. No torch here: consts are numpy arrays or lazy
references into a memory-mapped ``weight.bin``.

Conventions:
- A dim is an ``int``, or a ``str`` for a symbolic dim (``"?"`` when anonymous). ``shape=None``
  means the rank itself is unknown.
- A literal is a ``Value``. Tensors and scalars hold an ``np.ndarray`` of the dtype's numpy
  storage type (``NUMPY_STORAGE``; a scalar is a 0-d array); ``string`` scalars hold a ``str``;
  lists and tuples hold a tuple of ``Value``; dicts a ``dict`` of ``Value`` → ``Value``; weights
  stored in a blob file hold a ``BlobRef`` until ``Value.numpy()`` resolves them.
- An op input binds one or more arguments; each argument is a ``str`` (a variable name) or a
  ``Value`` (a literal).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Every dtype MIL knows, by its MIL text name.
FLOAT_DTYPES = ("fp16", "fp32", "fp64", "bf16", "fp8e4m3fn", "fp8e5m2")
INT_DTYPES = (
    "int4", "int8", "int16", "int32", "int64",
    "uint1", "uint2", "uint3", "uint4", "uint6", "uint8", "uint16", "uint32", "uint64",
)
DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool", "string")

# numpy holds each MIL dtype in this type: exact, but wider where numpy lacks the type
# (bf16 and fp8 widen to float32, sub-byte ints to one byte per element).
NUMPY_STORAGE: dict[str, Any] = {
    "fp16": np.float16, "fp32": np.float32, "fp64": np.float64,
    "bf16": np.float32, "fp8e4m3fn": np.float32, "fp8e5m2": np.float32,
    "int4": np.int8, "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint1": np.uint8, "uint2": np.uint8, "uint3": np.uint8, "uint4": np.uint8, "uint6": np.uint8,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "bool": np.bool_, "string": object,
}

# Bits per element for dtypes that pack below a byte in blob files.
SUB_BYTE_BITS = {"int4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "uint6": 6}

Dim = int | str


@dataclass(frozen=True)
class TensorType:
    """A tensor (rank ≥ 1) or scalar (``shape == ()``) of one dtype."""

    dtype: str
    shape: tuple[Dim, ...] | None = ()

    @property
    def is_scalar(self) -> bool:
        return self.shape == ()

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)


@dataclass(frozen=True)
class ListType:
    elem: ValueType
    length: int | None = None  # None: dynamic length


@dataclass(frozen=True)
class TupleType:
    elems: tuple[ValueType, ...]


@dataclass(frozen=True)
class DictType:
    key: ValueType
    value: ValueType


@dataclass(frozen=True)
class StateType:
    """A mutable state (iOS18): wraps the tensor type it holds."""

    wrapped: TensorType


ValueType = TensorType | ListType | TupleType | DictType | StateType


@dataclass(frozen=True)
class BlobRef:
    """A weight stored in a MIL blob file: ``path`` as written in the model (``@model_path/...``)."""

    path: str
    offset: int


# Reads a BlobRef into numpy; set by the container reader, never part of equality.
BlobLoader = Callable[[BlobRef, TensorType], np.ndarray]


class Value:
    """A literal: an immediate value or a lazily loaded blob."""

    __slots__ = ("type", "data", "_loader", "_cache")

    def __init__(self, type: ValueType, data: Any, loader: BlobLoader | None = None):
        self.type = type
        self.data = data
        self._loader = loader
        self._cache: np.ndarray | None = None

    @property
    def is_blob(self) -> bool:
        return isinstance(self.data, BlobRef)

    def numpy(self) -> Any:
        """The value's data, blobs read (memory-mapped, not copied, where the dtype allows)."""
        if not isinstance(self.data, BlobRef):
            return self.data
        if self._cache is None:
            if self._loader is None:
                raise ValueError(f"blob {self.data.path}@{self.data.offset} has no loader attached")
            assert isinstance(self.type, TensorType)
            self._cache = self._loader(self.data, self.type)
        return self._cache

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value) or self.type != other.type:
            return False
        return _data_equal(self.data, other.data)

    def __hash__(self) -> int:
        return hash(self.type)

    def __repr__(self) -> str:
        if isinstance(self.data, np.ndarray) and self.data.size > 8:
            shown = f"array(shape={self.data.shape}, dtype={self.data.dtype})"
        else:
            shown = repr(self.data)
        return f"Value({self.type}, {shown})"


def _data_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.kind == "f":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_data_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a.items()) == list(b.items())
    return type(a) is type(b) and a == b


Arg = str | Value  # a variable name, or a literal


@dataclass(frozen=True)
class Var:
    """A named, typed value produced by an op or passed into a function or block."""

    name: str
    type: ValueType


@dataclass
class Op:
    type: str
    inputs: dict[str, tuple[Arg, ...]] = field(default_factory=dict)
    outputs: list[Var] = field(default_factory=list)
    attributes: dict[str, Value] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The op's name attribute, or its first output's name."""
        v = self.attributes.get("name")
        if v is not None and isinstance(v.data, str):
            return v.data
        return self.outputs[0].name if self.outputs else self.type

    def arg(self, input_name: str) -> Arg | None:
        """The single argument bound to ``input_name`` (None when the input is not given)."""
        args = self.inputs.get(input_name)
        if not args:
            return None
        if len(args) != 1:
            raise ValueError(f"{self.type} input {input_name!r} binds {len(args)} arguments, not one")
        return args[0]


@dataclass
class Block:
    inputs: list[Var] = field(default_factory=list)
    operations: list[Op] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attributes: dict[str, Value] = field(default_factory=dict)

    def walk(self) -> Iterator[Op]:
        """Every op in this block and its nested blocks, in program order."""
        for op in self.operations:
            yield op
            for b in op.blocks:
                yield from b.walk()


@dataclass
class Function:
    name: str
    inputs: list[Var]
    opset: str  # e.g. "CoreML7"
    blocks: dict[str, Block]  # opset -> block (MIL's block specializations)
    attributes: dict[str, Value] = field(default_factory=dict)

    @property
    def block(self) -> Block:
        return self.blocks[self.opset]


@dataclass
class Program:
    version: int = 1
    functions: dict[str, Function] = field(default_factory=dict)
    attributes: dict[str, Value] = field(default_factory=dict)
    doc_string: str = ""

    def walk(self) -> Iterator[Op]:
        for fn in self.functions.values():
            for block in fn.blocks.values():
                yield from block.walk()

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for op in self.walk():
            hist[op.type] = hist.get(op.type, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


# MIL opset names and the OS release each first shipped with.
OPSET_OS = {
    "CoreML3": "iOS13", "CoreML4": "iOS14", "CoreML5": "iOS15", "CoreML6": "iOS16",
    "CoreML7": "iOS17", "CoreML8": "iOS18", "CoreML9": "iOS26",
}


def scalar(dtype: str, value: Any) -> Value:
    """A scalar literal (``string`` takes a ``str``)."""
    if dtype == "string":
        return Value(TensorType("string", ()), str(value))
    return Value(TensorType(dtype, ()), np.array(value, dtype=NUMPY_STORAGE[dtype]))


def tensor(dtype: str, data: Any) -> Value:
    """A tensor literal from nested lists or an array."""
    arr = np.asarray(data, dtype=NUMPY_STORAGE[dtype])
    return Value(TensorType(dtype, tuple(arr.shape)), arr)
