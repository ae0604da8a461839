"""Parser tests: every construct of the language becomes the syntax tree written out by hand here, with
positions checked where they matter; plus the project's examples, many threads at once, and large inputs."""

from __future__ import annotations

import threading
from dataclasses import fields, replace
from pathlib import Path

import pytest

from tensorlogic.errors import ScriptError
from tensorlogic.lang import ast
from tensorlogic.lang.parser import MAX_NESTING, parse

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.tl"))


def strip(node):
    """``node`` with every position set to 0, so that it compares equal to a tree built by hand."""
    if isinstance(node, ast.Node):
        changes = {f.name: strip(getattr(node, f.name)) for f in fields(node) if f.name not in ("line", "col")}
        return replace(node, line=0, col=0, **changes)
    if isinstance(node, tuple):
        return tuple(strip(x) for x in node)
    return node


def items(src: str) -> tuple:
    return strip(parse(src, "t.tl").items)


def one(src: str):
    (item,) = items(src)
    return item


def expr(src: str):
    stmt = one(f"x = {src}")
    assert isinstance(stmt, ast.Assign)
    return stmt.value


def N(name: str) -> ast.Name:
    return ast.Name(name)


def I(value: int | float) -> ast.Num:  # noqa: E743 - a short name keeps the trees below readable
    return ast.Num(value)


def S(value: str) -> ast.Str:
    return ast.Str(value)


def call(func: str | ast.Node, *args, **kwargs) -> ast.Call:
    f = N(func) if isinstance(func, str) else func
    return ast.Call(f, tuple(args), tuple(kwargs.items()))


def T(base: str, dims=None, *args) -> ast.TypeSpec:
    return ast.TypeSpec(base, dims, tuple(args))


def x_is(value) -> ast.Assign:
    return ast.Assign(N("x"), value, "=")


def shape(e) -> object:
    """A compact rendering of an expression tree for the precedence table."""
    if isinstance(e, ast.BinOp):
        return (e.op, shape(e.left), shape(e.right))
    if isinstance(e, ast.UnaryOp):
        return (e.op, shape(e.operand))
    if isinstance(e, ast.Cast):
        return ("as", shape(e.value), e.type)
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Num):
        return e.value
    if isinstance(e, ast.Call):
        return ("call", shape(e.func), *(shape(a) for a in e.args))
    if isinstance(e, ast.Attr):
        return ("attr", shape(e.target), e.name)
    if isinstance(e, ast.Index):
        return ("index", shape(e.target), *(shape(i) for i in e.items))
    raise AssertionError(type(e))


# ---------------------------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    "src, tree",
    [
        # 1-2: or below and; both spellings
        ("a or b and c", ("or", "a", ("and", "b", "c"))),
        ("a || b && c", ("or", "a", ("and", "b", "c"))),
        ("a and b or c and d", ("or", ("and", "a", "b"), ("and", "c", "d"))),
        ("a or b or c", ("or", ("or", "a", "b"), "c")),
        # 3: prefix not, above comparisons; '!' is a unary of level 10
        ("not a == b", ("not", ("==", "a", "b"))),
        ("not a and b", ("and", ("not", "a"), "b")),
        ("!a == b", ("==", ("not", "a"), "b")),
        ("a and not b < c", ("and", "a", ("not", ("<", "b", "c")))),
        # 4-5: equality below ordering; equality chains left to right
        ("a == b < c", ("==", "a", ("<", "b", "c"))),
        ("a == b != c", ("!=", ("==", "a", "b"), "c")),
        ("a < b == c > d", ("==", ("<", "a", "b"), (">", "c", "d"))),
        ("a ≈ b + 1", ("≈", "a", ("+", "b", 1))),
        ("a ~= b", ("≈", "a", "b")),
        ("a <= b", ("<=", "a", "b")),
        ("a >= b", (">=", "a", "b")),
        ("x<-1", ("<", "x", ("-", 1))),  # '<' then a negative operand, not a rule arrow
        # 6: cast, below + and above comparisons
        ("a + b as f32", ("as", ("+", "a", "b"), "f32")),
        ("a < b as int", ("<", "a", ("as", "b", "int"))),
        ("x as i64 as float", ("as", ("as", "x", "i64"), "float")),
        # 7-9: + - below * / % @ ⊙ below ** ⊗, all left-associative
        ("a + b * c", ("+", "a", ("*", "b", "c"))),
        ("a - b - c", ("-", ("-", "a", "b"), "c")),
        ("a / b % c", ("%", ("/", "a", "b"), "c")),
        ("a * b @ c", ("@", ("*", "a", "b"), "c")),
        ("a @ b ⊙ c", ("⊙", ("@", "a", "b"), "c")),
        ("a ⊙ b ** c", ("⊙", "a", ("**", "b", "c"))),
        ("2 ** 3 ** 2", ("**", ("**", 2, 3), 2)),
        ("a ⊗ b ** c", ("**", ("⊗", "a", "b"), "c")),
        ("(a + b) * c", ("*", ("+", "a", "b"), "c")),
        # 10: unary binds tighter than **: -2 ** 2 is (-2) ** 2
        ("-2 ** 2", ("**", ("-", 2), 2)),
        ("2 ** -1", ("**", 2, ("-", 1))),
        ("-a @ b", ("@", ("-", "a"), "b")),
        ("- -a", ("-", ("-", "a"))),
        ("inv a @ b", ("@", ("inv", "a"), "b")),
        ("inv(a) + 1", ("+", ("inv", "a"), 1)),
        ("a - -b", ("-", "a", ("-", "b"))),
        # 11: postfix binds tightest
        ("-x.shape[0]", ("-", ("index", ("attr", "x", "shape"), 0))),
        ("f(x) ** 2", ("**", ("call", "f", "x"), 2)),
        ("a.b(c)[1].d", ("attr", ("index", ("call", ("attr", "a", "b"), "c"), 1), "d")),
    ],
)
def test_precedence(src, tree):
    assert shape(expr(src)) == tree


