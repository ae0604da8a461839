"""`tl run` and `tl repl` as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def tl(*args: str, stdin: str | None = None, env: dict | None = None, cwd: Path | None = None):
    full_env = {k: v for k, v in os.environ.items() if k != "TL_DEBUG"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tensorlogic", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=300,
    )


def test_tl_run_seed_script_from_another_folder(tmp_path):
    # paths inside the script are relative to the script, not to the current folder
    r = tl("run", str(EXAMPLES / "seed_coreml.tl"), "--device", "cpu", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "Model format: CoreML\nQuantization: F16\n"), r.stderr


def test_tl_run_error_is_one_located_message_without_traceback(tmp_path):
    script = tmp_path / "bad.tl"
    script.write_text('model = load_model("x.safetensors")\nprint(modle)\n')
    r = tl("run", str(script))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    first, source, caret = r.stderr.splitlines()[:3]
    assert first.endswith("bad.tl:1:9: load_model: " + first.split(": load_model: ", 1)[1])
    assert "x.safetensors" in first
    assert source == '    model = load_model("x.safetensors")'
    assert caret == "            ^"


def test_tl_debug_shows_the_traceback(tmp_path):
    script = tmp_path / "syntax.tl"
    script.write_text("x = [1, 2\n")
    r = tl("run", str(script), env={"TL_DEBUG": "1"})
    assert r.returncode != 0 and "Traceback" in r.stderr
    assert "expected ']' to close the '[' at line 1, column 5, found end of input" in r.stderr


def test_bare_tl_is_a_repl_that_keeps_state_and_history(tmp_path):
    hist = tmp_path / "hist"
    session = 'x = 2\nx * 21\nprint("hi")\nif x > 1 {\n  print("multi")\n}\nundefined\nprint(x + 1)\n'
    r = tl(stdin=session, env={"TL_HISTORY": str(hist)})
    assert r.returncode == 0
    assert r.stdout == "42\nhi\nmulti\n3\n"
    assert "<repl#5>:1:1: unknown name 'undefined'" in r.stderr
    try:
        import readline  # noqa: F401
    except ImportError:
        pytest.skip("no readline on this Python: history is not kept")
    saved = hist.read_text()
    assert "x * 21" in saved and 'print("hi")' in saved and "print(x + 1)" in saved


def test_tl_test_reports_each_block_and_exits_1_on_a_failure(tmp_path):
    script = tmp_path / "t.tl"
    script.write_text(
        "tensor w: float16[2] = [1.0, 2.0]\n"
        "fn double(x: int) -> int { x * 2 }\n"
        "test sums { assert_eq(double(21), 42)\n assert(sum(w) == 3.0) }\n"
        "test breaks { assert_eq(double(2), 5) }\n"
        'main { print("main does not run under tl test") }\n'
    )
    r = tl("test", str(script))
    lines = r.stdout.splitlines()
    assert r.returncode == 1, r.stderr
    assert lines[0] == "test sums ... ok"
    assert lines[1] == "test breaks ... FAILED"
    assert lines[2].startswith("  assert_eq: ") and lines[2].endswith("(" + str(script) + ":5:15)")
    assert lines[-1] == "1 passed, 1 failed"
    assert "main does not run" not in r.stdout
    script.write_text("test fine { assert(true) }\n")
    r = tl("test", str(script))
    assert (r.returncode, r.stdout) == (0, "test fine ... ok\n1 passed, 0 failed\n")


def test_tl_run_bench_times_each_bench_block_after_the_script(tmp_path):
    script = tmp_path / "b.tl"
    script.write_text('print("script")\nbench sum_loop { let s = 0\n for i in range(100) { s = s + i } }\n'
                      "bench empty { }\n")
    r = tl("run", str(script), "--bench")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "script"
    assert [line.split(":")[0] for line in lines[1:]] == ["bench sum_loop", "bench empty"]
    for line in lines[1:]:
        value, unit = line.split(": ")[1].split()
        assert unit == "ms" and float(value) >= 0.0
    assert tl("run", str(script)).stdout == "script\n"  # without --bench the blocks do not run
