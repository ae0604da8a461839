"""Our own corpus of TensorLogic programs (tests/lang/corpus/): every construct and builtin of the language,
each program with an output checked by hand.

For ``NN_topic.tl``:
- ``NN_topic.expected``: its exact stdout under ``tl run``, derived by hand or with numpy in float64 (never by
  running TensorLogic). For a program that must fail, the stdout printed before the failure.
- ``NN_topic.expected_error``: the program must stop with a ScriptError; the file holds one line
  ``[FILE:]LINE:COL: TEXT`` — where the error is (FILE: the end of the file name, when the error is in an
  imported file) and a part of its one-line message.
- ``NN_topic.expected_test``: the exact stdout of ``tl test`` on the program's test blocks (all pass).
- ``NN_topic.expected_warnings``: lines ``LINE:COL: TEXT``; stderr must have a warning naming that position
  and containing TEXT.
``lib/`` holds files the programs import; they are not programs themselves.
"""

from __future__ import annotations

import dataclasses
import io
import re
import sys
from pathlib import Path

import pytest

from tensorlogic.errors import ScriptError
from tensorlogic.lang import ast
from tensorlogic.lang.parser import parse
from tensorlogic.lang.runner import run_file, run_test_blocks
from tensorlogic.lang.values import Context

CORPUS = Path(__file__).resolve().parent / "corpus"
PROGRAMS = sorted(p.stem for p in CORPUS.glob("*.tl"))
RUNS = [n for n in PROGRAMS if not (CORPUS / f"{n}.expected_error").exists()]
FAILS = [n for n in PROGRAMS if (CORPUS / f"{n}.expected_error").exists()]
TESTS = [n for n in PROGRAMS if (CORPUS / f"{n}.expected_test").exists()]

# What 33_env_io.tl reads: one environment variable and two lines of standard input.
ENV = {"TL_CORPUS_USER": "corpus-runner"}
UNSET = "TL_CORPUS_SURELY_UNSET_VARIABLE"
STDIN = "Ada\nLovelace\n"

_POSITION = re.compile(r"^(?:(?P<file>\S+?):)?(?P<line>\d+):(?P<col>\d+): (?P<text>.+)$")


@pytest.fixture
def context(tmp_path, monkeypatch):
    """A run context writing into buffers, with a scratch folder for relative paths (save/load)."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(UNSET, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(STDIN))
    extra = {"inp": io.StringIO(STDIN)} if "inp" in {f.name for f in dataclasses.fields(Context)} else {}
    return Context(base_dir=tmp_path, device="cpu", out=io.StringIO(), err=io.StringIO(), **extra)


def _read(name: str, suffix: str) -> str:
    return (CORPUS / f"{name}{suffix}").read_text(encoding="utf-8")


def _position(line: str) -> dict:
    m = _POSITION.match(line.strip())
    assert m, f"malformed position line {line!r}"
    return m.groupdict()


def test_corpus_is_complete():
    assert len(RUNS) >= 30 and len(FAILS) >= 20
    for name in PROGRAMS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", name), name
        assert (CORPUS / f"{name}.expected").exists() or name in FAILS, f"{name} has no golden file"
    for golden in CORPUS.glob("*.expected*"):
        assert golden.stem in PROGRAMS, f"{golden.name} belongs to no program"


@pytest.mark.parametrize("name", RUNS)
def test_program_output(name, context):
    assert run_file(CORPUS / f"{name}.tl", ctx=context) == 0
    assert context.out.getvalue() == _read(name, ".expected")
    warnings = CORPUS / f"{name}.expected_warnings"
    if warnings.exists():
        err = context.err.getvalue().splitlines()
        for want in warnings.read_text(encoding="utf-8").splitlines():
            pos = _position(want)
            where = f"{name}.tl:{pos['line']}:{pos['col']}:"
            assert any(where in e and pos["text"] in e and "warning" in e for e in err), (want, err)


@pytest.mark.parametrize("name", FAILS)
def test_program_error(name, context):
    with pytest.raises(ScriptError) as info:
        run_file(CORPUS / f"{name}.tl", ctx=context)
    e = info.value
    want = _position(_read(name, ".expected_error"))
    assert "\n" not in e.message
    assert (e.line, e.col) == (int(want["line"]), int(want["col"])), e.message
    assert want["text"] in e.message
    assert want["text"] in str(e).splitlines()[0]
    assert str(e.file).endswith(want["file"] or f"{name}.tl")
    before = CORPUS / f"{name}.expected"
    assert context.out.getvalue() == (before.read_text(encoding="utf-8") if before.exists() else "")


@pytest.mark.parametrize("name", TESTS)
def test_program_test_blocks(name, context):
    assert run_test_blocks(CORPUS / f"{name}.tl", ctx=context) == 0
    assert context.out.getvalue() == _read(name, ".expected_test")


# Every builtin the issue lists, and the constructs of ast.py, appear somewhere in the corpus.
BUILTINS = """
zeros ones arange range_i shape reshape flatten squeeze unsqueeze transpose permute broadcast_to concat split
chunk slice slice_last gather scatter matmul sigmoid relu gelu tanh exp log sqrt pow sin cos tan abs floor ceil
round min max sum mean argmax argmin linear einsum rms_norm layer_norm batch_norm dropout embedding
positional_encoding rope precompute_rope_cos precompute_rope_sin causal_mask apply_mask apply_attention_mask
padding_mask combine_masks attention_with_cache fused_add_relu fused_mul_relu fused_affine fused_gelu_linear
softmax temperature top_k top_p sample temperature_sample top_p_sample len get append to_int str cleanup
new_tensor_buffer string_length string_substring print panic assert assert_eq assert_about_eq env input save
load seed rand
""".split()
LOGIC = {"EntityDecl", "RelationDecl", "Atom", "Rule", "Query", "Infer", "Learn", "With", "EmbeddingDecl"}


def test_corpus_calls_every_builtin():
    text = "\n".join((CORPUS / f"{n}.tl").read_text(encoding="utf-8") for n in PROGRAMS)
    missing = [b for b in BUILTINS if not re.search(rf"(?<![\w.]){b}\s*\(", text)]
    assert not missing


def _node_types(node, seen: set) -> None:
    if isinstance(node, (list, tuple)):
        for item in node:
            _node_types(item, seen)
    elif isinstance(node, ast.Node):
        seen.add(type(node).__name__)
        for f in dataclasses.fields(node):
            _node_types(getattr(node, f.name), seen)


def test_corpus_uses_every_construct():
    seen: set[str] = set()
    for path in [*CORPUS.glob("*.tl"), *(CORPUS / "lib").glob("*.tl")]:
        try:
            _node_types(parse(path.read_text(encoding="utf-8"), path.name), seen)
        except ScriptError:
            continue  # the syntax-error programs
    constructs = {
        name
        for name, cls in vars(ast).items()
        if isinstance(cls, type) and issubclass(cls, ast.Node) and cls is not ast.Node
    }
    assert sorted(constructs - LOGIC - seen) == []
