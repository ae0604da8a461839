"""ML Program protobuf (``CoreML.Specification.MILSpec.Program``) → the MIL IR of ``ir.py``.

Immediate values become numpy arrays in ``NUMPY_STORAGE`` dtypes (coremltools stores fp16, 8-bit,
sub-byte and uint32 tensors in the ``bytes`` field, wider ints in ``ints``/``longInts``); weights in
blob files become ``Value(type, BlobRef(path, offset), loader)`` and are read only when asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import FormatError
from ..formats.milblob import decode_bytes
from .ir import (
    NUMPY_STORAGE,
    BlobLoader,
    BlobRef,
    Block,
    DictType,
    Dim,
    Function,
    ListType,
    Op,
    Program,
    StateType,
    TensorType,
    TupleType,
    Value,
    ValueType,
    Var,
)

# MILSpec.DataType enum values -> MIL text dtype names.
PROTO_DTYPES: dict[int, str] = {
    1: "bool", 2: "string", 10: "fp16", 11: "fp32", 12: "fp64", 13: "bf16",
    21: "int8", 22: "int16", 23: "int32", 24: "int64", 25: "int4",
    31: "uint8", 32: "uint16", 33: "uint32", 34: "uint64", 35: "uint4", 36: "uint2", 37: "uint1",
    38: "uint6", 39: "uint3", 40: "fp8e4m3fn", 41: "fp8e5m2",
}


class _Reader:
    """Carries the file path (for errors) and the blob loader through the recursive conversion."""

    def __init__(self, path: str | None, loader: BlobLoader | None):
        self.path = path
        self.loader = loader
        self.blob_files: set[str] = set()

    def fail(self, message: str) -> FormatError:
        return FormatError(f"ML Program: {message}", self.path)

    # --- types -------------------------------------------------------------------------------

    def dtype(self, code: int, where: str) -> str:
        name = PROTO_DTYPES.get(code)
        if name is None:
            raise self.fail(f"unknown data type code {code} in {where}")
        return name

    def dim(self, d: Any) -> Dim:
        kind = d.WhichOneof("dimension")
        if kind == "constant":
            return int(d.constant.size)
        if kind == "unknown":
            return "..." if d.unknown.variadic else "?"
        return "?"

    def value_type(self, vt: Any, where: str) -> ValueType:
        kind = vt.WhichOneof("type")
        if kind == "tensorType":
            return self.tensor_type(vt.tensorType, where)
        if kind == "listType":
            lt = vt.listType
            length = lt.length.constant.size if lt.length.WhichOneof("dimension") == "constant" else None
            return ListType(self.value_type(lt.type, where), None if length is None else int(length))
        if kind == "tupleType":
            return TupleType(tuple(self.value_type(t, where) for t in vt.tupleType.types))
        if kind == "dictionaryType":
            dt = vt.dictionaryType
            return DictType(self.value_type(dt.keyType, where), self.value_type(dt.valueType, where))
        if kind == "stateType":
            wrapped = self.value_type(vt.stateType.wrappedType, where)
            if not isinstance(wrapped, TensorType):
                raise self.fail(f"state type in {where} wraps {type(wrapped).__name__}, not a tensor")
            return StateType(wrapped)
        raise self.fail(f"value type without a kind in {where}")

    def tensor_type(self, tt: Any, where: str) -> TensorType:
        dtype = self.dtype(tt.dataType, where)
        if tt.rank < 0:
            return TensorType(dtype, None)
        if tt.rank != len(tt.dimensions):
            raise self.fail(f"tensor type in {where} has rank {tt.rank} but {len(tt.dimensions)} dimensions")
        return TensorType(dtype, tuple(self.dim(d) for d in tt.dimensions))

    # --- values ------------------------------------------------------------------------------

    def value(self, v: Any, where: str) -> Value:
        vtype = self.value_type(v.type, where)
        kind = v.WhichOneof("value")
        if kind == "blobFileValue":
            if not isinstance(vtype, TensorType):
                raise self.fail(f"blob value in {where} is not a tensor")
            self.blob_files.add(v.blobFileValue.fileName)
            return Value(vtype, BlobRef(v.blobFileValue.fileName, int(v.blobFileValue.offset)), self.loader)
        if kind != "immediateValue":
            raise self.fail(f"value in {where} has neither an immediate value nor a blob")
        iv = v.immediateValue
        ikind = iv.WhichOneof("value")
        if ikind == "tensor":
            if not isinstance(vtype, TensorType):
                raise self.fail(f"tensor data for a {type(vtype).__name__} in {where}")
            return Value(vtype, self.tensor_data(vtype, iv.tensor, where))
        if ikind in ("list", "tuple"):
            items = iv.list.values if ikind == "list" else iv.tuple.values
            return Value(vtype, tuple(self.value(x, where) for x in items))
        if ikind == "dictionary":
            return Value(vtype, {self.value(kv.key, where): self.value(kv.value, where) for kv in iv.dictionary.values})
        raise self.fail(f"immediate value without data in {where}")

    def tensor_data(self, ttype: TensorType, tv: Any, where: str) -> Any:
        if ttype.shape is None or not ttype.is_static:
            raise self.fail(f"immediate tensor in {where} has a non-static shape {ttype.shape}")
        shape = tuple(int(d) for d in ttype.shape)
        count = int(np.prod(shape, dtype=np.int64))
        dtype = ttype.dtype
        field = tv.WhichOneof("value")
        if dtype == "string":
            strings = [s.decode("utf-8") if isinstance(s, bytes) else s for s in tv.strings.values]
            if ttype.is_scalar:
                if len(strings) != 1:
                    raise self.fail(f"string scalar in {where} holds {len(strings)} strings")
                return strings[0]
            arr = np.empty(len(strings), dtype=object)
            arr[:] = strings
            return self._shaped(arr, shape, count, where)
        if field is None:
            return self._shaped(np.zeros(0, NUMPY_STORAGE[dtype]), shape, count, where)
        if field == "bytes":
            try:
                return decode_bytes(dtype, tv.bytes.values, count).reshape(shape)
            except (KeyError, ValueError) as e:
                raise self.fail(f"{dtype} bytes in {where}: {e}") from None
        raw = getattr(tv, field).values
        try:
            arr = np.asarray(raw, dtype=NUMPY_STORAGE[dtype])
        except (OverflowError, ValueError) as e:
            raise self.fail(f"{field} values do not fit {dtype} in {where}: {e}") from None
        return self._shaped(arr, shape, count, where)

    def _shaped(self, arr: np.ndarray, shape: tuple[int, ...], count: int, where: str) -> np.ndarray:
        if arr.size != count:
            raise self.fail(f"immediate tensor in {where} holds {arr.size} values, its type needs {count}")
        return arr.reshape(shape)

    def attributes(self, attrs: Any, where: str) -> dict[str, Value]:
        return {k: self.value(attrs[k], f"{where} attribute {k!r}") for k in attrs}

    # --- structure ---------------------------------------------------------------------------

    def named(self, nvt: Any, where: str) -> Var:
        return Var(nvt.name, self.value_type(nvt.type, f"{where} {nvt.name!r}"))

    def op(self, o: Any) -> Op:
        label = f"op {o.type}" + (f" -> {o.outputs[0].name}" if len(o.outputs) else "")
        inputs: dict[str, tuple[Any, ...]] = {}
        for key in o.inputs:
            args: list[Any] = []
            for b in o.inputs[key].arguments:
                which = b.WhichOneof("binding")
                if which == "name":
                    args.append(b.name)
                elif which == "value":
                    args.append(self.value(b.value, f"{label} input {key!r}"))
                else:
                    raise self.fail(f"{label} input {key!r} has an empty binding")
            inputs[key] = tuple(args)
        return Op(
            type=o.type,
            inputs=inputs,
            outputs=[self.named(x, f"{label} output") for x in o.outputs],
            attributes=self.attributes(o.attributes, label),
            blocks=[self.block(b, label) for b in o.blocks],
        )

    def block(self, b: Any, where: str) -> Block:
        return Block(
            inputs=[self.named(x, f"{where} block input") for x in b.inputs],
            operations=[self.op(o) for o in b.operations],
            outputs=list(b.outputs),
            attributes=self.attributes(b.attributes, f"{where} block"),
        )

    def function(self, name: str, f: Any) -> Function:
        where = f"function {name!r}"
        blocks = {opset: self.block(f.block_specializations[opset], where) for opset in f.block_specializations}
        if f.opset not in blocks:
            raise self.fail(f"{where} declares opset {f.opset!r} but has blocks only for {sorted(blocks)}")
        return Function(
            name=name,
            inputs=[self.named(x, f"{where} input") for x in f.inputs],
            opset=f.opset,
            blocks=blocks,
            attributes=self.attributes(f.attributes, where),
        )


def program_from_proto(
    ml_program: Any, path: str | None = None, loader: BlobLoader | None = None
) -> tuple[Program, set[str]]:
    """Convert a ``MILSpec.Program`` message; returns the IR and the set of blob file paths it references."""
    r = _Reader(path, loader)
    program = Program(
        version=int(ml_program.version),
        functions={name: r.function(name, ml_program.functions[name]) for name in ml_program.functions},
        attributes=r.attributes(ml_program.attributes, "program"),
        doc_string=ml_program.docString,
    )
    return program, r.blob_files
