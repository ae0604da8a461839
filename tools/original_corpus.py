"""Run the original TensorLogic's example programs with our ``tl run`` and compare with reference outputs.

The programs are read from a checkout of the original project (never copied here); the reference outputs
(``.expected`` files, one per program, written by hand from the original's semantics) live outside the repo.

Usage::

    python tools/original_corpus.py --orig /path/to/tensorlogic --list noc.txt --expected DIR
        [--jobs 2] [--timeout 60] [--only SUBSTR] [--report FILE.md] [--home DIR]
    python tools/original_corpus.py --orig /path/to/tensorlogic --list llm.txt --run-only [--home DIR] ...

``--run-only`` needs no references: a program passes when it exits 0 and writes no error line (``tl: error``,
a Python traceback) to stderr; a program that names an absolute ``/Users/...`` path cannot run unchanged and
is counted apart (ABSPATH). ``--home DIR`` runs the programs with ``HOME=DIR`` (where they find ``~/.llm``).

An ``.expected`` file holds the lines the program prints, one per line:

- numbers are compared numerically (relative 2e-2, absolute 2e-3); two integer literals must be equal;
- ``{*}`` inside a line matches any text; a line that is exactly ``{...}`` matches any number of lines;
- a first line ``#SKIP reason`` means the program is not run;
- a first line ``#ERROR reason`` means the original fails at run time: the lines that follow are what it
  prints before failing.  A ``#INTENT`` line may follow, with the output the program plainly means below it.
  We pass if we run to the end and print the intended output, or if we fail too (a clear error) after
  printing at least the original's lines -- and, where an intent is given, nothing that contradicts it.
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REL_TOL = 2e-2
ABS_TOL = 2e-3
WILDCARD = "{*}"
ANY_LINES = "{...}"

# A number, or inf/nan standing alone; a sign directly in front belongs to the number.
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|(?<![A-Za-z_])(?:inf|nan)(?![A-Za-z_0-9]))")


def _numbers_equal(expected: str, actual: str) -> bool:
    e, a = float(expected), float(actual)
    if math.isnan(e) or math.isnan(a):
        return math.isnan(e) and math.isnan(a)
    if _is_int(expected) and _is_int(actual):
        # Shapes, counts and ids: close is not good enough.
        return int(expected) == int(actual)
    if math.isinf(e) or math.isinf(a):
        return e == a
    return abs(e - a) <= max(ABS_TOL, REL_TOL * max(abs(e), abs(a)))


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?\d+", text) is not None


def _tokens(text: str) -> list[tuple[str, str]]:
    """Split a line into ("text", s) and ("num", s) pieces."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _NUMBER.finditer(text):
        if m.start() > pos:
            out.append(("text", text[pos : m.start()]))
        out.append(("num", m.group()))
        pos = m.end()
    if pos < len(text):
        out.append(("text", text[pos:]))
    return out


def _match_piece(piece: list[tuple[str, str]], actual: str, pos: int) -> int | None:
    """Match wildcard-free expected pieces at ``actual[pos:]``; the end position, or None."""
    for kind, text in piece:
        if kind == "text":
            if not actual.startswith(text, pos):
                return None
            pos += len(text)
        else:
            m = _NUMBER.match(actual, pos)
            if m is None or not _numbers_equal(text, m.group()):
                return None
            pos = m.end()
    return pos


def line_matches(expected: str, actual: str) -> bool:
    """One expected line against one actual line (trailing whitespace ignored)."""
    expected = expected.rstrip()
    pieces = [_tokens(p) for p in expected.split(WILDCARD)]

    def at_end(end: int | None) -> bool:
        return end is not None and not actual[end:].strip()

    def rest(i: int, pos: int) -> bool:
        if i == len(pieces) - 1:
            if i == 0:
                return at_end(_match_piece(pieces[i], actual, pos))
            # The last piece after a wildcard must end the line: try every start.
            return any(at_end(_match_piece(pieces[i], actual, s)) for s in range(pos, len(actual) + 1))
        if i == 0:
            end = _match_piece(pieces[0], actual, pos)
            return end is not None and rest(1, end)
        return any(
            (end := _match_piece(pieces[i], actual, s)) is not None and rest(i + 1, end)
            for s in range(pos, len(actual) + 1)
        )

    return rest(0, 0)


def _lines(text: str) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def match_output(expected: str, actual: str) -> str | None:
    """None when ``actual`` matches ``expected`` line by line, else a one-line description of the first difference."""
    return _match(expected, actual, prefix=False)


def match_prefix(expected: str, actual: str) -> str | None:
    """Like ``match_output``, but ``actual`` may stop early: it must match the first lines of ``expected``."""
    return _match(expected, actual, prefix=True)


