"""Malformed and failing programs: each error names file:line:col, shows the line and a caret, and says
what was expected."""

from __future__ import annotations

import io
import textwrap

import pytest

from tensorlogic.errors import ScriptError
from tensorlogic.lang.evaluator import ScriptInterpreter
from tensorlogic.lang.parser import parse
from tensorlogic.lang.values import Context


# (source, message, line, col): the ten malformed programs, plus a few more.
def test_rendering_has_location_line_and_caret():
    with pytest.raises(ScriptError) as info:
        parse('x = 1\nprint("a" b)\n', "prog.tl")
    assert str(info.value) == (
        "prog.tl:2:11: expected ',' or ')' to close the '(' at line 2, column 6, found name 'b'\n"
        '    print("a" b)\n'
        "              ^"
    )


def run(src: str, tmp_path=None) -> str:
    out = io.StringIO()
    ctx = Context(base_dir=tmp_path or Context().base_dir, device="cpu", out=out, err=io.StringIO())
    ScriptInterpreter(ctx).run(textwrap.dedent(src), "run.tl")
    return out.getvalue()


def runtime_error(src: str, tmp_path=None) -> ScriptError:
    with pytest.raises(ScriptError) as info:
        run(src, tmp_path)
    return info.value


FORWARD = """
fn forward(a: float16[N, D], b: float16[D]) -> float16[N] {
    return sum(a * b, dim: 1)
}
"""


@pytest.mark.parametrize(
    "src, message, line, col",
    [
        ('model = 1\nprint(modle)', "unknown name 'modle' — did you mean 'model'?", 2, 7),
        ("print(zzz)", "unknown name 'zzz'", 1, 7),
        (FORWARD + "forward(zeros(3, 4), zeros(5))",
         "shape mismatch for parameter b of forward: D is 4 from earlier, 5 here", 5, 22),
        (FORWARD + "forward(zeros(3), zeros(3))",
         "shape mismatch for parameter a of forward: expected 2 dimensions [N, D], got shape [3]", 5, 9),
        (FORWARD + 'forward("x", zeros(2))', "parameter a of forward must be a tensor, got string", 5, 9),
        (FORWARD + "forward(zeros(2, 2))", "forward(a, b) is missing argument b", 5, 1),
        (FORWARD + "forward(1, 2, 3)", "forward(a, b) takes 2 arguments but 3 were given", 5, 1),
        ("fn f(x: float16[N]) -> float16[N] { return concat(x, x) }\nf(zeros(2))",
         "shape mismatch for the return value of f: N is 2 from earlier, 4 here", 1, 37),
        ("x = zeros(3) + zeros(4)", "'+' failed on float16[3] and float16[4]: The size of tensor a (3) must "
         "match the size of tensor b (4) at non-singleton dimension 0", 1, 14),
        ("x = relu(1, 2)", "bad arguments for relu(x): too many positional arguments", 1, 5),
        ("x = reshape(zeros(6), [4, 2])", "reshape: cannot reshape a tensor of shape [6] (6 values) to [4, 2]", 1, 5),
        ("x = zeros(2)\ny = x.nope", "a tensor has no attribute 'nope' (try shape, dtype, device, rank, T "
         "or a method like sum)", 2, 7),
        ("x = 1 / 0", "division by zero", 1, 7),
        ("if zeros(3) { }", "a condition must be a single value, got a tensor of shape [3]; use all(...) or any(...)",
         1, 4),
        ("x = 5\nx(1)", "'x' is an int, not a function", 2, 1),
        ("tensor w: float16[2, 2] = [1.0, 2.0, 3.0]", "'w' is declared float16[2, 2] but its initializer has 3 values",
         1, 11),
        ("tensor w: float16[2, 2] = [[1.0, 2.0]]", "'w' is declared float16[2, 2] but its value has shape [1, 2] "
         "(dimension 0)", 1, 11),
        ("tensor w: flot16[2]", "unknown dtype 'flot16' — did you mean 'float16'?", 1, 11),
        ("for i in 3 { }", "cannot loop over an int; use range(n)", 1, 10),
        ('m = load_model("missing.gguf")', None, 1, 5),
        ("fn f(n) { return f(n + 1) }\nf(0)",
         "too deep: more than 400 nested calls (runaway recursion in 'f'?)", 1, 18),
        ("x = [1, 2][5]", "bad index: list index out of range", 1, 5),
        ('print("{} and {}", 1)', "print: the format string has 2 '{}' placeholders but 1 values follow", 1, 1),
    ],
)
def test_runtime_error_messages(src, message, line, col, tmp_path):
    e = runtime_error(src, tmp_path)
    if message is None:  # a library error passed through: names the builtin and the file
        assert e.message.startswith("load_model: ") and "missing.gguf" in e.message
    else:
        assert e.message == message
    assert (e.file, e.line, e.col) == ("run.tl", line, col)
    assert e.source_line == textwrap.dedent(src).splitlines()[line - 1]


def test_error_inside_imported_function_names_that_file(tmp_path):
    (tmp_path / "lib.tl").write_text("fn bad(x) {\n  return x + undefined_thing\n}\n")
    main = tmp_path / "main.tl"
    main.write_text('import "lib.tl"\nbad(1)\n')
    out = io.StringIO()
    interp = ScriptInterpreter(Context(base_dir=tmp_path, device="cpu", out=out))
    with pytest.raises(ScriptError) as info:
        interp.run(main.read_text(), "main.tl", path=main)
    e = info.value
    assert (e.file, e.line, e.col, e.message) == ("lib.tl", 2, 14, "unknown name 'undefined_thing'")


def test_import_cycle_is_reported(tmp_path):
    (tmp_path / "a.tl").write_text('import "b.tl"\n')
    (tmp_path / "b.tl").write_text('import "a.tl"\n')
    main = tmp_path / "a.tl"
    interp = ScriptInterpreter(Context(base_dir=tmp_path, device="cpu", out=io.StringIO()))
    with pytest.raises(ScriptError) as info:
        interp.run(main.read_text(), "a.tl", path=main)
    assert info.value.message == "import cycle: a.tl -> b.tl -> a.tl"
    assert (info.value.file, info.value.line, info.value.col) == ("b.tl", 1, 1)


def test_missing_import(tmp_path):
    e = runtime_error('import "nope.tl"', tmp_path)
    assert e.message.startswith("cannot import 'nope.tl': no such file")


def test_python_exception_in_builtin_is_wrapped(tmp_path):
    # A torch error deep in a builtin comes back as one line at the call's position.
    e = runtime_error("x = einsum(\"ij,jk->ik\", zeros(2, 3), zeros(4, 5))", tmp_path)
    assert e.message.startswith("einsum: ") and "\n" not in e.message
    assert (e.line, e.col) == (1, 5)
