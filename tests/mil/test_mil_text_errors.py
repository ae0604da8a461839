"""Malformed MIL text: each error is a FormatError naming file, byte offset, line:col, with a caret."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tensorlogic.errors import FormatError
from tensorlogic.mil.from_text import parse_mil


def wrap(body: str, inputs: str = "tensor<fp32, [2]> x", outputs: str = "x") -> str:
    return f"program(1.3)\n{{\n    func main<ios17>({inputs}) {{\n{body}\n    }} -> ({outputs});\n}}\n"


# (source, the message after "line L col C: ", the offending text the caret must point at)
CASES = {
    "missing semicolon": (
        wrap("        tensor<fp32, [2]> y = relu(x = x)[name = string(\"y\")]"),
        "expected '(', ';' or a name, got '}'", "}",
    ),
    "undefined input": (
        wrap("        tensor<fp32, [2]> y = relu(x = ghost)[name = string(\"y\")];"),
        "undefined variable 'ghost' in op relu 'y'", "ghost",
    ),
    "used before defined": (
        wrap("        tensor<fp32, [2]> y = add(x = x, y = z)[name = string(\"y\")];\n"
             "        tensor<fp32, [2]> z = relu(x = x)[name = string(\"z\")];"),
        "undefined variable 'z' in op add 'y'", "z)",
    ),
    "block value used outside its block": (
        wrap("        tensor<fp32, [2]> c = cond(pred = p)[name = string(\"c\")]\n"
             "            () { tensor<fp32, [2]> inner = relu(x = x)[name = string(\"inner\")]; } -> (inner)\n"
             "            () { } -> (x);\n"
             "        tensor<fp32, [2]> d = relu(x = inner)[name = string(\"d\")];",
             inputs="tensor<fp32, [2]> x, bool p"),
        "undefined variable 'inner' in op relu 'd'", "inner)[",
    ),
    "undefined block output": (
        wrap("        tensor<fp32, [2]> c = cond(pred = p)[name = string(\"c\")]\n"
             "            () { } -> (nothing)\n            () { } -> (x);", inputs="tensor<fp32, [2]> x, bool p"),
        "undefined variable 'nothing' in the outputs of a block of op cond 'c'", "nothing",
    ),
    "undefined function output": (
        wrap("", outputs="x, result"),
        "undefined variable 'result' in the outputs of function 'main'", "result",
    ),
    "undefined loop binding": (
        wrap("        int32 n = while_loop(loop_vars = (x))[name = string(\"n\")]\n"
             "            (int32 i = missing) { } -> (i)\n            (int32 i) { } -> (i);"),
        "undefined variable 'missing' in op while_loop 'n'", "missing",
    ),
    "literal with too many elements": (
        wrap("        tensor<int32, [2]> c = const()[val = tensor<int32, [2]>([1, 2, 3])];"),
        "tensor<int32, [2]> literal has shape [3]", "tensor<int32, [2]>([",
    ),
    "ragged literal": (
        wrap("        tensor<int32, [2, 2]> c = const()[val = tensor<int32, [2, 2]>([[1, 2], [3]])];"),
        "ragged nested list in tensor literal", "tensor<int32, [2, 2]>([",
    ),
    "float in an int literal": (
        wrap("        int32 c = const()[val = int32(1.5)];"),
        "1.5 is not an integer", "int32(1.5)",
    ),
    "int out of range": (
        wrap("        uint8 c = const()[val = uint8(256)];"),
        "256 is out of range for uint8", "uint8(256)",
    ),
    "fp16 overflow": (
        wrap("        fp16 c = const()[val = fp16(1e5)];"),
        "1e5 is out of range for fp16", "fp16(1e5)",
    ),
    "hex float overflow": (
        wrap("        fp32 c = const()[val = fp32(0x1p+2000)];"),
        "0x1p+2000 is out of range for fp32", "fp32(0x1p+2000)",
    ),
    "inf for a float without infinities": (
        wrap("        fp8e4m3fn c = const()[val = fp8e4m3fn(-inf)];"),
        "-inf is out of range for fp8e4m3fn", "fp8e4m3fn(-inf)",
    ),
    "number for a bool": (
        wrap("        bool c = const()[val = bool(1)];"),
        "bool literal (true or false) expected, got number 1", "bool(1)",
    ),
    "number for a string": (
        wrap("        string c = const()[val = string(3)];"),
        "string literal expected, got number 3", "string(3)",
    ),
    "unknown dtype": (
        wrap("        tensor<fp33, [2]> y = relu(x = x);"),
        "expected a dtype, got 'fp33'", "fp33",
    ),
    "unterminated string": (
        wrap("        string c = const()[val = string(\"open)];"),
        "expected '(', 'BLOBFILE', '[', 'dict', 'false', 'list', 'state', 'tensor' or ..., got '\"'", "\"open",
    ),
    "blob without offset": (
        wrap("        tensor<fp16, [2]> w = const()[val = tensor<fp16, [2]>(BLOBFILE(path = string(\"w.bin\")))];"),
        "BLOBFILE takes exactly path and offset", "path =",
    ),
    "negative blob offset": (
        wrap("        fp16 w = const()[val = fp16(BLOBFILE(path = string(\"w.bin\"), offset = int64(-64)))];"),
        "BLOBFILE offset must be a non-negative integer", "offset",
    ),
    "state of a list": (
        wrap("", inputs="state<list<int32, 2>> s"),
        "state<...> must wrap a tensor type", "state<list",
    ),
    "list literal of the wrong length": (
        wrap("        list<int32, 3> l = const()[val = list<int32, 3>([1, 2])];"),
        "list<int32, 3> expects 3 elements, got 2", "list<int32, 3>([",
    ),
    "input given twice": (
        wrap("        tensor<fp32, [2]> y = add(x = x, x = x);"),
        "input 'x' is given twice", "x = x);",
    ),
    "attribute given twice": (
        wrap("        tensor<fp32, [2]> y = relu(x = x)[name = string(\"a\"), name = string(\"b\")];"),
        "attribute 'name' is given twice", "name = string(\"b",
    ),
    "typed element of the wrong type": (
        wrap("        list<tensor<fp32, [2]>, ?> l = const()"
             "[val = list<tensor<fp32, [2]>, ?>([tensor<fp32, [3]>([1, 2, 3])])];"),
        "a tensor<fp32, [3]> element does not fit tensor<fp32, [2]>", "list<tensor<fp32, [2]>, ?>([",
    ),
    "two blocks for one opset": (
        "program(1.3)\n{\n    func main<ios17>() { } -> () <ios17> { } -> ();\n}\n",
        "function 'main' has two blocks for opset CoreML7", "ios17> {",
    ),
    "function defined twice": (
        "program(1.3)\n{\n    func main<ios17>() { } -> ();\n    func main<ios18>() { } -> ();\n}\n",
        "function 'main' is defined twice", "main<ios18>",
    ),
    "text after the program": (
        "program(1.3)\n{\n}\ntrailing\n",
        "expected end of input, got 'trailing'", "trailing",
    ),
    "not MIL at all": (
        "\x08PK\x03\x04 binary garbage",
        "expected 'program', got '\\x08'", "\x08PK",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_error_message_names_file_offset_line_col_and_points_at_the_problem(case):
    source, message, points_at = CASES[case]
    with pytest.raises(FormatError) as info:
        parse_mil(source, path="bad.mil")
    err = info.value
    first, excerpt, caret = str(err).split("\n")
    pos = source.index(points_at)
    line = source.count("\n", 0, pos) + 1
    col = pos - (source.rfind("\n", 0, pos) + 1) + 1
    assert first == f"bad.mil at byte {pos}: line {line} col {col}: {message}"
    assert (err.path, err.offset) == ("bad.mil", pos)
    assert excerpt == "    " + source.splitlines()[line - 1]
    assert caret == "    " + " " * (col - 1) + "^"

def test_end_of_input():
    with pytest.raises(FormatError) as info:
        parse_mil("program(1.3) {\n    func main<ios17>(", path="cut.mil")
    first = str(info.value).splitlines()[0]
    assert first.startswith("cut.mil at byte 36: line 2 col 22: expected ")
    assert first.endswith(", got end of input")


def test_empty_input():
    with pytest.raises(FormatError, match=r"^<input> at byte 0: line 1 col 1: expected 'program', got end of input"):
        parse_mil("")


def test_byte_offset_counts_utf8_bytes():
    source = wrap("        string s = const()[val = string(\"ééé\")];\n"
                  "        tensor<fp32, [2]> y = relu(x = ghost);")
    with pytest.raises(FormatError) as info:
        parse_mil(source, path="u.mil")
    pos = source.index("ghost")
    assert info.value.offset == len(source[:pos].encode("utf-8")) == pos + 3
    assert str(info.value).startswith(f"u.mil at byte {pos + 3}: line 5 col 40: undefined variable 'ghost'")


def test_long_lines_are_cut_around_the_caret():
    values = [str(i) for i in range(400)]
    values[200] = "x"
    source = wrap(f"        tensor<int32, [400]> c = const()[val = tensor<int32, [400]>([{', '.join(values)}])];")
    with pytest.raises(FormatError) as info:
        parse_mil(source, path="long.mil")
    _, excerpt, caret = str(info.value).split("\n")
    assert len(excerpt) <= 4 + 3 + 120 + 3 and excerpt.strip().startswith("...") and excerpt.endswith("...")
    assert excerpt[caret.index("^")] == "x"


@pytest.mark.parametrize("what, body, message", [
    ("lists", "tensor<int32, [1]> c = const()[val = tensor<int32, [1]>(" + "[" * 500 + "1" + "]" * 500 + ")];",
     "lists nest deeper than 64 levels"),
    ("types", "list<" * 500 + "int32" + ", 1>" * 500 + " c = const();", "types nest deeper than 64 levels"),
    ("blocks", "int32 c = cond(pred = x) () { " * 300 + "} -> (x) () { } -> (x);" * 300,
     "blocks nest deeper than 64 levels"),
])
def test_absurd_nesting_is_refused_not_a_recursion_error(what, body, message):
    with pytest.raises(FormatError, match=f"^deep.mil at byte [0-9]+: line 4 col [0-9]+: {message}"):
        parse_mil(wrap("        " + body, inputs="bool x"), path="deep.mil")


def test_mangled_files_raise_format_errors_only():
    """Random cuts, insertions and splices of the hand-written files: a Program or a FormatError, nothing else."""
    sources = [p.read_text() for p in sorted((Path(__file__).parent / "data").glob("*.mil"))]
    pieces = list("[](){}<>,;=\"`?\\-+.0123456789xp \n") + ["tensor", "fp16", "BLOBFILE", "inf", "->", "list<", "é"]
    rng = random.Random(3)
    for _ in range(400):
        text = rng.choice(sources)
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(text))
            roll = rng.random()
            if roll < 0.4:
                text = text[:k] + text[k + rng.randint(1, 5):]
            elif roll < 0.8:
                text = text[:k] + rng.choice(pieces) + text[k:]
            else:
                j = rng.randrange(len(text))
                text = text[:k] + text[j:j + rng.randint(1, 20)] + text[k:]
        try:
            parse_mil(text, path="m.mil")
        except FormatError as e:
            assert str(e).startswith("m.mil at byte ") and str(e).count("\n") == 2
