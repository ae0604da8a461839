"""MIL text (``model.mil`` of a compiled ``.mlmodelc``) → the MIL IR.

LALR parse with lark's contextual lexer; the IR is built by a Transformer embedded in the parser,
so no parse tree is materialised. Both the older literal style (``tensor<string, []>("x")``,
``program(1.0)``) and the newer one (``string("x")``, ``program(1.3)``) are accepted. Variable
references are checked in a second pass over the IR, against the function and block scopes.
"""

from __future__ import annotations

import math
import re
import threading
from importlib import resources
from typing import Any, NamedTuple

import numpy as np
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import FormatError
from .ir import (
    NUMPY_STORAGE,
    OPSET_OS,
    BlobLoader,
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
    Var,
)
from .to_text import format_type

# Text opset names (`func main<ios17>`) → IR opset names ("CoreML7"); others are kept verbatim.
TEXT_OPSETS = {os_name.lower(): opset for opset, os_name in OPSET_OS.items()}

_INT_RANGE = {
    "int4": (-8, 7), "uint1": (0, 1), "uint2": (0, 3), "uint3": (0, 7), "uint4": (0, 15), "uint6": (0, 63),
}
# (mantissa bits, smallest normal exponent, largest finite value) of float dtypes numpy lacks.
_NARROW_FLOATS = {
    "bf16": (7, -126, float.fromhex("0x1.fep+127")),
    "fp8e4m3fn": (3, -6, 448.0),
    "fp8e5m2": (2, -14, 57344.0),
}
_EXCERPT = 120  # longest source excerpt shown under an error message
# Deeper nesting (of blocks, types or nested lists) than any real model: refused, so that nothing
# downstream that walks the IR recursively can run out of stack.
_MAX_NESTING = 64
# How syntax-error messages name the terminals lark expected.
_TERMINAL_NAMES = {
    "NAME": "a name", "QNAME": "a name", "VERSION": "a version number", "INT": "an integer",
    "NUMBER": "a number", "STRING": "a string", "$END": "end of input", "<END-OF-FILE>": "end of input",
}


class _LiteralError(Exception):
    """A literal does not fit its declared type; the caller adds the position."""


# A literal's contents before its type is known: (kind, payload) with kind one of
# n(umber) s(tring) b(ool) l(ist) t(uple) d(ict) blob; or a typed literal (a Value) inside a container.
_Bare = tuple


_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _decode_escapes(body: str) -> str:
    def repl(m: re.Match) -> str:
        e = m.group(1)
        if len(e) > 1:
            return chr(int(e[1:], 16))
        return _SIMPLE_ESCAPES.get(e, e)

    return _ESCAPE.sub(repl, body)