def test_an_expression_runs_on_across_lines():
    # Newlines are whitespace: a token that can continue an expression continues it.
    assert items("x = a\n+ b") == (x_is(ast.BinOp("+", N("a"), N("b"))),)
    assert items("x = f\n(y)") == (x_is(call("f", N("y"))),)
    predict = call(ast.Attr(N("model"), "predict"), N("x"))
    assert items("y = model\n  .predict(x)") == (ast.Assign(N("y"), predict, "="),)
    assert items("x = 1 +\n    2") == (x_is(ast.BinOp("+", I(1), I(2))),)


# ---------------------------------------------------------------------------------------------- literals


def test_numbers():
    assert expr("12") == I(12) and isinstance(expr("12").value, int)
    assert expr("1.5") == I(1.5)
    assert expr("1e-3") == I(0.001) and isinstance(expr("1e-3").value, float)
    assert expr("1.5e3") == I(1500.0)
    assert expr("2.5E+2") == I(250.0)
    assert expr("-4") == ast.UnaryOp("-", I(4))  # '-' is an operator outside patterns and atoms
    assert expr("9223372036854775807") == I(2**63 - 1)


def test_strings_and_escapes():
    assert expr(r'"tab\there \"q\" \\ \n \r \0"') == S('tab\there "q" \\ \n \r \0')
    assert expr("'single \\' quote'") == S("single ' quote")
    assert expr("'say \"hi\"'") == S('say "hi"')
    assert expr(r'"keep \q"') == S("keep \\q")  # an unknown escape keeps its backslash
    assert expr('""') == S("")
    assert expr('"⊗ 가"') == S("⊗ 가")


def test_booleans():
    assert expr("true") == ast.Bool(True) and expr("false") == ast.Bool(False)


def test_lists_tuples_dicts():
    assert expr("[]") == ast.ListLit(())
    assert expr("[1, 2.0, \"a\",]") == ast.ListLit((I(1), I(2.0), S("a")))
    assert expr("[[1.0, 2.0],\n     [3.0, 4.0],\n]") == ast.ListLit(
        (ast.ListLit((I(1.0), I(2.0))), ast.ListLit((I(3.0), I(4.0))))
    )
    assert expr("(a, b)") == ast.TupleLit((N("a"), N("b")))
    assert expr("(a,)") == ast.TupleLit((N("a"),))
    assert expr("(a, b,)") == ast.TupleLit((N("a"), N("b")))
    assert expr("(a)") == N("a")
    assert expr("{}") == ast.DictLit(())
    assert expr('{"a": 1,\n  "b": [1,\n 2], k: v,}') == ast.DictLit(
        ((S("a"), I(1)), (S("b"), ast.ListLit((I(1), I(2)))), (N("k"), N("v")))
    )


def test_comments():
    prog = items("// line comment\nx = 1 // trailing\n/* block\n comment */ y = 2\nz = /* inline */ 3")
    assert prog == (x_is(I(1)), ast.Assign(N("y"), I(2), "="), ast.Assign(N("z"), I(3), "="))
    # A comment at the very end, without a newline after it.
    assert items("x = 1 // done") == (x_is(I(1)),)


