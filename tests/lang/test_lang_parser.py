"""Parser tests: every construct of the language becomes the expected syntax tree, with positions."""

from __future__ import annotations

import pytest

from tensorlogic.lang import ast
from tensorlogic.lang.parser import parse


def items(src: str) -> tuple:
    return parse(src, "t.tl").items


def expr(src: str):
    (stmt,) = items(f"x = {src}")
    assert isinstance(stmt, ast.Assign)
    return stmt.value


def shape(e) -> object:
    """A compact, position-free rendering of an expression tree for precedence checks."""
    if isinstance(e, ast.BinOp):
        return (e.op, shape(e.left), shape(e.right))
    if isinstance(e, ast.UnaryOp):
        return (e.op, shape(e.operand))
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Num):
        return e.value
    if isinstance(e, ast.Call):
        return ("call", shape(e.func), tuple(shape(a) for a in e.args), tuple((k, shape(v)) for k, v in e.kwargs))
    if isinstance(e, ast.Attr):
        return ("attr", shape(e.target), e.name)
    if isinstance(e, ast.Index):
        return ("index", shape(e.target), tuple(shape(i) for i in e.items))
    if isinstance(e, ast.Slice):
        return ("slice", *(None if p is None else shape(p) for p in (e.start, e.stop, e.step)))
    if isinstance(e, ast.ListLit):
        return ("list", *(shape(i) for i in e.items))
    if isinstance(e, ast.Str):
        return ("str", e.value)
    if isinstance(e, ast.Bool):
        return e.value
    raise AssertionError(type(e))


# ---------------------------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    "src, tree",
    [
        # ** binds tighter than unary minus, and is right-associative
        ("-2 ** 2", ("-", ("**", 2, 2))),
        ("a ** b ** c", ("**", "a", ("**", "b", "c"))),
        ("2 ** -1", ("**", 2, ("-", 1))),
        # unary binds tighter than @, @ tighter than * /, those tighter than + -
        ("-a @ b", ("@", ("-", "a"), "b")),
        ("a * b @ c", ("*", "a", ("@", "b", "c"))),
        ("a + b * c", ("+", "a", ("*", "b", "c"))),
        ("a - b - c", ("-", ("-", "a", "b"), "c")),
        ("a / b % c", ("%", ("/", "a", "b"), "c")),
        # comparisons below arithmetic, then not, and, or
        ("a + 1 < b * 2", ("<", ("+", "a", 1), ("*", "b", 2))),
        ("not a == b", ("not", ("==", "a", "b"))),
        ("!a == b", ("==", ("not", "a"), "b")),
        ("a or b and c", ("or", "a", ("and", "b", "c"))),
        ("not a and b", ("and", ("not", "a"), "b")),
        ("a || b && c", ("or", "a", ("and", "b", "c"))),
        ("a ≈ b + 1", ("≈", "a", ("+", "b", 1))),
        ("a ~= b", ("≈", "a", "b")),
        ("(a + b) * c", ("*", ("+", "a", "b"), "c")),
        # postfix binds tightest
        ("-x.shape[0]", ("-", ("index", ("attr", "x", "shape"), (0,)))),
        ("f(x) ** 2", ("**", ("call", "f", ("x",), ()), 2)),
    ],
)
def test_precedence(src, tree):
    assert shape(expr(src)) == tree


# ---------------------------------------------------------------------------------------------- literals


def test_numbers_strings_booleans():
    assert shape(expr("[1, -2, 3.5, 1e-3, 2.5E+2, -4e2]")) == ("list", 1, ("-", 2), 3.5, 0.001, 250.0, ("-", 400.0))
    assert isinstance(expr("7").value, int) and isinstance(expr("7.0").value, float)
    assert expr(r'"tab\there \"q\" \\ \n"').value == 'tab\there "q" \\ \n'
    assert expr("'single'").value == "single"
    assert expr("true").value is True and expr("false").value is False


def test_nested_list_and_dict_literals_span_lines():
    e = expr("[[1.0, 2.0],\n     [3.0, 4.0],\n]")
    assert shape(e) == ("list", ("list", 1.0, 2.0), ("list", 3.0, 4.0))
    d = expr('{"a": 1,\n  "b": [1,\n 2]}')
    assert isinstance(d, ast.DictLit)
    assert [(k.value, shape(v)) for k, v in d.items] == [("a", 1), ("b", ("list", 1, 2))]


def test_comments():
    prog = items("// line comment\nx = 1 // trailing\n/* block\n comment */ y = 2\nz = /* inline */ 3")
    assert [s.target.id for s in prog] == ["x", "y", "z"]
    assert [s.value.value for s in prog] == [1, 2, 3]


def test_korean_comments_and_unicode_names():
    prog = items("// 또는\n가중치 = 1")
    assert prog[0].target.id == "가중치"


# ---------------------------------------------------------------------------------------------- statements


def test_bindings_three_forms():
    a, b, c = items("x = 1\nlet y = 2\nz := 3")
    assert isinstance(a, ast.Assign) and a.op == "=" and a.target.id == "x"
    assert isinstance(b, ast.Let) and b.name == "y"
    assert isinstance(c, ast.Assign) and c.op == ":=" and c.target.id == "z"


def test_index_assignment_and_semicolons():
    a, b = items("x[0, 1:3] = 5; y = 2")
    assert shape(a.target) == ("index", "x", (0, ("slice", 1, 3, None)))
    assert b.target.id == "y"