@v_args(inline=True)
class _Builder(Transformer):
    """Builds IR objects as lark reduces rules; state is per parse (see ``reset``)."""

    def reset(self, loader: BlobLoader | None) -> None:
        self.loader = loader
        # id(op or block) -> the name tokens it references, for the scope pass.
        self.refs: dict[int, list[Token]] = {}
        self.bindings: dict[int, list[Token]] = {}
        # id(op or block) -> how deeply blocks nest inside it (only where they do).
        self.depth: dict[int, int] = {}

    # ---- program, functions, blocks -------------------------------------------------------
    def start(self, version, doc, attrs, functions):
        prog = Program(version=int(version.split(".")[0]), attributes=attrs or {}, doc_string=doc or "")
        for name_tok, fn in functions:
            if fn.name in prog.functions:
                raise _PositionedError(f"function {fn.name!r} is defined twice", name_tok)
            prog.functions[fn.name] = fn
        return prog

    def prog_doc(self, s):
        return _decode_escapes(s[1:-1])

    def functions(self, *fns):
        return fns

    def function(self, name, opset, inputs, attrs, fblocks, _semi=None):
        fn_opset = _opset(opset)
        blocks: dict[str, Block] = {}
        for label, block in fblocks:
            key = fn_opset if label is None else _opset(label)
            if key in blocks:
                raise _PositionedError(f"function {str(name)!r} has two blocks for opset {key}", label or name)
            blocks[key] = block
        fn = Function(
            name=str(name), inputs=[Var(str(n), t) for t, n in inputs or ()], opset=fn_opset,
            blocks=blocks, attributes=attrs or {},
        )
        return name, fn

    def fblocks(self, *items):
        return items

    def fblock(self, label, block):
        return label, block

    def fbody(self, inputs, ops, outputs, attrs):
        return self._block(inputs, ops, outputs, attrs)

    def block(self, _label, inputs, ops, outputs, attrs):
        return self._block(inputs, ops, outputs, attrs)

    def _block(self, inputs, ops, outputs, attrs) -> Block:
        block = Block(
            inputs=[Var(str(n), t) for t, n, _ in inputs or ()],
            operations=ops,
            outputs=[str(n) for n in outputs or ()],
            attributes=attrs or {},
        )
        self.refs[id(block)] = list(outputs or ())
        depth = max((self.depth.get(id(op), 0) for op in ops), default=0)
        if depth:
            self.depth[id(block)] = depth
        bound = [b for _, _, b in inputs or () if b is not None]
        if bound:
            self.bindings[id(block)] = bound
        return block

    def block_inputs(self, *items):
        return items

    def block_input(self, t, name, bound):
        return t.type, name, bound

    def ops(self, *ops):
        return list(ops)

    def blocks(self, *blocks):
        return list(blocks)

    def op(self, outputs, op_type, args, attrs, blocks):
        return self._op(outputs, op_type, args, attrs, blocks)

    def op_noout(self, op_type, args, attrs, blocks):
        return self._op((), op_type, args, attrs, blocks)

    def _op(self, outputs, op_type, args, attrs, blocks):
        inputs: dict[str, tuple] = {}
        refs: list[Token] = []
        for key, items in args or ():
            if key in inputs:
                raise _PositionedError(f"input {str(key)!r} is given twice", key)
            for item in items:
                if isinstance(item, Token):
                    refs.append(item)
            inputs[str(key)] = tuple(str(i) if isinstance(i, Token) else i for i in items)
        op = Op(
            type=str(op_type), inputs=inputs,
            outputs=[Var(str(n), t) for t, n in outputs], attributes=attrs or {}, blocks=blocks,
        )
        if refs:
            self.refs[id(op)] = refs
        if blocks:
            depth = 1 + max(self.depth.get(id(b), 0) for b in blocks)
            if depth > _MAX_NESTING:
                raise _PositionedError(f"blocks nest deeper than {_MAX_NESTING} levels", op_type)
            self.depth[id(op)] = depth
        return op

    def outputs(self, names=None):
        return names or ()

    def typed_names(self, *items):
        return items

    def typed_name(self, t, name):
        return t.type, name

    def names(self, *names):
        return names

    def args(self, *args):
        return args

    def arg(self, key, items):
        return key, items if isinstance(items, tuple) else (items,)

    def arg_ref(self, name):
        return name

    def type_word(self, tok):
        return Token.new_borrow_pos("NAME", str(tok), tok)

    def arg_value(self, v):
        return v

    def arg_tuple(self, items=None):
        return tuple(items or ())

    def argitems(self, *items):
        return items

    def attrs(self, *items):
        out: dict[str, Value] = {}
        for item in items:
            if item is None:  # `[]`
                continue
            key, v = item
            if key in out:
                raise _PositionedError(f"attribute {str(key)!r} is given twice", key)
            out[str(key)] = v
        return out

    def attr(self, key, v):
        return key, v

    def name(self, tok):
        if tok.type == "QNAME":
            return Token.new_borrow_pos("NAME", _decode_escapes(tok[1:-1]), tok)
        return tok

    # ---- literals --------------------------------------------------------------------------
    def value(self, t, bare):
        try:
            return _convert(t.type, bare, self.loader, top=True)
        except _LiteralError as e:
            raise _PositionedError(str(e), t.tok) from None

    def bare_number(self, tok):
        return "n", str(tok)

    def bare_string(self, tok):
        return "s", _decode_escapes(tok[1:-1])

    def bare_true(self):
        return "b", True

    def bare_false(self):
        return "b", False

    def bare_list(self, items=None):
        return "l", items or ()

    def bare_tuple(self, items=None):
        return "t", items or ()

    def bare_dict(self, pairs=None):
        return "d", pairs or ()

    def bare_items(self, *items):
        return items

    def pairs(self, *pairs):
        return pairs

    def pair(self, k, v):
        return k, v

    def bare_blob(self, *args):
        fields = {}
        for key, raw in args:
            fields[str(key)] = (key, raw)
        missing = {"path", "offset"} - fields.keys()
        extra = fields.keys() - {"path", "offset"}
        first = args[0][0]
        if missing or extra:
            raise _PositionedError("BLOBFILE takes exactly path and offset", first)
        path_key, path = fields["path"]
        offset_key, offset = fields["offset"]
        path_s = _scalar_payload(path)
        if not isinstance(path_s, str):
            raise _PositionedError("BLOBFILE path must be a string", path_key)
        off = _scalar_payload(offset)
        if not isinstance(off, int) or off < 0:
            raise _PositionedError("BLOBFILE offset must be a non-negative integer", offset_key)
        return "blob", BlobRef(path_s, off)

    def blob_arg(self, key, raw):
        return key, raw

    def bare_value(self, v):
        return v

    # ---- types: each a _Typed, whose token lets literal errors point at the literal --------
    def tensor_type(self, tok, dtype, shape):
        return _Typed(TensorType(str(dtype), shape), tok, 1)

    def scalar_type(self, dtype):
        return _Typed(TensorType(str(dtype), ()), dtype, 1)

    def list_type(self, tok, elem, length):
        return _nest(ListType(elem.type, length), tok, elem)

    def tuple_type(self, tok, types=None):
        return _nest(TupleType(tuple(t.type for t in types or ())), tok, *(types or ()))

    def dict_type(self, tok, key, val):
        return _nest(DictType(key.type, val.type), tok, key, val)

    def state_type(self, tok, wrapped):
        if not isinstance(wrapped.type, TensorType):
            raise _PositionedError("state<...> must wrap a tensor type", tok)
        return _Typed(StateType(wrapped.type), tok, 2)

    def types(self, *types):
        return types

    def len_int(self, tok):
        return int(tok)

    def len_any(self):
        return None

    def shape_dims(self, dims=None):
        return tuple(dims or ())

    def shape_any(self):
        return None

    def dims(self, *dims):
        return dims

    def dim_int(self, tok):
        return int(tok)

    def dim_sym(self, name):
        return str(name)

    def dim_any(self):
        return "?"

    def dtype(self, tok):
        return tok