def test_windows_line_ends_and_byte_order_mark():
    prog = parse("\ufeffx = 1\r\n  y = 2\r\n", "w.tl")
    assert strip(prog.items) == (x_is(I(1)), ast.Assign(N("y"), I(2), "="))
    assert [(s.line, s.col) for s in prog.items] == [(1, 1), (2, 3)]
    with pytest.raises(ScriptError) as info:
        parse("x = 1\r\ny = (\r\n", "w.tl")
    assert (info.value.line, info.value.col, info.value.source_line) == (2, 6, "y = (")


def test_unicode_names_and_comments():
    # Our extension: names may use any letters (the original allows ASCII only).
    assert items("// 또는\n가중치 = 1") == (ast.Assign(N("가중치"), I(1), "="),)


# ---------------------------------------------------------------------------------------------- statements


def test_statements_need_no_separator():
    assert items("x = 1 y = 2; z = 3;;") == (
        x_is(I(1)), ast.Assign(N("y"), I(2), "="), ast.Assign(N("z"), I(3), "="),
    )
    assert items("if a { b = 1 } c = 2") == (
        ast.If(N("a"), (ast.Assign(N("b"), I(1), "="),), ()), ast.Assign(N("c"), I(2), "="),
    )


def test_let_and_assignments():
    assert items("let x = 1\nlet y: float16[3] = z\nlet s: string = \"a\"") == (
        ast.Let("x", I(1)), ast.Let("y", N("z"), T("float16", (3,))), ast.Let("s", S("a"), T("string")),
    )
    ops = ["=", ":=", "+=", "-=", "*=", "/="]
    assert items("\n".join(f"x {op} 1" for op in ops)) == tuple(ast.Assign(N("x"), I(1), op) for op in ops)
    assert one("a[i, j] = e") == ast.Assign(ast.Index(N("a"), (N("i"), N("j"))), N("e"), "=")
    assert one("s.field = e") == ast.Assign(ast.Attr(N("s"), "field"), N("e"), "=")
    assert one("s.a.b += 1") == ast.Assign(ast.Attr(ast.Attr(N("s"), "a"), "b"), I(1), "+=")


def test_tensor_declarations():
    w, b, d, s = items(
        "tensor w: float16[3, 4] learnable = [[1.0]]\n"
        "tensor b: float32[1] frozen\n"
        "tensor D: float64[n, m, ?]\n"
        "tensor s: int64[2] = [1, 2]"
    )
    assert w == ast.TensorDecl("w", T("float16", (3, 4)), "learnable", ast.ListLit((ast.ListLit((I(1.0),)),)))
    assert b == ast.TensorDecl("b", T("float32", (1,)), "frozen", None)
    assert d == ast.TensorDecl("D", T("float64", ("n", "m", "?")), None, None)
    assert s == ast.TensorDecl("s", T("int64", (2,)), None, ast.ListLit((I(1), I(2))))


def test_if_else_if_else():
    src = "if x > 0 {\n  y = 1\n}\nelse if x < 0 { y = -1 } else if z { } else {\n  y = 0\n}"

    def assign(value: ast.Node) -> ast.Assign:
        return ast.Assign(N("y"), value, "=")

    assert one(src) == ast.If(
        ast.BinOp(">", N("x"), I(0)),
        (assign(I(1)),),
        (ast.If(ast.BinOp("<", N("x"), I(0)), (assign(ast.UnaryOp("-", I(1))),),
                (ast.If(N("z"), (), (assign(I(0)),)),)),),
    )
    assert one("if a { }") == ast.If(N("a"), (), ())


def test_loops_break_continue():
    body = "{ if i == 3 { continue }\n if i == 5 { break } }"
    inner = (
        ast.If(ast.BinOp("==", N("i"), I(3)), (ast.Continue(),), ()),
        ast.If(ast.BinOp("==", N("i"), I(5)), (ast.Break(),), ()),
    )
    assert one(f"for i in range(10) {body}") == ast.For("i", call("range", I(10)), inner)
    assert one(f"while i < 10 {body}") == ast.While(ast.BinOp("<", N("i"), I(10)), inner)
    assert one(f"loop {body}") == ast.Loop(inner)
    assert one("for v in [1, 2] { print(v) }") == ast.For(
        "v", ast.ListLit((I(1), I(2))), (ast.ExprStmt(call("print", N("v"))),)
    )


def test_struct_literals_are_not_read_in_conditions():
    # '{' after the condition opens the body, as in Rust; parentheses allow a literal again.
    assert one("if p == Point { }") == ast.If(ast.BinOp("==", N("p"), N("Point")), (), ())
    assert one("for q in items { }") == ast.For("q", N("items"), ())
    lit = ast.StructLit(T("Point"), (("x", I(1)),))
    assert one("if p == (Point { x: 1 }) { }") == ast.If(ast.BinOp("==", N("p"), lit), (), ())
    assert one("if f(Point { x: 1 }) { }") == ast.If(call("f", lit), (), ())
    # A dict literal cannot be mistaken for the body: it starts with 'KEY:' or sits after an operator.
    pairs = ast.DictLit(((S("a"), I(1)), (S("b"), I(2))))
    assert one('for k in {"a": 1, "b": 2} { print(k) }') == ast.For("k", pairs, (ast.ExprStmt(call("print", N("k"))),))
    assert one("while d != {} { }") == ast.While(ast.BinOp("!=", N("d"), ast.DictLit(())), ())


