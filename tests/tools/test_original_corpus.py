"""The corpus runner's comparator and classification, on made-up outputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "tools" / "original_corpus.py"
_spec = importlib.util.spec_from_file_location("original_corpus", _PATH)
assert _spec is not None and _spec.loader is not None
oc = importlib.util.module_from_spec(_spec)
sys.modules["original_corpus"] = oc  # dataclasses look their module up by name
_spec.loader.exec_module(oc)
match_output = oc.match_output


# ---------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "expected, actual",
    [
        ("total: 1", "total: 1.0"),
        ("total: 1.0", "total: 1.0000"),
        ("[0.5, 2.25]", "[0.5000, 2.2500]"),
        ("mean = 0.333", "mean = 0.3333333"),  # within 2e-2 relative
        ("x = 1000.0", "x = 1010.0"),  # 1% off: inside the f16 tolerance
        ("tiny 0.0", "tiny 0.0015"),  # absolute 2e-3 near zero
        ("v = -0.0", "v = 0.0000"),
        ("eps 1e-5", "eps 0.00001"),
        ("big inf", "big inf"),
        ("odd nan", "odd nan"),
    ],
)
def test_numbers_compare_with_tolerance(expected: str, actual: str) -> None:
    assert match_output(expected, actual) is None


@pytest.mark.parametrize(
    "expected, actual",
    [
        ("total: 1.0", "total: 1.1"),  # 10% off
        ("x = 1000.0", "x = 1030.0"),  # 3% off
        ("tiny 0.0", "tiny 0.003"),
        ("shape [100, 64]", "shape [101, 64]"),  # two integers must be equal
        ("count 7", "count 8"),
        ("v = inf", "v = 65504.0"),
        ("v = 1.0", "v = -1.0"),
    ],
)
def test_numbers_outside_tolerance_differ(expected: str, actual: str) -> None:
    assert match_output(expected, actual) is not None


def test_text_around_numbers_must_match_exactly() -> None:
    assert match_output("Hits@10: 1", "Hits@10: 1") is None
    assert match_output("Hits@10: 1", "Hits@1: 1") is not None
    assert match_output("loss = 0.5", "loss: 0.5") is not None
    assert match_output("inference done", "inference done") is None  # 'inf' inside a word is text


def test_trailing_whitespace_and_final_blank_lines_are_ignored() -> None:
    assert match_output("a\nb\n", "a  \nb\n\n\n") is None
    assert match_output("a\n\nb", "a\nb") is not None  # an inner blank line counts


# ---------------------------------------------------------------------------------------------- wildcards


def test_star_matches_any_text_inside_a_line() -> None:
    assert match_output("token id: {*}", "token id: 417") is None
    assert match_output("took {*} ms, ok", "took 3.25 ms, ok") is None
    assert match_output("id: {*}", "id: ") is None
    assert match_output("a{*}b{*}c", "a--b--c") is None
    assert match_output("took {*} ms, ok", "took 3.25 ms, failed") is not None
    assert match_output("[{*}] (shape=[3, 4])", "[[1.0, 2.0], ...] (shape=[3, 5])") is not None


def test_star_leaves_numbers_after_it_checked() -> None:
    assert match_output("{*} = 2.0", "x + y = 2.0000") is None
    assert match_output("{*} = 2.0", "x + y = 2.5") is not None


def test_any_lines_matches_zero_or_more_lines() -> None:
    expected = "start\n{...}\nend 3"
    assert match_output(expected, "start\nend 3") is None
    assert match_output(expected, "start\nnoise\nmore noise\nend 3.0") is None
    assert match_output(expected, "start\nnoise\nend 4") is not None
    assert match_output("{...}", "") is None


# ---------------------------------------------------------------------------------------------- mismatches


def test_mismatch_names_the_first_differing_line() -> None:
    diff = match_output("one\ntwo 2\nthree", "one\ntwo 5\nthree")
    assert diff is not None and diff.startswith("line 2:")
    assert "'two 2'" in diff and "'two 5'" in diff


def test_prefix_match_allows_stopping_early_but_not_diverging() -> None:
    assert oc.match_prefix("a\nb 2\nc", "a\nb 2.0") is None
    assert oc.match_prefix("a\nb 2\nc", "") is None
    assert oc.match_prefix("a\nb 2\nc", "a\nb 3") is not None
    assert oc.match_prefix("a", "a\nmore") is not None


def test_missing_and_extra_lines_are_reported() -> None:
    missing = match_output("a\nb\nc", "a\nb")
    assert missing is not None and "ended" in missing and "'c'" in missing
    extra = match_output("a", "a\nsurprise")
    assert extra is not None and "extra" in extra and "surprise" in extra


# ---------------------------------------------------------------------------------------------- classification


def test_expected_header_parsing() -> None:
    skip = oc.parse_expected("#SKIP needs the network\n")
    assert (skip.kind, skip.reason) == ("skip", "needs the network")
    err = oc.parse_expected("#ERROR undefined function foo\nbefore\n#INTENT\nbefore\nafter\n")
    assert (err.kind, err.reason) == ("error", "undefined function foo")
    assert (err.body, err.intent) == ("before", "before\nafter")
    plain = oc.parse_expected("x 1\n")
    assert (plain.kind, plain.body) == ("output", "x 1\n")


def test_classify_outcomes() -> None:
    out = oc.parse_expected("x 1\n")
    assert oc.classify("p", out, oc.Run(0, "x 1.0\n")).status == "PASS"
    assert oc.classify("p", out, oc.Run(0, "x 2\n")).status == "WRONG"
    failed = oc.classify("p", out, oc.Run(1, "", "Traceback\nError: bad thing at 3:4\n"))
    assert (failed.status, failed.detail) == ("ERROR", "Error: bad thing at 3:4")
    assert oc.classify("p", out, oc.Run(None)).status == "TIMEOUT"
    pointed = oc.classify("p", out, oc.Run(2, "", "tl: error: f.tl:3:5: bad thing\n    let x = y\n        ^\n"))
    assert pointed.detail == "tl: error: f.tl:3:5: bad thing"  # the message, not the caret under the source line

    err = oc.parse_expected("#ERROR the original stops\nbefore\n")
    assert oc.classify("p", err, oc.Run(1, "before\n", "boom")).status == "PASS"
    assert oc.classify("p", err, oc.Run(1, "before\nfurther\n", "boom")).status == "PASS"  # we stop later
    assert oc.classify("p", err, oc.Run(1, "", "boom")).status == "ERROR"  # we stop earlier
    assert oc.classify("p", err, oc.Run(1, "other\n", "boom")).status == "ERROR"
    assert oc.classify("p", err, oc.Run(0, "before\nafter\n")).status == "WRONG"  # no intent to check against

    at_once = oc.parse_expected("#ERROR the original stops before printing anything\n")
    assert oc.classify("p", at_once, oc.Run(1, "", "boom")).status == "PASS"
    assert oc.classify("p", at_once, oc.Run(1, "some\nlines\n", "boom")).status == "PASS"
    blank_last = oc.parse_expected("#ERROR stops\nbefore\n\n")
    assert oc.classify("p", blank_last, oc.Run(1, "before\n\n", "boom")).status == "PASS"
    assert oc.classify("p", blank_last, oc.Run(1, "before\n", "boom")).status == "PASS"  # trailing blanks ignored

    intent = oc.parse_expected("#ERROR the original stops\nbefore\n#INTENT\nbefore\nafter 2\nend\n")
    assert oc.classify("p", intent, oc.Run(0, "before\nafter 2.0\nend\n")).status == "PASS"
    assert oc.classify("p", intent, oc.Run(0, "before\nafter 3\nend\n")).status == "WRONG"
    assert oc.classify("p", intent, oc.Run(1, "before\n", "boom")).status == "PASS"
    assert oc.classify("p", intent, oc.Run(1, "before\nafter 2\n", "boom")).status == "PASS"
    assert oc.classify("p", intent, oc.Run(1, "before\nafter 5\n", "boom")).status == "ERROR"  # contradicts


def test_expected_path_flattens_the_program_path(tmp_path: Path) -> None:
    assert oc.expected_path(tmp_path, "examples/basics/fib.tl") == tmp_path / "examples__basics__fib.tl.expected"


def test_runner_end_to_end_with_a_stand_in_tl(tmp_path: Path) -> None:
    # A fake `tl` that prints the program's first line, so the runner's plumbing is tested without our language.
    fake_tl = tmp_path / "tl"
    fake_tl.write_text(
        f"#!{sys.executable}\nimport sys, os\n"
        "assert 'TL_DEVICE' not in os.environ\n"
        "src = open(sys.argv[2]).read()\n"
        "if 'fail' in src: sys.exit('Error: it failed')\n"
        "print(src.splitlines()[0])\n"
    )
    fake_tl.chmod(0o755)
    orig = tmp_path / "orig"
    (orig / "ex").mkdir(parents=True)
    (orig / "ex" / "good.tl").write_text("hello 1\n")
    (orig / "ex" / "bad.tl").write_text("hello 2\n")
    (orig / "ex" / "boom.tl").write_text("fail\n")
    (orig / "ex" / "none.tl").write_text("x\n")
    listing = tmp_path / "list.txt"
    listing.write_text("ex/good.tl\nex/bad.tl\nex/boom.tl\nex/none.tl\n")
    expected = tmp_path / "exp"
    expected.mkdir()
    (expected / "ex__good.tl.expected").write_text("hello 1.0\n")
    (expected / "ex__bad.tl.expected").write_text("hello 1\n")
    (expected / "ex__boom.tl.expected").write_text("nothing\n")
    report = tmp_path / "report.md"
    argv = ["--orig", str(orig), "--list", str(listing), "--expected", str(expected), "--tl", str(fake_tl)]
    rc = oc.main([*argv, "--report", str(report), "--jobs", "2"])
    assert rc == 1
    text = report.read_text()
    assert "1 passed, 2 failed" in text
    assert "| `ex/good.tl` | PASS |" in text and "| `ex/bad.tl` | WRONG |" in text
    assert "| `ex/boom.tl` | ERROR | Error: it failed |" in text and "| `ex/none.tl` | NOEXPECT |" in text
    assert oc.main([*argv, "--only", "good"]) == 0