class _Typed(NamedTuple):
    type: ValueType
    tok: Token  # where the type is written
    depth: int


def _nest(vtype: ValueType, tok: Token, *parts: _Typed) -> _Typed:
    depth = 1 + max((p.depth for p in parts), default=0)
    if depth > _MAX_NESTING:
        raise _PositionedError(f"types nest deeper than {_MAX_NESTING} levels", tok)
    return _Typed(vtype, tok, depth)


class _PositionedError(Exception):
    def __init__(self, message: str, tok: Token):
        super().__init__(message)
        self.message = message
        self.tok = tok


def _opset(tok: Token) -> str:
    text = str(tok)
    return TEXT_OPSETS.get(text.lower(), text)


# ---- literal conversion -------------------------------------------------------------------

def _scalar_payload(raw: Any) -> Any:
    """The Python value of a BLOBFILE field given bare (``64``) or typed (``uint64(64)``)."""
    if isinstance(raw, Value):
        data = raw.data
        if isinstance(data, str):
            return data
        if isinstance(data, np.ndarray) and data.ndim == 0 and data.dtype.kind in "iu":
            return int(data)
        return None
    kind, payload = raw
    if kind == "s":
        return payload
    if kind == "n":
        try:
            return _parse_int(payload)
        except _LiteralError:
            return None
    return None