def test_return_and_blocks():
    (f,) = items("fn f(a) { if a { return } { let b = 1 } return a + 1 }")
    assert f.body == (
        ast.If(N("a"), (ast.Return(None),), ()),
        ast.Block((ast.Let("b", I(1)),)),
        ast.Return(ast.BinOp("+", N("a"), I(1))),
    )
    (g,) = items("fn g() { return; }")
    assert g.body == (ast.Return(None),)
    (m,) = items("main { return }")
    assert m == ast.Main((ast.Return(None),))


def test_python_import():
    assert items("python import numpy\npython import numpy.linalg as la") == (
        ast.PythonImport("numpy", None), ast.PythonImport("numpy.linalg", "la"),
    )


# ---------------------------------------------------------------------------------------------- declarations


def test_functions():
    (f,) = items(
        "fn forward(input: float16[N, D_in],\n"
        "           weights: float16[D_in, D_out],\n"
        "           bias: float16[D_out],) -> float16[N, D_out] {\n"
        "    let output = input @ weights\n"
        "    return output + bias\n"
        "}"
    )
    assert f == ast.FnDecl(
        "forward",
        (
            ast.Param("input", T("float16", ("N", "D_in"))),
            ast.Param("weights", T("float16", ("D_in", "D_out"))),
            ast.Param("bias", T("float16", ("D_out",))),
        ),
        T("float16", ("N", "D_out")),
        (ast.Let("output", ast.BinOp("@", N("input"), N("weights"))),
         ast.Return(ast.BinOp("+", N("output"), N("bias")))),
        "t.tl",
    )
    assert one("function g(n, m: int) -> void { }") == ast.FnDecl(
        "g", (ast.Param("n", None), ast.Param("m", T("int"))), T("void"), (), "t.tl"
    )
    assert one("fn id<T, U>(x: T) { x }") == ast.FnDecl(
        "id", (ast.Param("x", T("T")),), None, (ast.ExprStmt(N("x")),), "t.tl", ("T", "U")
    )


@pytest.mark.parametrize(
    "src, typ",
    [
        ("float16[N, 3, ?]", T("float16", ("N", 3, "?"))),
        ("int", T("int")), ("float", T("float")), ("bool", T("bool")), ("string", T("string")),
        ("f16", T("f16")), ("f32", T("f32")), ("f64", T("f64")), ("i32", T("i32")), ("i64", T("i64")),
        ("Point", T("Point")),
        ("Box<T>", T("Box", None, T("T"))),
        ("Box<float16[3]>", T("Box", None, T("float16", (3,)))),
        ("Map<string, Vec<int>>", T("Map", None, T("string"), T("Vec", None, T("int")))),
        ("Tensor", T("Tensor")),
        ("Vec<int>", T("Vec", None, T("int"))),
    ],
)
def test_types(src, typ):
    assert one(f"fn f(a: {src}) -> {src} {{ }}") == ast.FnDecl("f", (ast.Param("a", typ),), typ, (), "t.tl")


def test_structs():
    assert one("struct Point<T> { x: float16[2] learnable, y: T frozen\n z: int, }") == ast.StructDecl(
        "Point", ("T",),
        (ast.Field("x", T("float16", (2,)), "learnable"), ast.Field("y", T("T"), "frozen"), ast.Field("z", T("int"))),
    )
    assert one("struct Empty { }") == ast.StructDecl("Empty", (), ())
    # A field may be called like a qualifier.
    assert one("struct Flags { x: int\n frozen: bool learnable }") == ast.StructDecl(
        "Flags", (), (ast.Field("x", T("int")), ast.Field("frozen", T("bool"), "learnable"))
    )


def test_impl_blocks():
    src = "impl<T> Box<T> {\n  fn get(self, x: int) -> int { self.v }\n  fn new(v: T) -> Box<T> { Box { v: v } }\n}"
    get = ast.FnDecl("get", (ast.Param("self", None), ast.Param("x", T("int"))), T("int"),
                     (ast.ExprStmt(ast.Attr(N("self"), "v")),), "t.tl")
    new = ast.FnDecl("new", (ast.Param("v", T("T")),), T("Box", None, T("T")),
                     (ast.ExprStmt(ast.StructLit(T("Box"), (("v", N("v")),))),), "t.tl")
    assert one(src) == ast.ImplBlock(T("Box", None, T("T")), None, ("T",), (get, new))
    drop = ast.FnDecl("drop", (ast.Param("self", None),), None, (ast.ExprStmt(call("print", S("bye"))),), "t.tl")
    assert one('impl Drop for Name { fn drop(self) { print("bye") } }') == ast.ImplBlock(
        T("Name"), "Drop", (), (drop,)
    )


