"""The MIL IR → MIL text (``model.mil``), in the newer style Core ML writes with ``program(1.3)``.

Floats are written as hex floats (``0x1.8p+3``) so every value reads back bit for bit; names that
are not plain identifiers, or that collide with a keyword, are written in backquotes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from .ir import (
    NUMPY_STORAGE,
    OPSET_OS,
    BlobRef,
    Block,
    DictType,
    Function,
    ListType,
    Op,
    Program,
    StateType,
    TensorType,
    TupleType,
    Value,
    ValueType,
)

# IR opset names ("CoreML7") → the text form (`ios17`).
OPSET_TEXT = {opset: os_name.lower() for opset, os_name in OPSET_OS.items()}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Words that open a type: a statement starting with one declares an output, so an op of that name
# without outputs needs quotes there. Elsewhere the parser tells such names from types by context.
_TYPE_WORDS = frozenset(NUMPY_STORAGE) | {"tensor", "list", "tuple", "dict", "state"}
_INDENT = "    "


def write_mil(program: Program) -> str:
    """MIL text for ``program``; ``parse_mil`` reads it back to an equal Program."""
    out: list[str] = []
    header = "program(1.3)" if program.version == 1 else f"program({program.version})"
    if program.doc_string:
        header = header[:-1] + f", doc = {_quote(program.doc_string)})"
    out.append(header + "\n")
    if program.attributes:
        out.append(_attrs(program.attributes) + "\n")
    out.append("{\n")
    for fn in program.functions.values():
        _function(fn, out)
    out.append("}\n")
    return "".join(out)


def format_type(t: ValueType) -> str:
    """The text form of a type: ``tensor<fp16, [1, ?]>``, ``int32``, ``list<..., 3>`` ..."""
    if isinstance(t, TensorType):
        if t.shape == ():
            return t.dtype
        if t.shape is None:
            return f"tensor<{t.dtype}, ?>"
        dims = ", ".join(str(d) if isinstance(d, int) else _dim(d) for d in t.shape)
        return f"tensor<{t.dtype}, [{dims}]>"
    if isinstance(t, ListType):
        return f"list<{format_type(t.elem)}, {'?' if t.length is None else t.length}>"
    if isinstance(t, TupleType):
        return f"tuple<{', '.join(format_type(e) for e in t.elems)}>"
    if isinstance(t, DictType):
        return f"dict<{format_type(t.key)}, {format_type(t.value)}>"
    if isinstance(t, StateType):
        return f"state<{format_type(t.wrapped)}>"
    raise TypeError(f"not a MIL type: {t!r}")


def format_value(v: Value) -> str:
    """A typed literal: ``int32(0)``, ``tensor<fp16, [2]>([0x1p+0, -0x1p-1])``, ``BLOBFILE`` refs."""
    return f"{format_type(v.type)}({_bare(v)})"


def format_name(name: str) -> str:
    """A name as written: plain when it is an identifier, else in backquotes."""
    if _IDENT.match(name):
        return name
    return "`" + _escape(name, "`") + "`"


# ---- structure ----------------------------------------------------------------------------

def _function(fn: Function, out: list[str]) -> None:
    inputs = ", ".join(f"{format_type(v.type)} {format_name(v.name)}" for v in fn.inputs)
    head = f"{_INDENT}func {format_name(fn.name)}<{_opset(fn.opset)}>({inputs})"
    if fn.attributes:
        head += " " + _attrs(fn.attributes)
    out.append(head)
    blocks = list(fn.blocks.items())
    if fn.opset in fn.blocks:
        # The function's own opset block comes first and unlabelled; other specialisations follow.
        blocks.sort(key=lambda kv: kv[0] != fn.opset)
    for i, (opset, block) in enumerate(blocks):
        if i > 0 or opset != fn.opset:
            out.append(f" <{_opset(opset)}>")
        if block.inputs:
            out.append(" (" + _block_inputs(block) + ")")
        out.append(" {\n")
        _ops(block, out, 2)
        out.append(f"{_INDENT}}} -> ({', '.join(format_name(n) for n in block.outputs)})")
        if block.attributes:
            out.append(" " + _attrs(block.attributes))
    out.append(";\n")


def _ops(block: Block, out: list[str], depth: int) -> None:
    for op in block.operations:
        _op(op, out, depth)


def _op(op: Op, out: list[str], depth: int) -> None:
    indent = _INDENT * depth
    parts = [indent]
    if len(op.outputs) == 1:
        parts.append(f"{format_type(op.outputs[0].type)} {format_name(op.outputs[0].name)} = ")
    elif op.outputs:
        outs = ", ".join(f"{format_type(v.type)} {format_name(v.name)}" for v in op.outputs)
        parts.append(f"({outs}) = ")
    args = ", ".join(f"{format_name(k)} = {_args(a)}" for k, a in op.inputs.items())
    op_type = format_name(op.type)
    if not op.outputs and op.type in _TYPE_WORDS:
        op_type = f"`{op.type}`"
    parts.append(f"{op_type}({args})")
    if op.attributes:
        parts.append(_attrs(op.attributes))
    out.append("".join(parts))
    for i, block in enumerate(op.blocks):
        label = _block_label(op.type, i, len(op.blocks))
        out.append(f"\n{indent}{_INDENT}{label}({_block_inputs(block)}) {{\n")
        _ops(block, out, depth + 2)
        out.append(f"{indent}{_INDENT}}} -> ({', '.join(format_name(n) for n in block.outputs)})")
        if block.attributes:
            out.append(" " + _attrs(block.attributes))
    out.append(";\n")


def _block_label(op_type: str, index: int, count: int) -> str:
    # Labels are for the reader only; the parser ignores them.
    if op_type == "cond" and count == 2:
        return ("_true_fn", "_false_fn")[index]
    if op_type == "while_loop" and count == 2:
        return ("_cond", "_body")[index]
    return f"block{index}"


def _block_inputs(block: Block) -> str:
    return ", ".join(f"{format_type(v.type)} {format_name(v.name)}" for v in block.inputs)


def _args(args: tuple) -> str:
    if len(args) == 1:
        return _arg(args[0])
    return "(" + ", ".join(_arg(a) for a in args) + ")"


def _arg(a: Any) -> str:
    return format_value(a) if isinstance(a, Value) else format_name(a)


def _attrs(attrs: dict[str, Value]) -> str:
    return "[" + ", ".join(f"{format_name(k)} = {format_value(v)}" for k, v in attrs.items()) + "]"


def _opset(opset: str) -> str:
    return OPSET_TEXT.get(opset) or format_name(opset)


def _dim(d: str) -> str:
    return "?" if d == "?" else format_name(d)


# ---- literals -----------------------------------------------------------------------------

def _bare(v: Value) -> str:
    """The contents of a literal, given its type is written in front of it."""
    t, data = v.type, v.data
    if isinstance(data, BlobRef):
        return f"BLOBFILE(path = string({_quote(data.path)}), offset = uint64({data.offset}))"
    if isinstance(t, TensorType):
        if t.dtype == "string" and isinstance(data, str):
            return _quote(data)
        arr = np.asarray(data)
        fmt = _formatter(t.dtype, arr)
        if arr.ndim == 0:
            return fmt(arr.item())
        return _nested(arr.tolist(), fmt)
    if isinstance(t, ListType):
        return "[" + ", ".join(_element(t.elem, e) for e in data) + "]"
    if isinstance(t, TupleType):
        return "(" + ", ".join(_element(et, e) for et, e in zip(t.elems, data)) + ")"
    if isinstance(t, DictType):
        pairs = (f"{{{_element(t.key, k)}, {_element(t.value, val)}}}" for k, val in data.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no literal form for {format_type(t)}")


def _element(expected: ValueType, v: Value) -> str:
    # Bare where the element has exactly the declared type; typed where it differs (or is a blob).
    if v.type == expected and not v.is_blob:
        return _bare(v)
    return format_value(v)


def _nested(items: list, fmt: Callable[[Any], str]) -> str:
    if items and isinstance(items[0], list):
        return "[" + ", ".join(_nested(i, fmt) for i in items) + "]"
    if not items:
        return "[]"
    return "[" + ", ".join(map(fmt, items)) + "]"


def _formatter(dtype: str, arr: np.ndarray) -> Callable[[Any], str]:
    if dtype == "string":
        return _quote
    if dtype == "bool":
        return _bool_text
    if arr.dtype.kind == "f":
        return _hex_float
    return _int_text


def _bool_text(b: Any) -> str:
    return "true" if b else "false"


def _int_text(i: Any) -> str:
    return str(int(i))


def _hex_float(x: float) -> str:
    x = float(x)
    if math.isnan(x):
        return "-nan" if math.copysign(1.0, x) < 0 else "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = x.hex()  # e.g. '0x1.8000000000000p+3'
    mantissa, exp = text.split("p")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}p{exp}"


def _quote(s: str) -> str:
    return '"' + _escape(s, '"') + '"'


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(s: str, quote: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == quote:
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)