def _convert(vtype: ValueType, raw: Any, loader: BlobLoader | None, top: bool = False) -> Value:
    if isinstance(raw, Value):
        if top:
            raise _LiteralError(f"a {format_type(vtype)} literal cannot wrap another typed literal")
        if not _fits(vtype, raw.type):
            raise _LiteralError(f"a {format_type(raw.type)} element does not fit {format_type(vtype)}")
        return raw
    kind, payload = raw
    if isinstance(vtype, TensorType):
        if kind == "blob":
            return Value(vtype, payload, loader)
        return Value(vtype, _tensor_data(vtype, raw))
    if isinstance(vtype, ListType):
        if kind != "l":
            raise _LiteralError(f"{format_type(vtype)} expects [...] elements, got {_describe(raw)}")
        if vtype.length is not None and len(payload) != vtype.length:
            raise _LiteralError(f"{format_type(vtype)} expects {vtype.length} elements, got {len(payload)}")
        return Value(vtype, tuple(_convert(vtype.elem, item, loader) for item in payload))
    if isinstance(vtype, TupleType):
        if kind != "t":
            raise _LiteralError(f"{format_type(vtype)} expects (...) elements, got {_describe(raw)}")
        if len(payload) != len(vtype.elems):
            raise _LiteralError(f"{format_type(vtype)} expects {len(vtype.elems)} elements, got {len(payload)}")
        return Value(vtype, tuple(_convert(t, item, loader) for t, item in zip(vtype.elems, payload)))
    if isinstance(vtype, DictType):
        if kind != "d":
            raise _LiteralError(f"{format_type(vtype)} expects {{{{key, value}}, ...}}, got {_describe(raw)}")
        return Value(vtype, {
            _convert(vtype.key, k, loader): _convert(vtype.value, v, loader) for k, v in payload
        })
    raise _LiteralError(f"{format_type(vtype)} has no literal form")


def _fits(declared: ValueType, actual: ValueType) -> bool:
    """Whether a typed element may stand where ``declared`` is expected (symbolic dims match any)."""
    if type(declared) is not type(actual):
        return False
    if isinstance(declared, TensorType):
        if declared.dtype != actual.dtype:
            return False
        if declared.shape is None:
            return True
        return actual.shape is not None and len(actual.shape) == len(declared.shape) and all(
            not isinstance(d, int) or d == a for d, a in zip(declared.shape, actual.shape)
        )
    if isinstance(declared, ListType):
        return declared.length in (None, actual.length) and _fits(declared.elem, actual.elem)
    if isinstance(declared, TupleType):
        return len(declared.elems) == len(actual.elems) and all(
            _fits(d, a) for d, a in zip(declared.elems, actual.elems)
        )
    if isinstance(declared, DictType):
        return _fits(declared.key, actual.key) and _fits(declared.value, actual.value)
    return _fits(declared.wrapped, actual.wrapped)


def _describe(raw: Any) -> str:
    if isinstance(raw, Value):
        return "a typed literal"
    kind, payload = raw
    return {
        "n": f"number {payload}", "s": "a string", "b": "a bool", "l": "a [...] list",
        "t": "a (...) tuple", "d": "a {...} dict", "blob": "a BLOBFILE",
    }[kind]


def _tensor_data(vtype: TensorType, raw: _Bare) -> Any:
    dtype = vtype.dtype
    if vtype.shape == () or (vtype.shape is None and raw[0] != "l"):
        value = _element(dtype, raw)
        return value if dtype == "string" else np.array(value, dtype=NUMPY_STORAGE[dtype])
    flat: list = []
    shape = _flatten(raw, flat, 0, [])
    if vtype.shape is not None:
        declared = vtype.shape
        if len(shape) < len(declared) and len(flat) == 0:
            # An empty tensor writes only its outer brackets; the declared dims fill in the rest.
            shape = tuple(shape) + tuple(d if isinstance(d, int) else 0 for d in declared[len(shape):])
        if len(shape) != len(declared) or any(
            isinstance(d, int) and d != s for d, s in zip(declared, shape)
        ):
            raise _LiteralError(
                f"{format_type(vtype)} literal has shape [{', '.join(map(str, shape))}]"
            )
    values = [_element(dtype, item) for item in flat]
    if dtype == "string":
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr.reshape(shape)
    return np.array(values, dtype=NUMPY_STORAGE[dtype]).reshape(shape)