def test_program_items_in_any_order():
    prog = items(
        'test adds { assert(1 + 1 == 2) }\nimport "lib/constants.tl"\nmain {\n  print(w)\n}\n'
        "tensor w: float16[1] = [1.0]\nbench loop_speed { }\nfn f() { }\nstruct S { }\nx = 1"
    )
    assert [type(p).__name__ for p in prog] == [
        "TestBlock", "Import", "Main", "TensorDecl", "BenchBlock", "FnDecl", "StructDecl", "Assign",
    ]
    assert prog[0] == ast.TestBlock("adds", (ast.ExprStmt(call("assert", ast.BinOp(
        "==", ast.BinOp("+", I(1), I(1)), I(2)))),))
    assert prog[1] == ast.Import("lib/constants.tl")
    assert prog[2] == ast.Main((ast.ExprStmt(call("print", N("w"))),))
    assert prog[4] == ast.BenchBlock("loop_speed", ())


def test_soft_keywords_are_names_elsewhere():
    prog = items(
        "forward(x)\ninput = 1\ntest = input + 1\nlet range = range(n)\nprint(main, entity, learn)\n"
        "with(self)\nembed = infer.forward\nrelation(x, y)\nmain = 3\ninv = inv + 1"
    )
    assert prog == (
        ast.ExprStmt(call("forward", N("x"))),
        ast.Assign(N("input"), I(1), "="),
        ast.Assign(N("test"), ast.BinOp("+", N("input"), I(1)), "="),
        ast.Let("range", call("range", N("n"))),
        ast.ExprStmt(call("print", N("main"), N("entity"), N("learn"))),
        ast.ExprStmt(call("with", N("self"))),
        ast.Assign(N("embed"), ast.Attr(N("infer"), "forward"), "="),
        ast.ExprStmt(call("relation", N("x"), N("y"))),
        ast.Assign(N("main"), I(3), "="),
        ast.Assign(N("inv"), ast.BinOp("+", N("inv"), I(1)), "="),
    )


# ---------------------------------------------------------------------------------------------- logic


def test_entities_and_relations():
    assert items("entity Person\nentity City = {tokyo, osaka,}") == (
        ast.EntityDecl("Person", None), ast.EntityDecl("City", ("tokyo", "osaka")),
    )
    assert one("relation Parent(x: Person, y: entity) embed float16[32]") == ast.RelationDecl(
        "Parent", (ast.Param("x", T("Person")), ast.Param("y", T("entity"))), T("float16", (32,))
    )
    assert one("relation Likes(x: Person, y: Item)") == ast.RelationDecl(
        "Likes", (ast.Param("x", T("Person")), ast.Param("y", T("Item"))), None
    )


def test_embeddings():
    assert one("embedding E {\n  entities: {a, b}\n  dimension: 32\n  init: xavier\n}") == ast.EmbeddingDecl(
        "embedding", "E", ("a", "b"), 32, "xavier"
    )
    assert one("embedding E { entities: auto, dimension: 8 }") == ast.EmbeddingDecl("embedding", "E", "auto", 8, None)
    assert one("embedding E { entities: Person dimension: 8 }") == ast.EmbeddingDecl(
        "embedding", "E", "Person", 8, None
    )
    assert one("relation_embedding R { relations: {r1, r2}, dimension: 16 }") == ast.EmbeddingDecl(
        "relation_embedding", "R", ("r1", "r2"), 16, None
    )
    assert one("relation_embedding R { relations: all dimension: 4 init: zeros }") == ast.EmbeddingDecl(
        "relation_embedding", "R", "all", 4, "zeros"
    )


def atom(pred: str, *args, negated: bool = False) -> ast.Atom:
    return ast.Atom(pred, tuple(N(a) if isinstance(a, str) else a for a in args), negated)