def _match(expected: str, actual: str, prefix: bool) -> str | None:
    exp, act = _lines(expected), _lines(actual)
    failures: list[tuple[int, int]] = []  # (expected index, actual index) where a line comparison failed
    memo: dict[tuple[int, int], bool] = {}

    def walk(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(exp):
            ok = j == len(act)
            if not ok:
                failures.append((i, j))
        elif prefix and j == len(act):
            ok = True
        elif exp[i].strip() == ANY_LINES:
            ok = any(walk(i + 1, k) for k in range(j, len(act) + 1))
        elif j < len(act) and line_matches(exp[i], act[j]):
            ok = walk(i + 1, j + 1)
        else:
            failures.append((i, j))
            ok = False
        memo[key] = ok
        return ok

    if walk(0, 0):
        return None
    # Report the failure that got furthest into the expected text.
    i, j = max(failures)
    if i == len(exp):
        return f"line {j + 1}: unexpected extra output {act[j]!r}"
    if j >= len(act):
        return f"line {j + 1}: output ended, expected {exp[i]!r}"
    return f"line {j + 1}: expected {exp[i]!r}, got {act[j]!r}"


# ---------------------------------------------------------------------------------------------- expected files


@dataclass
class Expected:
    """A parsed ``.expected`` file."""

    kind: str  # "output", "error" or "skip"
    reason: str = ""
    body: str = ""
    intent: str | None = None


def parse_expected(text: str) -> Expected:
    """Split the ``#SKIP`` / ``#ERROR`` header and the ``#INTENT`` section from the expected lines."""
    lines = text.splitlines()
    first = lines[0] if lines else ""
    if first.startswith("#SKIP"):
        return Expected("skip", first[len("#SKIP") :].strip())
    if first.startswith("#ERROR"):
        rest = lines[1:]
        if "#INTENT" in rest:
            k = rest.index("#INTENT")
            return Expected("error", first[len("#ERROR") :].strip(), "\n".join(rest[:k]), "\n".join(rest[k + 1 :]))
        return Expected("error", first[len("#ERROR") :].strip(), "\n".join(rest))
    return Expected("output", body=text)


def expected_path(expected_dir: Path, program: str) -> Path:
    """Where the reference output of ``program`` (a path relative to the original's root) lives."""
    return expected_dir / (program.replace("/", "__") + ".expected")


# ---------------------------------------------------------------------------------------------- running


@dataclass
class Result:
    """The outcome for one program."""

    program: str
    status: str  # PASS WRONG ERROR TIMEOUT SKIP NOEXPECT ABSPATH
    detail: str = ""


@dataclass
class Run:
    rc: int | None  # None: timed out
    stdout: str = ""
    stderr: str = ""


def _last_line(text: str) -> str:
    """The error message of a failed run: the last stderr line mentioning an error, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower() or "panic" in ln.lower():
            return ln
    return lines[-1] if lines else "(no stderr)"


def classify(program: str, exp: Expected, run: Run) -> Result:
    """Compare one run with its reference."""
    if run.rc is None:
        return Result(program, "TIMEOUT")
    if exp.kind == "output":
        if run.rc != 0:
            return Result(program, "ERROR", _last_line(run.stderr))
        diff = match_output(exp.body, run.stdout)
        return Result(program, "PASS") if diff is None else Result(program, "WRONG", diff)
    # The original fails on this program.
    if run.rc != 0:
        # We may stop later than the original (we implement more), never earlier.
        # (trailing blank lines are ignored here too: the actual text loses them before comparing)
        diff = match_output("\n".join([*_lines(exp.body), ANY_LINES]), run.stdout)
        if diff is None and exp.intent is not None:
            diff = match_prefix(exp.intent, run.stdout)
        if diff is None:
            return Result(program, "PASS", f"fails like the original ({exp.reason})")
        return Result(program, "ERROR", f"{_last_line(run.stderr)} -- and before it, {diff}")
    if exp.intent is None:
        return Result(program, "WRONG", f"the original fails ({exp.reason}) but we exited 0")
    diff = match_output(exp.intent, run.stdout)
    if diff is None:
        return Result(program, "PASS", f"runs as intended where the original fails ({exp.reason})")
    return Result(program, "WRONG", diff)


def run_program(tl: Path, path: Path, timeout: float, home: Path | None = None) -> Run:
    """``tl run`` one program from its own folder, stdin empty, TL_DEVICE unset, HOME=home when given, and USER
    set as a login shell sets it (containers and CI often leave it out; examples/basics/builtins.tl reads it)."""
    env = {k: v for k, v in os.environ.items() if k != "TL_DEVICE"}
    env.setdefault("USER", getpass.getuser())
    if home is not None:
        env["HOME"] = str(home)
    try:
        proc = subprocess.run(
            [str(tl), "run", path.name],
            cwd=path.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Run(None)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def check_program(program: str, orig: Path, expected_dir: Path, tl: Path, timeout: float,
                  home: Path | None = None) -> Result:
    """Run one program (unless skipped or without reference) and classify it."""
    epath = expected_path(expected_dir, program)
    if not epath.exists():
        return Result(program, "NOEXPECT")
    exp = parse_expected(epath.read_text(encoding="utf-8"))
    if exp.kind == "skip":
        return Result(program, "SKIP", exp.reason)
    return classify(program, exp, run_program(tl, orig / program, timeout, home))


_ABSOLUTE = re.compile(r"[\"']/Users/")
_ERROR_LINE = re.compile(r"^(tl: error|Traceback \(most recent call last\))")


def first_error_line(stderr: str) -> str | None:
    """The first line of ``stderr`` that reports an error (``tl: error: ...`` or a Python traceback)."""
    for line in stderr.splitlines():
        if _ERROR_LINE.match(line.strip()):
            return line.strip()
    return None


def classify_run_only(program: str, run: Run) -> Result:
    """PASS when the run exited 0 with no error line; otherwise the first error line (or the exit status)."""
    if run.rc is None:
        return Result(program, "TIMEOUT")
    err = first_error_line(run.stderr)
    if run.rc == 0 and err is None:
        return Result(program, "PASS")
    return Result(program, "ERROR", err or f"exit status {run.rc}: {_last_line(run.stderr)}")


def run_only_program(program: str, orig: Path, tl: Path, timeout: float, home: Path | None = None) -> Result:
    """Run one program without a reference; programs that name /Users/... paths are not run (ABSPATH)."""
    path = orig / program
    code = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()
            if not ln.lstrip().startswith("//")]
    if any(_ABSOLUTE.search(ln) for ln in code):
        return Result(program, "ABSPATH", "names an absolute /Users/... path")
    return classify_run_only(program, run_program(tl, path, timeout, home))


@dataclass
class Summary:
    results: list[Result] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def line(self) -> str:
        failed = self.count("WRONG") + self.count("ERROR") + self.count("TIMEOUT")
        kinds = ("PASS", "WRONG", "ERROR", "TIMEOUT", "SKIP", "NOEXPECT", "ABSPATH")
        per = ", ".join(f"{s} {self.count(s)}" for s in kinds)
        return f"{self.count('PASS')} passed, {failed} failed ({per})"


def write_report(path: Path, summary: Summary) -> None:
    """A markdown table of every program's outcome."""
    rows = ["# Original corpus", "", summary.line(), "", "| program | result | detail |", "|---|---|---|"]
    for r in summary.results:
        detail = r.detail.replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{r.program}` | {r.status} | {detail} |")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit status 1 when any program failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orig", type=Path, required=True, help="checkout of the original project")
    ap.add_argument("--list", type=Path, required=True, help="file of program paths relative to --orig")
    ap.add_argument("--expected", type=Path, default=None, help="folder of .expected files")
    ap.add_argument("--run-only", action="store_true", help="no references: pass = exit 0 and no error line")
    ap.add_argument("--home", type=Path, default=None, help="run the programs with HOME set to this folder")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--only", default=None, help="run only programs whose path contains this")
    ap.add_argument("--report", type=Path, default=None, help="write a markdown report here")
    ap.add_argument("--tl", type=Path, default=Path(__file__).resolve().parent.parent / ".venv" / "bin" / "tl")
    args = ap.parse_args(argv)
    if args.expected is None and not args.run_only:
        ap.error("--expected is required unless --run-only is given")

    programs = [ln.strip() for ln in args.list.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if args.only:
        programs = [p for p in programs if args.only in p]
    orig, tl = args.orig.resolve(), args.tl.resolve()
    home = args.home.resolve() if args.home else None

    summary = Summary()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        if args.run_only:
            futures = [pool.submit(run_only_program, p, orig, tl, args.timeout, home) for p in programs]
        else:
            expected_dir = args.expected.resolve()
            futures = [pool.submit(check_program, p, orig, expected_dir, tl, args.timeout, home) for p in programs]
        for fut in futures:
            r = fut.result()
            summary.results.append(r)
            print(f"{r.status:8} {r.program}" + (f"  -- {r.detail}" if r.detail else ""), flush=True)
    print(summary.line())
    if args.report:
        write_report(args.report, summary)
    failed = summary.count("WRONG") + summary.count("ERROR") + summary.count("TIMEOUT")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
