"""MIL text: hand-written files against IR built by hand, and write → parse round trips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tensorlogic.mil.from_text import parse_mil
from tensorlogic.mil.ir import (
    NUMPY_STORAGE,
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
    Var,
    scalar,
    tensor,
)
from tensorlogic.mil.to_text import write_mil

DATA = Path(__file__).parent / "data"
WEIGHTS = "@model_path/weights/weight.bin"


def T(dtype: str, *shape) -> TensorType:
    return TensorType(dtype, tuple(shape))


def S(text: str) -> Value:
    return scalar("string", text)


def op(type_: str, outputs: list[Var], inputs: dict | None = None, blocks=None, **attrs) -> Op:
    return Op(
        type=type_,
        inputs={k: v if isinstance(v, tuple) else (v,) for k, v in (inputs or {}).items()},
        outputs=outputs,
        attributes=attrs,
        blocks=blocks or [],
    )


def const(name: str, value: Value, with_name: bool = True) -> Op:
    attrs = {"name": S(name), "val": value} if with_name else {"val": value}
    return op("const", [Var(name, value.type)], **attrs)


def main_fn(opset: str, inputs: list[Var], ops: list[Op], outputs: list[str], name: str = "main") -> Function:
    return Function(name, inputs, opset, {opset: Block(operations=ops, outputs=outputs)})


def read(name: str, **kwargs) -> Program:
    return parse_mil((DATA / name).read_text(), path=str(DATA / name), **kwargs)


def string_dict(pairs: list[tuple[str, str]]) -> Value:
    return Value(DictType(T("string"), T("string")), {S(k): S(v) for k, v in pairs})


# ---- hand-written files, one per feature group --------------------------------------------------

def test_old_style_header_and_literals():
    blob = Value(T("fp16", 4, 4), BlobRef(WEIGHTS, 64))
    expected = Program(
        version=1,
        attributes={"buildInfo": string_dict([
            ("coremlc-component-MIL", "5.33.5"), ("coremlc-version", "1877.40.3"), ("coremltools-version", "7.0"),
        ])},
        functions={"main": main_fn("CoreML6", [Var("x", T("fp16", 1, 4))], [
            const("axis", scalar("int32", -1)),
            const("keep", scalar("bool", True)),
            const("w", blob),
            op("linear", [Var("y", T("fp16", 1, 4))], {"weight": "w", "x": "x"}, name=S("y")),
            op("reduce_sum", [Var("s", T("fp16", 1, 1))], {"axes": "axis", "keep_dims": "keep", "x": "y"},
               name=S("s")),
        ], ["y", "s"])},
    )
    assert read("old_style.mil") == expected


def test_blob_values_get_the_loader():
    calls = []

    def loader(ref: BlobRef, ttype: TensorType) -> np.ndarray:
        calls.append((ref, ttype))
        return np.zeros(ttype.shape, np.float16)

    prog = read("old_style.mil", loader=loader)
    w = prog.functions["main"].block.operations[2].attributes["val"]
    assert w.is_blob
    assert w.numpy().shape == (4, 4)
    assert calls == [(BlobRef(WEIGHTS, 64), T("fp16", 4, 4))]


def test_functions_opsets_symbolic_dims_states_and_containers():
    relu = op("relu", [Var("r", T("int32", 2))], {"x": "x"}, name=S("r"))
    relu18 = op("relu", [Var("r", T("int32", 2))], {"x": "x"}, name=S("r18"))
    expected = Program(
        version=1,
        doc_string="several functions",
        attributes={
            "buildInfo": string_dict([("coremltools-version", "9.0"), ("coremltools-component-torch", "2.13.0")]),
            "flag": scalar("bool", True),
        },
        functions={
            "main": main_fn("CoreML5", [Var("x", T("fp32", "?", 3)), Var("y", T("fp32", "is0", 3))], [
                op("add", [Var("a", T("fp32", "?", 3))], {"x": "x", "y": "y"}, name=S("a")),
            ], ["a"]),
            "f16": main_fn("CoreML6", [Var("x", T("fp16", 1, 2))], [], ["x"], name="f16"),
            "f17": Function("f17", [Var("x", T("int32", 2))], "CoreML7", {
                "CoreML7": Block(operations=[relu], outputs=["r"]),
                "CoreML8": Block(operations=[relu18], outputs=["r"]),
            }, attributes={"visibility": S("private")}),
            "stateful": main_fn("CoreML8", [
                Var("x", T("fp16", 1, 4)), Var("cache", StateType(T("fp16", 1, 4))),
            ], [op("read_state", [Var("old", T("fp16", 1, 4))], {"input": "cache"}, name=S("old"))], ["old"],
                name="stateful"),
            "containers": main_fn("CoreML9", [
                Var("xs", ListType(T("fp32", 2), None)),
                Var("t", TupleType((T("int32"), T("bool", 3)))),
                Var("fixed", ListType(T("int32"), 4)),
            ], [], ["xs", "t", "fixed"], name="containers"),
        },
    )
    prog = read("functions.mil")
    assert prog == expected
    assert list(prog.functions) == ["main", "f16", "f17", "stateful", "containers"]


def test_ops_outputs_variadic_inputs_inline_literals():
    x = Var("x", T("fp32", 2, 6))
    expected = Program(functions={"main": main_fn("CoreML7", [x], [
        const("axis", scalar("int32", 1)),
        const("sizes", tensor("int32", [2, 4])),
        op("split", [Var("s0", T("fp32", 2, 2)), Var("s1", T("fp32", 2, 4))],
           {"axis": "axis", "split_sizes": "sizes", "x": "x"}, name=S("split_0")),
        op("split", [Var("p", T("fp32", 2, 3)), Var("q", T("fp32", 2, 3))],
           {"axis": scalar("int32", 1), "num_splits": scalar("int32", 2), "x": "x"}, name=S("split_1")),
        op("concat", [Var("c", T("fp32", 2, 12))],
           {"axis": "axis", "interleave": scalar("bool", False), "values": ("s0", "s1", "p", "x")}, name=S("c")),
        op("add", [Var("z", T("fp32", 2, 6))], {"x": "x", "y": scalar("fp32", 3.0)}),
        op("identity_n", [Var("e", T("fp32", 2, 6))], {"values": ()}, name=S("e"), note=S("no inputs")),
        op("write_state", [], {"data": "z", "input": "x"}, name=S("w")),
        op("consume", [], {"x": "q"}),
    ], ["c", "z", "e"])})
    assert read("ops.mil") == expected


def test_nested_blocks_of_cond_and_while_loop():
    v2 = T("fp32", 2)
    i32, b = T("int32"), T("bool")
    cond = op("cond", [Var("c", v2)], {"pred": "p"}, name=S("c"), blocks=[
        Block(operations=[op("relu", [Var("t", v2)], {"x": "x"}, name=S("t"))], outputs=["t"]),
        Block(operations=[op("neg", [Var("f", v2)], {"x": "x"}, name=S("f"))], outputs=["f"]),
    ])
    loop_inputs = [Var("i_x", i32), Var("v_x", v2)]
    inner = op("cond", [Var("v_next", v2)], {"pred": "p"}, name=S("inner"), blocks=[
        Block(inputs=[Var("v_in", v2)], operations=[op("add", [Var("sum", v2)], {"x": "v_x", "y": "x"}, name=S("sum"))],
              outputs=["sum"], attributes={"tag": S("then")}),
        Block(outputs=["v_x"]),
    ])
    loop = op("while_loop", [Var("n", i32), Var("acc", v2)], {"loop_vars": ("zero", "c")}, name=S("loop"), blocks=[
        Block(inputs=loop_inputs, operations=[
            op("less", [Var("more", b)], {"x": "i_x", "y": "limit"}, name=S("more")),
        ], outputs=["more"]),
        Block(inputs=loop_inputs, operations=[
            op("add", [Var("i_next", i32)], {"x": "i_x", "y": scalar("int32", 1)}, name=S("i_next")),
            inner,
        ], outputs=["i_next", "v_next"]),
    ])
    expected = Program(functions={"main": main_fn("CoreML7", [Var("x", v2), Var("p", b)], [
        const("zero", scalar("int32", 0)), const("limit", scalar("int32", 3)), cond, loop,
    ], ["n", "acc"])})
    assert read("control_flow.mil") == expected


def _literal_values() -> dict[str, Value]:
    def arr(dtype: str, data) -> Value:
        return tensor(dtype, data)

    empty_cols = Value(T("fp16", 0, 3), np.zeros((0, 3), np.float16))
    words = np.empty(2, dtype=object)
    words[:] = ["a", "b c"]
    return {
        "h": scalar("fp16", 0.5),
        "h_sub": scalar("fp16", 2.0 ** -24),
        "f_neg": scalar("fp32", -12.0),
        "f_dec": scalar("fp32", 1.5),
        "f_exp": scalar("fp32", np.float32(-2.5e-3)),
        "d": scalar("fp64", math.pi),
        "b": scalar("bf16", 0.375),
        "e4": scalar("fp8e4m3fn", 448.0),
        "e5": scalar("fp8e5m2", -(2.0 ** -16)),
        "special": arr("fp32", [np.inf, -np.inf, np.nan, -0.0]),
        "i4": scalar("int4", -8),
        "i8": scalar("int8", -128),
        "i16": scalar("int16", 32767),
        "i32": scalar("int32", -(2 ** 31)),
        "i64": scalar("int64", -(2 ** 63)),
        "u1": scalar("uint1", 1),
        "u2": scalar("uint2", 3),
        "u3": scalar("uint3", 7),
        "u4": scalar("uint4", 15),
        "u6": scalar("uint6", 63),
        "u8": scalar("uint8", 255),
        "u16": scalar("uint16", 65535),
        "u32": scalar("uint32", 2 ** 32 - 1),
        "u64": scalar("uint64", 2 ** 64 - 1),
        "t": scalar("bool", True),
        "s": S('say "hi"\\n\tnew\nline'),
        "v": arr("int32", [1, 1]),
        "cube": arr("int32", np.arange(1, 9).reshape(2, 2, 2)),
        "empty": Value(T("fp32", 0), np.zeros(0, np.float32)),
        "empty_rows": Value(T("int32", 2, 0), np.zeros((2, 0), np.int32)),
        "empty_cols": empty_cols,
        "flags": arr("bool", [True, False, True]),
        "words": Value(T("string", 2), words),
        "nibbles": arr("uint4", [0, 15, 7, 8]),
        "w": Value(T("fp16", 2, 3), BlobRef(WEIGHTS, 128)),
        "old": scalar("fp32", 1.0),
        "table": Value(DictType(T("int32"), T("fp32")), {
            scalar("int32", 1): scalar("fp32", 1.0), scalar("int32", 2): scalar("fp32", 2.0),
        }),
        "pairs": Value(ListType(T("int32", 2), 2), (arr("int32", [1, 2]), arr("int32", [3, 4]))),
        "dyn": Value(ListType(T("int32"), None), tuple(scalar("int32", i) for i in (1, 2, 3))),
        "ragged": Value(ListType(T("fp32", "?"), None), (arr("fp32", [1, 2]), arr("fp32", [3]))),
        "tup": Value(TupleType((T("int32"), T("string"))), (scalar("int32", 7), S("seven"))),
        "none": Value(ListType(T("fp16"), None), ()),
    }


def test_every_literal_form():
    prog = read("literals.mil")
    fn = prog.functions["main"]
    assert (fn.opset, fn.inputs, fn.block.outputs) == ("CoreML8", [], ["h"])
    got = {o.outputs[0].name: o.attributes["val"] for o in fn.block.operations}
    expected = _literal_values()
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name] == value, name
    assert all(o.outputs[0].type == o.attributes["val"].type for o in fn.block.operations)
    # storage dtypes follow NUMPY_STORAGE (sub-byte ints one byte wide, bf16/fp8 in float32)
    for name in ("i4", "u1", "u6", "b", "e4", "h"):
        value = got[name]
        assert value.data.dtype == np.dtype(NUMPY_STORAGE[value.type.dtype]), name


def test_layout_whitespace_and_comments():
    expected = Program(functions={"main": main_fn("CoreML7", [Var("x", T("fp32", 1, 2))], [
        op("relu", [Var("y", T("fp32", 1, 2))], {"x": "x"}, name=S("y")),
        op("add", [Var("z", T("fp32", 1, 2))], {"x": "y", "y": scalar("fp32", 2.0)}, name=S("z")),
    ], ["z"])})
    text = (DATA / "layout.mil").read_text()
    assert parse_mil(text) == expected
    assert parse_mil(text.replace("\n", "\r\n")) == expected


# ---- decimal literals round to the declared dtype like an independent converter does -----------

def test_decimal_literals_round_like_numpy_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(200).astype(np.float32) * 10.0 ** rng.integers(-9, 4, 200),
        np.float32([0.1, 1 / 3, 65504, 1e-8, 2.0 ** -20, 447.9, 0.0]),
    ]).astype(np.float32)
    limits = {"fp16": 65504.0, "bf16": 3e38, "fp8e4m3fn": 448.0, "fp8e5m2": 57344.0}
    for dtype, limit in limits.items():
        src = np.clip(values, -limit, limit)
        if dtype == "fp16":
            reference = src.astype(np.float16)
        else:
            tdtype = {"bf16": torch.bfloat16, "fp8e4m3fn": torch.float8_e4m3fn, "fp8e5m2": torch.float8_e5m2}[dtype]
            reference = torch.tensor(src).to(tdtype).float().numpy()
        body = ", ".join(repr(float(v)) for v in src)
        prog = parse_mil(
            f"program(1.3) {{ func main<ios18>() {{ tensor<{dtype}, [{len(src)}]> c = "
            f"const()[val = tensor<{dtype}, [{len(src)}]>([{body}])]; }} -> (c); }}"
        )
        got = prog.functions["main"].block.operations[0].attributes["val"].data
        np.testing.assert_array_equal(got, reference.astype(NUMPY_STORAGE[dtype]), err_msg=dtype)


# ---- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.mil")))
def test_hand_written_files_round_trip(name):
    prog = read(name)
    text = write_mil(prog)
    again = parse_mil(text)
    assert again == prog
    assert write_mil(again) == text


def _every_dtype_program() -> Program:
    """Random values of every dtype, edge values included, as consts, inline args and attributes."""
    rng = np.random.default_rng(1)
    ops: list[Op] = []
    for dtype, storage in NUMPY_STORAGE.items():
        if dtype == "string":
            data = np.empty((2, 2), dtype=object)
            data[:] = [["", "ünïcödé \u2028"], ['"\\`', "tab\there\x01\x7f"]]
        elif dtype == "bool":
            data = rng.integers(0, 2, (3, 4)).astype(bool)
        elif np.dtype(storage).kind == "f":
            raw = np.concatenate([rng.standard_normal(20) * 100, [0.0, -0.0, np.inf, -np.inf, np.nan]])
            if dtype == "fp8e4m3fn":
                raw = np.clip(raw, -448, 448)
                raw[~np.isfinite(raw)] = 0.0
            data = _round_to(dtype, raw).astype(storage)
        else:
            lo, hi = _int_bounds(dtype)
            picks = rng.integers(lo, hi, 10, endpoint=True, dtype=storage)
            data = np.concatenate([picks, np.array([lo, hi], dtype=storage)])
        value = Value(TensorType(dtype, data.shape), data)
        first = data.reshape(-1)[0]
        one = Value(TensorType(dtype, ()), first if dtype == "string" else np.asarray(first, storage))
        ops.append(op("const", [Var(f"c_{dtype}", value.type)], val=value, name=S(f"c_{dtype}")))
        ops.append(op("identity", [Var(f"s_{dtype}", one.type)], {"x": one}, extra=one))
    return Program(functions={"main": main_fn("CoreML8", [], ops, [o.outputs[0].name for o in ops])})


def _int_bounds(dtype: str) -> tuple[int, int]:
    special = {"int4": (-8, 7), "uint1": (0, 1), "uint2": (0, 3), "uint3": (0, 7), "uint4": (0, 15), "uint6": (0, 63)}
    if dtype in special:
        return special[dtype]
    info = np.iinfo(NUMPY_STORAGE[dtype])
    return int(info.min), int(info.max)


def _round_to(dtype: str, raw: np.ndarray) -> np.ndarray:
    if dtype in ("fp16", "fp32", "fp64"):
        return raw.astype(NUMPY_STORAGE[dtype])
    torch = pytest.importorskip("torch")
    tdtype = {"bf16": torch.bfloat16, "fp8e4m3fn": torch.float8_e4m3fn, "fp8e5m2": torch.float8_e5m2}[dtype]
    return torch.tensor(raw, dtype=torch.float32).to(tdtype).float().numpy()


def test_every_dtype_round_trips_bit_exactly():
    prog = _every_dtype_program()
    again = parse_mil(write_mil(prog))
    assert again == prog
    for a, b in zip(prog.walk(), again.walk()):
        for key, value in a.attributes.items():
            other = b.attributes[key].data
            if isinstance(value.data, np.ndarray) and value.data.dtype.kind == "f":
                # equality treats NaN as NaN; the bits (sign of zero included) must match too
                np.testing.assert_array_equal(np.signbit(value.data), np.signbit(other))


def test_odd_names_and_structures_round_trip():
    odd = ["tensor", "fp16", "string", "with space", "dots.and:colons", "ünï", "`tick`", "0lead", "?"]
    v = T("fp32", "?", "is0", "...")
    ops = [op("relu", [Var(n, v)], {"x": "in put"}, name=S(n)) for n in odd]
    ops.append(op("mystery op", [Var("t", T("fp32", 1))], {"weird key": tuple(odd), "empty": ()},
                  **{"odd attr": scalar("int32", 1)}))
    block_attrs = {"doc": S("block attr")}
    prog = Program(
        version=1,
        doc_string='doc with "quotes"\nand newline',
        attributes={"buildInfo": string_dict([("k", "v")]), "nested": Value(
            ListType(TupleType((T("string"), ListType(T("int32", 2), 1))), None),
            (Value(TupleType((T("string"), ListType(T("int32", 2), 1))),
                   (S("x"), Value(ListType(T("int32", 2), 1), (tensor("int32", [1, 2]),)))),),
        )},
        functions={
            "weird fn": Function("weird fn", [Var("in put", v)], "CoreML8", {
                "CoreML8": Block(operations=ops, outputs=["t"], attributes=block_attrs),
                "CoreML9": Block(inputs=[Var("bi", T("int32"))], outputs=["in put", "bi"]),
            }),
            "no_own_block": Function("no_own_block", [], "CoreML7", {"CoreML8": Block()}),
            "unknown_opset": Function("unknown_opset", [Var("u", TensorType("bool", None))], "future1",
                                      {"future1": Block(outputs=["u"])}),
        },
    )
    assert parse_mil(write_mil(prog)) == prog


def test_control_flow_program_from_coremltools_round_trips():
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    from tensorlogic.mil.from_proto import program_from_proto

    @mb.program(input_specs=[mb.TensorSpec(shape=(2,)), mb.TensorSpec(shape=(1,), dtype=types.int32)],
                opset_version=ct.target.iOS17)
    def prog(x, n):
        def body(i, v):
            return mb.add(x=i, y=np.int32(1)), mb.mul(x=v, y=np.float32(2))

        loop = mb.while_loop(_cond=lambda i, v: mb.less(x=i, y=n), _body=body,
                             loop_vars=(mb.const(val=np.array([0], np.int32)), x))
        big = mb.greater(x=mb.reduce_sum(x=loop[1]), y=np.float32(10))
        out = mb.cond(pred=big, _true_fn=lambda: mb.relu(x=loop[1]),
                      _false_fn=lambda: mb.sub(x=np.float32(0), y=loop[1]))
        return out, loop[0]

    spec = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17).get_spec()
    ir, _ = program_from_proto(spec.mlProgram)
    kinds = {o.type: len(o.blocks) for o in ir.walk() if o.blocks}
    assert kinds == {"while_loop": 2, "cond": 2}
    text = write_mil(ir)
    assert parse_mil(text) == ir


def test_names_that_are_type_words():
    """`state`, `fp16`, `tensor` ... are fine variable names: read unquoted, written unquoted."""
    words = ["state", "tensor", "fp16", "string", "list", "tuple", "dict", "bool", "uint1"]
    v = T("fp32", 2)
    ops = [op("relu", [Var(f"{w}_r", v)], {"x": w}, **{w: scalar("int32", 1)}) for w in words]
    ops.append(op("concat", [Var("c", v)], {"values": tuple(words), "axis": scalar("int32", 0)}))
    ops.append(op("tensor", [], {"x": "c"}))
    prog = Program(functions={"main": main_fn("CoreML7", [Var(w, v) for w in words], ops, words)})
    text = write_mil(prog)
    assert parse_mil(text) == prog
    assert text.count("`") == 2 and "`tensor`(x = c);" in text  # only the output-less op named `tensor`
    source = wrap_main("tensor<fp32, [2]> state, fp16 bool",
                       "tensor<fp32, [2]> y = mul(x = state, y = bool, z = (state, fp16(1)))[name = string(\"y\")];",
                       "y")
    ops = parse_mil(source).functions["main"].block.operations
    assert ops[0].inputs == {"x": ("state",), "y": ("bool",), "z": ("state", scalar("fp16", 1.0))}


def wrap_main(inputs: str, body: str, outputs: str) -> str:
    return f"program(1.3) {{ func main<ios17>({inputs}) {{ {body} }} -> ({outputs}); }}"