def test_facts_rules_queries():
    prog = items(
        "Parent(alice, bob)\n"
        "Ancestor(X, Y) <- Parent(X, Y)\n"
        "Ancestor(X, Z) <- Parent(X, Y), not Other(Y, Z), X != Z\n"
        "Ancestor(X, charlie)?\n"
        "Age(X, -3)? where X != bob, Y > 2"
    )
    assert prog == (
        ast.ExprStmt(call("Parent", N("alice"), N("bob"))),
        ast.Rule(atom("Ancestor", "X", "Y"), (atom("Parent", "X", "Y"),)),
        ast.Rule(atom("Ancestor", "X", "Z"), (
            atom("Parent", "X", "Y"), atom("Other", "Y", "Z", negated=True), ast.BinOp("!=", N("X"), N("Z")),
        )),
        ast.Query(atom("Ancestor", "X", "charlie"), ()),
        ast.Query(atom("Age", "X", I(-3)), (ast.BinOp("!=", N("X"), N("bob")), ast.BinOp(">", N("Y"), I(2)))),
    )


def test_infer():
    assert items("infer forward Parent(alice, X)?\ninfer symbolic P(a)? where a > 1") == (
        ast.Infer("forward", ast.Query(atom("Parent", "alice", "X"), ())),
        ast.Infer("symbolic", ast.Query(atom("P", "a"), (ast.BinOp(">", N("a"), I(1)),))),
    )
    assert one('infer {\n  forward P(a)?\n  backward Q(X, "s")?\n  gradient R(b)?\n}') == ast.Block((
        ast.Infer("forward", ast.Query(atom("P", "a"), ())),
        ast.Infer("backward", ast.Query(atom("Q", "X", S("s")), ())),
        ast.Infer("gradient", ast.Query(atom("R", "b"), ())),
    ))


def test_with_and_learn():
    assert one("with Person { lives(alice, tokyo)\n lives(alice, X)? }") == ast.With("Person", (
        ast.ExprStmt(call("lives", N("alice"), N("tokyo"))), ast.Query(atom("lives", "alice", "X"), ()),
    ))
    src = (
        "learn {\n  let loss = w * w\n  objective: loss + 1,\n  optimizer: sgd(lr: 0.1, momentum = 0.9),\n"
        "  epochs: 100,\n  scheduler: step(step_size: 10, gamma: 0.5)\n}"
    )
    assert one(src) == ast.Learn(
        (ast.Let("loss", ast.BinOp("*", N("w"), N("w"))),), ast.BinOp("+", N("loss"), I(1)),
        "sgd", (("lr", 0.1), ("momentum", 0.9)), I(100), "step", (("step_size", 10), ("gamma", 0.5)),
        (4, 14), (6, 14),
    )
    assert one("learn { objective: l, optimizer: adam(lr: -1e-3), epochs: n }") == ast.Learn(
        (), N("l"), "adam", (("lr", -0.001),), N("n"), optimizer_pos=(1, 34)
    )


# ---------------------------------------------------------------------------------------------- expressions


def test_calls_keywords_methods_attributes():
    assert expr('model.predict(x, batch: 2, mode = "fast",)') == call(
        ast.Attr(N("model"), "predict"), N("x"), batch=I(2), mode=S("fast")
    )
    assert expr("model.metadata.format") == ast.Attr(ast.Attr(N("model"), "metadata"), "format")
    assert expr("f()") == call("f")
    assert expr("f(1,\n  2,\n)") == call("f", I(1), I(2))
    assert expr("f(dim: 1)") == call("f", dim=I(1))


def test_indexing_and_slicing():
    def sl(a, b, c):
        return ast.Slice(a, b, c)

    assert expr("x[i, 1:3, :, ::2]") == ast.Index(
        N("x"), (N("i"), sl(I(1), I(3), None), sl(None, None, None), sl(None, None, I(2)))
    )
    assert expr("x[1:]") == ast.Index(N("x"), (sl(I(1), None, None),))
    assert expr("x[:n]") == ast.Index(N("x"), (sl(None, N("n"), None),))
    assert expr("x[1::2]") == ast.Index(N("x"), (sl(I(1), None, I(2)),))
    assert expr("x[a:b:c]") == ast.Index(N("x"), (sl(N("a"), N("b"), N("c")),))
    assert expr("x[i::2]") == ast.Index(N("x"), (sl(N("i"), None, I(2)),))
    assert expr("x[:, -1]") == ast.Index(N("x"), (sl(None, None, None), ast.UnaryOp("-", I(1))))
    assert expr("x[0][1]") == ast.Index(ast.Index(N("x"), (I(0),)), (I(1),))


def test_tensor_constructor():
    assert expr("tensor<float16>([[1.0, 2.0]], device: gpu)") == ast.TensorCtor(
        "float16", (ast.ListLit((ast.ListLit((I(1.0), I(2.0))),)),), (("device", N("gpu")),)
    )
    assert expr("tensor([1, 2])") == ast.TensorCtor(None, (ast.ListLit((I(1), I(2))),), ())


