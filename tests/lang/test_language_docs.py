"""docs/LANGUAGE.md and the README's language example stay true.

- The builtin reference of docs/LANGUAGE.md is what tools/gen_builtin_docs.py writes from the registry now,
  so a builtin added without running the tool fails here.
- Every ```tl block of docs/LANGUAGE.md runs; the blocks after it say what it must do: ```output is its
  exact stdout, ```stderr its exact stderr (warnings), ```error the exact text ``tl`` shows when it stops
  (``tl: error: FILE:LINE:COL: message`` and the source line with a caret). Each ```tl block needs at least
  an output or an error block, so no example in the document goes untested. A ```tl file=PATH block is not
  run: it is written to PATH for the examples that import it.
- The README's language block runs as written on the bundled example model.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tensorlogic.errors import ScriptError
from tensorlogic.lang.evaluator import ScriptInterpreter
from tensorlogic.lang.values import Context

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "LANGUAGE.md"
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
TOOL = ROOT / "tools" / "gen_builtin_docs.py"
SCRIPT = "example.tl"  # the file name the examples' messages show

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def _load_tool():
    spec = importlib.util.spec_from_file_location("gen_builtin_docs", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_builtin_docs"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Example:
    line: int
    source: str
    output: str | None = None
    stderr: str | None = None
    error: str | None = None
    files: dict[str, str] = field(default_factory=dict)


def _fences(text: str) -> list[tuple[str, str, int]]:
    """(info string, body, line of the opening fence) of every fenced block, in order."""
    return [(m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1) for m in _FENCE.finditer(text)]


def parse_examples(text: str) -> list[Example]:
    """The runnable examples of a document: each ```tl block with the result blocks that follow it."""
    fences = _fences(text)
    files = {}
    for info, body, _ in fences:
        words = info.split()
        if words[:1] == ["tl"] and len(words) == 2 and words[1].startswith("file="):
            files[words[1].removeprefix("file=")] = body
    examples: list[Example] = []
    i = 0
    while i < len(fences):
        info, body, line = fences[i]
        i += 1
        if info != "tl":
            continue
        ex = Example(line, body, files=files)
        for kind in ("output", "stderr", "error"):
            if i < len(fences) and fences[i][0] == kind:
                setattr(ex, kind, fences[i][1])
                i += 1
        examples.append(ex)
    return examples


def run_example(ex: Example, base: Path) -> tuple[str, str, str | None]:
    """Run one example in ``base``: its stdout, its stderr and, if it stopped, what tl prints for the error."""
    for name, body in ex.files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    interp = ScriptInterpreter(Context(base_dir=base, out=out, err=err, device="cpu"))
    try:
        interp.run(ex.source, SCRIPT)
    except ScriptError as e:
        return out.getvalue(), err.getvalue(), f"tl: error: {e}\n"
    return out.getvalue(), err.getvalue(), None


DOC_EXAMPLES = parse_examples(DOC.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- the builtin reference


def test_builtin_reference_is_generated_from_the_registry():
    tool = _load_tool()
    text = DOC.read_text(encoding="utf-8")
    section = tool.current_section(text)
    assert section is not None, f"docs/LANGUAGE.md lacks the {tool.START} ... {tool.END} markers"
    assert section == tool.render(), "the builtin reference is out of date: run python tools/gen_builtin_docs.py"


def test_builtin_reference_lists_every_builtin_with_its_signature():
    from tensorlogic.lang.builtins import BUILTINS

    tool = _load_tool()
    section = tool.current_section(DOC.read_text(encoding="utf-8"))
    assert section is not None
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) == len(BUILTINS)
    # Hand-written expectations of the rendering, from the Python signatures of these builtins.
    assert tool.signature_text(BUILTINS["softmax"]) == "softmax(x, dim: -1)"
    assert tool.signature_text(BUILTINS["zeros"]) == "zeros(shape..., dtype?, device?)"
    assert tool.signature_text(BUILTINS["split"]) == "split(x, size, dim: 0, all: false)"
    assert tool.signature_text(BUILTINS["aggregate_neighbors"]) == (
        'aggregate_neighbors(node_features, num_neighbors, aggregation: "mean")'
    )
    assert tool.signature_text(BUILTINS["IntVec::new"]) == "IntVec::new()"
    assert "| `assert_about_eq(left, right, tol?)` |  | assert_about_eq(a, b, tol): every \\|a - b\\| < tol" in section


def test_the_tool_check_mode_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    tool = _load_tool()
    stale = tmp_path / "LANGUAGE.md"
    stale.write_text(f"# doc\n\n{tool.START}\nold\n{tool.END}\n\ntail\n", encoding="utf-8")
    monkeypatch.setattr(tool, "DOC", stale)
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    assert tool.main(["--check"]) == 1
    assert "LANGUAGE.md is out of date; run python tools/gen_builtin_docs.py" in capsys.readouterr().err
    assert tool.main([]) == 0
    text = stale.read_text(encoding="utf-8")
    assert text.startswith("# doc\n\n") and text.endswith("\n\ntail\n") and "| `softmax(x, dim: -1)` |" in text
    assert tool.main(["--check"]) == 0


# ---------------------------------------------------------------------------------------------- the examples


def test_the_document_has_tested_examples():
    assert len(DOC_EXAMPLES) >= 40
    for ex in DOC_EXAMPLES:
        assert ex.output is not None or ex.error is not None, (
            f"docs/LANGUAGE.md:{ex.line}: a ```tl block needs an ```output or ```error block after it "
            "(use ```text for an example that is not meant to run)"
        )


@pytest.mark.parametrize("ex", DOC_EXAMPLES, ids=[f"LANGUAGE.md:{ex.line}" for ex in DOC_EXAMPLES])
def test_doc_example(ex: Example, tmp_path):
    out, err, error = run_example(ex, tmp_path)
    where = f"docs/LANGUAGE.md:{ex.line}"
    if ex.error is None:
        assert error is None, f"{where}: the example stopped: {error}"
    else:
        assert error == ex.error, f"{where}: a different error"
    assert out == (ex.output or ""), f"{where}: different output"
    if ex.stderr is not None:
        assert err == ex.stderr, f"{where}: different warnings"


def test_parse_examples_pairs_blocks():
    text = (
        "```tl file=lib/a.tl\nfn f() -> int { 1 }\n```\n"
        "```tl\nprint(1)\n```\n```output\n1\n```\n"
        "```text\nnot run\n```\n"
        "```tl\npanic(\"x\")\n```\n```error\nboom\n```\n"
    )
    got = parse_examples(text)
    assert [(e.line, e.source, e.output, e.error) for e in got] == [
        (4, "print(1)\n", "1\n", None),
        (13, 'panic("x")\n', None, "boom\n"),
    ]
    assert got[0].files == {"lib/a.tl": "fn f() -> int { 1 }\n"}


# ---------------------------------------------------------------------------------------------- the README


def test_readme_language_example_runs_on_the_bundled_model():
    text = README.read_text(encoding="utf-8")
    start = text.index("## The TensorLogic language")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    examples = parse_examples(section)
    assert examples, "the README's language section has no ```tl block"
    ex = examples[0]
    assert ex.output is not None, "the README's language block needs its output after it"
    out = io.StringIO()
    interp = ScriptInterpreter(Context(base_dir=EXAMPLES, out=out, err=io.StringIO(), device="cpu"))
    interp.run(ex.source, "readme.tl")
    assert out.getvalue() == ex.output
    assert "docs/LANGUAGE.md" in section