def test_tensor_declarations():
    w, b, d, s = items(
        "tensor w: float16[3, 4] learnable = [[1.0]]\n"
        "tensor b: float32[1] frozen = [0.0]\n"
        "tensor D: float64[n, m, ?]\n"
        "tensor s: int64[2] = [1, 2]"
    )
    assert (w.name, w.type.base, w.type.dims, w.qualifier) == ("w", "float16", (3, 4), "learnable")
    assert (b.type.base, b.qualifier) == ("float32", "frozen")
    assert (d.type.dims, d.value) == (("n", "m", "?"), None)
    assert s.qualifier is None and shape(s.value) == ("list", 1, 2)
    assert (w.line, w.col, w.type.line, w.type.col) == (1, 1, 1, 11)


def test_tensor_constructor():
    e = expr("tensor<float16>([[1.0, 2.0], [3.0, 4.0]], device: gpu)")
    assert isinstance(e, ast.TensorCtor) and e.dtype == "float16"
    assert shape(e.args[0]) == ("list", ("list", 1.0, 2.0), ("list", 3.0, 4.0))
    assert [(k, shape(v)) for k, v in e.kwargs] == [("device", "gpu")]
    plain = expr("tensor([1, 2])")
    assert isinstance(plain, ast.TensorCtor) and plain.dtype is None


def test_calls_keywords_methods_attributes():
    e = expr("model.predict(x, batch: 2, mode = \"fast\")")
    assert shape(e) == ("call", ("attr", "model", "predict"), ("x",), (("batch", 2), ("mode", ("str", "fast"))))
    assert (e.line, e.col) == (1, 11)  # the method name
    assert shape(expr("model.metadata.format")) == ("attr", ("attr", "model", "metadata"), "format")
    assert shape(expr("f()")) == ("call", "f", (), ())
    assert shape(expr("f(1,\n  2,\n)")) == ("call", "f", (1, 2), ())


def test_indexing_and_slicing():
    assert shape(expr("x[0, 1:3]")) == ("index", "x", (0, ("slice", 1, 3, None)))
    assert shape(expr("x[:, -1]")) == ("index", "x", (("slice", None, None, None), ("-", 1)))
    assert shape(expr("x[::2]")) == ("index", "x", (("slice", None, None, 2),))
    assert shape(expr("x[1:]")) == ("index", "x", (("slice", 1, None, None),))


def test_functions():
    (f,) = items(
        "fn forward(input: float16[N, D_in],\n"
        "           weights: float16[D_in, D_out],\n"
        "           bias: float16[D_out]) -> float16[N, D_out] {\n"
        "    let output = input @ weights\n"
        "    return output + bias\n"
        "}"
    )
    assert isinstance(f, ast.FnDecl) and f.name == "forward" and f.file == "t.tl"
    assert [(p.name, p.type.base, p.type.dims) for p in f.params] == [
        ("input", "float16", ("N", "D_in")),
        ("weights", "float16", ("D_in", "D_out")),
        ("bias", "float16", ("D_out",)),
    ]
    assert (f.ret.base, f.ret.dims) == ("float16", ("N", "D_out"))
    assert isinstance(f.body[0], ast.Let) and isinstance(f.body[1], ast.Return)
    (g,) = items("function g(n, m: int) { return }")
    assert g.ret is None and g.params[0].type is None and g.params[1].type.base == "int"
    assert g.body[0].value is None


def test_control_flow():
    (i,) = items("if x > 0 {\n  y = 1\n}\nelse if x < 0 { y = -1 } else {\n  y = 0\n}")
    assert isinstance(i, ast.If) and isinstance(i.orelse[0], ast.If)
    assert isinstance(i.orelse[0].orelse[0], ast.Assign)
    (f,) = items("for i in range(10) { if i == 3 { continue }\n if i == 5 { break } }")
    assert isinstance(f, ast.For) and f.var == "i" and shape(f.iter) == ("call", "range", (10,), ())
    assert isinstance(f.body[0].body[0], ast.Continue) and isinstance(f.body[1].body[0], ast.Break)
    (w,) = items("while x > 0 { x = x - 1 }")
    assert isinstance(w, ast.While)
    (fl,) = items("for v in [1, 2, 3] { print(v) }")
    assert shape(fl.iter) == ("list", 1, 2, 3)


def test_statement_may_follow_a_closing_brace():
    prog = items("if a { b = 1 } c = 2")
    assert isinstance(prog[0], ast.If) and prog[1].target.id == "c"


def test_import_and_main():
    imp, decl, main = items('import "lib/constants.tl"\ntensor w: float16[1] = [1.0]\nmain {\n  print(w)\n}')
    assert isinstance(imp, ast.Import) and imp.path == "lib/constants.tl"
    assert isinstance(decl, ast.TensorDecl)
    assert isinstance(main, ast.Main) and isinstance(main.body[0], ast.ExprStmt)


def test_line_continuations():
    (s,) = items("x = 1 +\n    2")
    assert shape(s.value) == ("+", 1, 2)
    (t,) = items("y = model\n  .predict(x)")
    assert shape(t.value) == ("call", ("attr", "model", "predict"), ("x",), ())


def test_positions_are_one_based():
    prog = parse("x = 1\n  print(x + y)", "p.tl")
    call = prog.items[1].expr
    assert (call.line, call.col) == (2, 3)
    plus = call.args[0]
    assert (plus.line, plus.col) == (2, 11)


def test_seed_blocks_parse():
    src = (
        'model = load_model("model.mlpackage")\n// 또는\nmodel = load_model("model.mlmodelc")\n'
        'print("Model format:", model.metadata.format)  // CoreML\n'
        'print("Quantization:", model.metadata.quantization)  // F16\n'
    )
    prog = items(src)
    assert len(prog) == 4
    assert shape(prog[3].expr) == (
        "call", "print", (("str", "Quantization:"), ("attr", ("attr", "model", "metadata"), "quantization")), ()
    )