@pytest.mark.parametrize(
    "src, typ, name",
    [
        ("f32::zeros", T("f32"), "zeros"),
        ("Tensor::ones", T("Tensor"), "ones"),
        ("IntVec::new", T("IntVec"), "new"),
        ("Box::new", T("Box"), "new"),
        ("Box<int>::new", T("Box", None, T("int")), "new"),
        ("Box<float16[3]>::new", T("Box", None, T("float16", (3,))), "new"),
    ],
)
def test_paths(src, typ, name):
    assert expr(f"{src}(1)") == call(ast.Path(typ, name), I(1))
    assert expr(src) == ast.Path(typ, name)


def test_generic_syntax_does_not_swallow_comparisons():
    assert expr("a < b") == ast.BinOp("<", N("a"), N("b"))
    assert expr("a < b and c > d") == ast.BinOp(
        "and", ast.BinOp("<", N("a"), N("b")), ast.BinOp(">", N("c"), N("d"))
    )
    assert expr("f(a < b, c > d)") == call("f", ast.BinOp("<", N("a"), N("b")), ast.BinOp(">", N("c"), N("d")))


def test_struct_literals():
    assert expr("Point { x: 1.0, y: 2.0, }") == ast.StructLit(T("Point"), (("x", I(1.0)), ("y", I(2.0))))
    assert expr("Unit {}") == ast.StructLit(T("Unit"), ())
    assert expr("Box<int> { value: 3 }") == ast.StructLit(T("Box", None, T("int")), (("value", I(3)),))
    assert expr("Line { a: Point { x: 0 } }") == ast.StructLit(
        T("Line"), (("a", ast.StructLit(T("Point"), (("x", I(0)),))),)
    )


def test_match():
    src = (
        "match v {\n  0 => a,\n  -1 | 2 => b\n,  (p, _) if p > 1 => { print(p)\n p }\n"
        '  Point { x: 0, y } => y, "s" => 1, true => 2, n => n * 2, (q,) => q, (r) => r,\n}'
    )
    arms = (
        ast.MatchArm(ast.PLit(0), None, N("a")),
        ast.MatchArm(ast.POr((ast.PLit(-1), ast.PLit(2))), None, N("b")),
        ast.MatchArm(ast.PTuple((ast.PVar("p"), ast.PWild())), ast.BinOp(">", N("p"), I(1)),
                     (ast.ExprStmt(call("print", N("p"))), ast.ExprStmt(N("p")))),
        ast.MatchArm(ast.PStruct("Point", (("x", ast.PLit(0)), ("y", ast.PVar("y")))), None, N("y")),
        ast.MatchArm(ast.PLit("s"), None, I(1)),
        ast.MatchArm(ast.PLit(True), None, I(2)),
        ast.MatchArm(ast.PVar("n"), None, ast.BinOp("*", N("n"), I(2))),
        ast.MatchArm(ast.PTuple((ast.PVar("q"),)), None, N("q")),
        ast.MatchArm(ast.PVar("r"), None, N("r")),
    )
    assert expr(src) == ast.Match(N("v"), arms)
    # As a statement, a match ends at its '}'; the next line is a new statement.
    assert items("match v { _ => 1 }\n-1") == (
        ast.ExprStmt(ast.Match(N("v"), (ast.MatchArm(ast.PWild(), None, I(1)),))),
        ast.ExprStmt(ast.UnaryOp("-", I(1))),
    )


def test_if_expression():
    assert expr("if c { 1 } else { 2 }") == ast.IfExpr(
        ast.If(N("c"), (ast.ExprStmt(I(1)),), (ast.ExprStmt(I(2)),))
    )
    assert one("let v = if a { 1 } else if b { 2 } else { 3 }").value == ast.IfExpr(
        ast.If(N("a"), (ast.ExprStmt(I(1)),), (ast.If(N("b"), (ast.ExprStmt(I(2)),), (ast.ExprStmt(I(3)),)),))
    )


# ---------------------------------------------------------------------------------------------- positions


def test_positions():
    prog = parse("x = 1\n  print(a + b)\n/* two\nlines */ y = m.f(z) as int\n\tq = w[0]", "p.tl")
    first, stmt, cast_stmt, index_stmt = prog.items
    assert (first.line, first.col, first.value.line, first.value.col) == (1, 1, 1, 5)
    call_ = stmt.expr
    assert (stmt.line, stmt.col, call_.line, call_.col) == (2, 3, 2, 3)
    plus = call_.args[0]
    assert (plus.line, plus.col, plus.left.col, plus.right.col) == (2, 11, 9, 13)
    cast = cast_stmt.value
    assert (cast_stmt.line, cast_stmt.col) == (4, 10)  # after a comment spanning lines
    assert (cast.line, cast.col) == (4, 21)  # the 'as'
    method_call = cast.value
    assert (method_call.line, method_call.col) == (4, 16)  # the method name
    assert (method_call.func.line, method_call.func.col) == (4, 16)  # the Attr: its name
    assert (method_call.func.target.col, method_call.args[0].col) == (14, 18)
    index = index_stmt.value
    assert (index_stmt.line, index_stmt.col, index.line, index.col) == (5, 2, 5, 6)  # a tab is one column