def _flatten(raw: _Bare, out: list, depth: int, shape: list) -> tuple[int, ...]:
    """Appends the leaves of nested [...] to ``out``; returns the shape, checking it is rectangular."""
    kind, payload = raw if not isinstance(raw, Value) else ("v", raw)
    if kind != "l":
        if depth == 0:
            raise _LiteralError(f"a tensor literal needs [...] elements, got {_describe(raw)}")
        if len(shape) != depth:
            raise _LiteralError("ragged nested list in tensor literal")
        out.append(raw)
        return tuple(shape)
    if depth >= _MAX_NESTING:
        raise _LiteralError(f"lists nest deeper than {_MAX_NESTING} levels")
    if len(shape) == depth:
        shape.append(len(payload))
    elif len(shape) < depth or shape[depth] != len(payload):
        raise _LiteralError("ragged nested list in tensor literal")
    if not payload and len(shape) != depth + 1:
        raise _LiteralError("ragged nested list in tensor literal")
    for item in payload:
        _flatten(item, out, depth + 1, shape)
    if depth == 0:
        return tuple(shape)
    return ()


def _element(dtype: str, raw: Any) -> Any:
    if isinstance(raw, Value):
        raise _LiteralError(f"a typed literal cannot be an element of a {dtype} tensor")
    kind, payload = raw
    if dtype == "string":
        if kind != "s":
            raise _LiteralError(f"string literal expected, got {_describe(raw)}")
        return payload
    if dtype == "bool":
        if kind != "b":
            raise _LiteralError(f"bool literal (true or false) expected, got {_describe(raw)}")
        return payload
    if kind != "n":
        raise _LiteralError(f"{dtype} literal expected a number, got {_describe(raw)}")
    if dtype in NUMPY_STORAGE and np.dtype(NUMPY_STORAGE[dtype]).kind in "iu":
        value = _parse_int(payload)
        lo, hi = _INT_RANGE.get(dtype) or _int_limits(dtype)
        if not lo <= value <= hi:
            raise _LiteralError(f"{payload} is out of range for {dtype}")
        return value
    return _parse_float(payload, dtype)


def _int_limits(dtype: str) -> tuple[int, int]:
    info = np.iinfo(NUMPY_STORAGE[dtype])
    return int(info.min), int(info.max)


def _parse_int(text: str) -> int:
    try:
        if "x" in text or "X" in text:
            return int(text, 16)
        return int(text)
    except ValueError:
        raise _LiteralError(f"{text} is not an integer") from None


def _parse_float(text: str, dtype: str) -> float:
    low = text.lower()
    try:
        value = float.fromhex(text) if "x" in low else float(text)
    except ValueError:
        raise _LiteralError(f"{text} is not a number") from None
    except OverflowError:
        raise _LiteralError(f"{text} is out of range for {dtype}") from None
    if math.isnan(value):
        return value
    if math.isinf(value):
        # An explicit inf is kept, except by the one float dtype without infinities; 1e400 overflows.
        if dtype == "fp8e4m3fn" or "inf" not in low:
            raise _LiteralError(f"{text} is out of range for {dtype}")
        return value
    narrow = _NARROW_FLOATS.get(dtype)
    if narrow is not None:
        value = _round_float(value, *narrow[:2])
        limit = narrow[2]
    else:
        # Past the largest finite value, the cast rounds to inf: that is out of range.
        limit = float(np.finfo(NUMPY_STORAGE[dtype]).max)
        with np.errstate(over="ignore"):
            value = float(np.array(value, dtype=NUMPY_STORAGE[dtype]))
    if math.isinf(value) or abs(value) > limit:
        raise _LiteralError(f"{text} is out of range for {dtype}")
    return value


def _round_float(value: float, mantissa_bits: int, min_exp: int) -> float:
    """Rounds to the nearest value with this many mantissa bits (ties to even), subnormals included."""
    if value == 0.0:
        return value
    _, exp = math.frexp(value)  # value = m * 2**exp with 0.5 <= |m| < 1
    exp = max(exp - 1, min_exp)
    quantum = math.ldexp(1.0, exp - mantissa_bits)
    return round(value / quantum) * quantum


# ---- parser driver ------------------------------------------------------------------------

_LOCK = threading.Lock()
_PARSER: Lark | None = None
_BUILDER = _Builder()


def _parser() -> Lark:
    global _PARSER
    if _PARSER is None:
        grammar = resources.files("tensorlogic.mil").joinpath("mil.lark").read_text(encoding="utf-8")
        _PARSER = Lark(grammar, parser="lalr", lexer="contextual", transformer=_BUILDER,
                       maybe_placeholders=True)
    return _PARSER