def test_declaration_positions():
    prog = parse("fn f(a: int, b) -> int { return a }\nstruct P { x: int }\nmain {\n  let v = P { x: 1 }\n}", "p.tl")
    fn, struct, main = prog.items
    assert (fn.line, fn.col) == (1, 1)
    assert [(p.line, p.col) for p in fn.params] == [(1, 6), (1, 14)]
    assert (fn.params[0].type.line, fn.params[0].type.col, fn.ret.col) == (1, 9, 20)
    assert (fn.body[0].line, fn.body[0].col) == (1, 26)
    assert (struct.line, struct.fields[0].line, struct.fields[0].col) == (2, 2, 12)
    let = main.body[0]
    assert (main.line, main.col, let.line, let.col, let.value.line, let.value.col) == (3, 1, 4, 3, 4, 11)


def test_logic_positions():
    prog = parse("Anc(X, Y) <- Par(X, Y), not Q(Y)\n  Anc(a, B)? where B != c", "p.tl")
    rule, query = prog.items
    assert (rule.line, rule.col, rule.head.col) == (1, 1, 1)
    assert [(b.line, b.col) for b in rule.body] == [(1, 14), (1, 25)]
    assert (query.line, query.col, query.atom.col) == (2, 3, 3)
    assert (query.where[0].col, query.where[0].left.col) == (22, 20)  # a BinOp is at its operator


# ---------------------------------------------------------------------------------------------- programs


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_project_examples_parse(path):
    prog = parse(path.read_text(encoding="utf-8"), path.name)
    assert prog.file == path.name and prog.items


def test_examples_exist():
    assert len(EXAMPLES) >= 5


def test_parsing_is_thread_safe():
    sources = [(p.name, p.read_text(encoding="utf-8")) for p in EXAMPLES]
    expected = [parse(src, name) for name, src in sources]
    barrier = threading.Barrier(8)
    results: list[list] = [[] for _ in range(8)]

    def work(k: int) -> None:
        barrier.wait()
        for _ in range(10):
            results[k].append([parse(src, name) for name, src in sources])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for per_thread in results:
        assert len(per_thread) == 10
        for got in per_thread:
            assert got == expected


def test_long_programs():
    n = 5000
    src = "\n".join(f"let v{i} = v{i - 1} + {i} * 2" for i in range(1, n + 1))
    prog = parse(src)
    assert len(prog.items) == n
    assert strip(prog.items[-1]) == ast.Let(f"v{n}", ast.BinOp("+", N(f"v{n - 1}"), ast.BinOp("*", I(n), I(2))))
    assert (prog.items[-1].line, prog.items[-1].col) == (n, 1)
    chain = "if a { }" + "".join(f" else if a == {i} {{ }}" for i in range(2000))
    node = parse(chain).items[0]
    depth = 0
    while node.orelse:
        node, depth = node.orelse[0], depth + 1
    assert depth == 2000 and strip(node.cond) == ast.BinOp("==", N("a"), I(1999))
    total = parse("x = " + " + ".join(["1"] * 10000)).items[0].value
    assert total.op == "+" and strip(total.right) == I(1)


def test_deep_nesting():
    def nested(n: int) -> ast.Node:
        e = I(1)
        for _ in range(n):
            e = call("f", e)
        return e

    n = MAX_NESTING
    assert MAX_NESTING >= 200
    assert expr("(" * n + "1" + ")" * n) == I(1)
    assert expr("f(" * n + "1" + ")" * n) == nested(n)
    lists = ast.ListLit(())
    for _ in range(n - 1):
        lists = ast.ListLit((lists,))
    assert expr("[" * n + "]" * n) == lists
    prog = parse("if a {\n" * n + "x = 1\n" + "}\n" * n)
    assert prog.items[0].line == 1
    message = (f"the program is nested too deeply to parse (more than {MAX_NESTING} levels of brackets and "
               "blocks)")
    with pytest.raises(ScriptError) as info:
        parse("x = " + "(" * (n + 1) + "1" + ")" * (n + 1))
    assert (info.value.message, info.value.line, info.value.col) == (message, 1, 5 + n)
    with pytest.raises(ScriptError) as info:
        parse("x = " + "-" * 20000 + "1")  # past Python's stack: still a clean error
    assert info.value.message == message