def parse_mil(text: str, path: str | None = None, loader: BlobLoader | None = None) -> Program:
    """Parses MIL text into a Program; every blob literal gets ``loader`` attached."""
    with _LOCK:
        parser = _parser()
        _BUILDER.reset(loader)
        try:
            program = parser.parse(text)
            refs, bindings = _BUILDER.refs, _BUILDER.bindings
        except _PositionedError as e:
            raise _error(text, path, e.tok.start_pos, e.tok.line, e.tok.column, e.message) from None
        except UnexpectedInput as e:
            raise _syntax_error(text, path, e) from None
        finally:
            _BUILDER.reset(None)
    _check_scopes(program, refs, bindings, text, path)
    return program


def _syntax_error(text: str, path: str | None, e: UnexpectedInput) -> FormatError:
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        pos = len(text)
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        got = "end of input"
    else:
        pos, line, col = e.pos_in_stream, e.line, e.column
        if isinstance(e, UnexpectedCharacters):
            got = repr(text[pos]) if pos < len(text) else "end of input"
        else:
            got = repr(str(e.token))
    expected = getattr(e, "expected", None) or getattr(e, "allowed", None) or set()
    message = f"expected {_expected_text(expected)}, got {got}" if expected else f"unexpected {got}"
    return _error(text, path, pos, line, col, message)


def _expected_text(names: set[str]) -> str:
    shown: set[str] = set()
    dtypes: set[str] = set()
    for n in names:
        if n in _TERMINAL_NAMES:
            shown.add(_TERMINAL_NAMES[n])
            continue
        try:
            pattern = _parser().get_terminal(n).pattern
        except KeyError:
            shown.add(n.lower())
            continue
        if pattern.type == "str" and pattern.value in NUMPY_STORAGE:
            dtypes.add(pattern.value)
        elif pattern.type == "str":
            shown.add(f"'{pattern.value}'")
        else:
            shown.add(n.lower())
    if len(dtypes) == len(NUMPY_STORAGE):
        shown.add("a dtype")
    else:
        shown.update(f"'{d}'" for d in dtypes)
    items = sorted(shown)
    if len(items) > 8:
        items = items[:8] + ["..."]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _error(text: str, path: str | None, pos: int, line: int, col: int, message: str) -> FormatError:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    source = text[start: end if end >= 0 else len(text)].rstrip("\r").replace("\t", " ")
    caret_col = pos - start
    if len(source) > _EXCERPT:
        # Keep the excerpt readable on one terminal line, centred on the caret.
        lo = max(0, min(caret_col - _EXCERPT // 2, len(source) - _EXCERPT))
        head = "..." if lo > 0 else ""
        tail = "..." if lo + _EXCERPT < len(source) else ""
        source = head + source[lo: lo + _EXCERPT] + tail
        caret_col = caret_col - lo + len(head)
    offset = len(text[:pos].encode("utf-8"))
    full = f"line {line} col {col}: {message}\n    {source}\n    {' ' * caret_col}^"
    return FormatError(full, path, offset)


# ---- scope pass ---------------------------------------------------------------------------

def _check_scopes(program: Program, refs: dict[int, list[Token]], bindings: dict[int, list[Token]],
                  text: str, path: str | None) -> None:
    def undefined(tok: Token, where: str) -> FormatError:
        return _error(text, path, tok.start_pos, tok.line, tok.column,
                      f"undefined variable {str(tok)!r} in {where}")

    def check_block(block: Block, scope: set[str], where: str) -> None:
        for op in block.operations:
            op_where = f"op {op.type} {op.name!r}"
            for tok in refs.get(id(op), ()):
                if str(tok) not in scope:
                    raise undefined(tok, op_where)
            for inner in op.blocks:
                for tok in bindings.get(id(inner), ()):
                    if str(tok) not in scope:
                        raise undefined(tok, op_where)
                check_block(inner, scope | {v.name for v in inner.inputs}, f"a block of {op_where}")
            scope.update(v.name for v in op.outputs)
        for tok in refs.get(id(block), ()):
            if str(tok) not in scope:
                raise undefined(tok, f"the outputs of {where}")

    for fn in program.functions.values():
        for block in fn.blocks.values():
            check_block(block, {v.name for v in fn.inputs} | {v.name for v in block.inputs},
                        f"function {fn.name!r}")
