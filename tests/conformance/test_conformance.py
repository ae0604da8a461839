"""coremltools' op tests through our executor: the sabotage check, and the CI sample of every family.

Both run pytest in a subprocess with ``tests.conformance.plugin`` (its patches must precede the import
of coremltools' test modules, and must not leak into this process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("coremltools")
pytest.importorskip("scipy")

from conformance.run import OPSETS, reached_program, suite_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# CI keeps a stable 1-in-N sample of the fp16 ML Program cases of every test file.
CI_SAMPLE = 25
CI_MIN_PASS_RATE = 0.98


def run_cases(targets: list[str], results: Path, *extra: str, sabotage: bool = False,
              fp32: bool = False, timeout: int = 1200, excludes: Path | None = None) -> list[dict]:
    env = dict(os.environ)
    env.update(
        TL_CONFORMANCE_SABOTAGE="1" if sabotage else "0",
        INCLUDE_MIL_FP32_UNIT_TESTS="1" if fp32 else "0",
        TL_CONFORMANCE_DEVICE="cpu",
    )
    if excludes is not None:
        env["TL_CONFORMANCE_EXCLUDES"] = str(excludes)
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.conformance.plugin", "-p", "no:cacheprovider", "-q",
           "-W", "ignore", "--tl-results", str(results), *extra, *targets]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode in (0, 1), (proc.stdout + proc.stderr)[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    return [r for r in records if not r.get("summary")]


def test_sabotage_turns_passes_into_failures(tmp_path):
    base = suite_dir()
    targets = [str(base / t) for t in (
        "iOS14/test_activation.py::TestReLU",
        "iOS14/test_conv.py::TestConv::test_conv_bias_fusion",
        "iOS14/test_pool.py::TestAvgPool::test_builder_to_backend_smoke",
        "iOS14/test_linear.py::TestLinear::test_builder_to_backend_smoke",
        "iOS14/test_control_flow.py::TestWhileLoop",
        "iOS18/test_states.py::TestReadState",
    )]
    honest = run_cases(targets, tmp_path / "honest.jsonl")
    reached = {r["id"]: r for r in honest if r["reached"]}
    assert len(reached) >= 8, f"too few cases reached the executor: {len(reached)}"
    assert all(r["outcome"] == "passed" for r in reached.values()), [
        (r["id"], r["message"]) for r in reached.values() if r["outcome"] != "passed"
    ]
    sabotaged = run_cases(targets, tmp_path / "sabotage.jsonl", sabotage=True)
    broken = {r["id"]: r for r in sabotaged if r["reached"]}
    assert set(broken) == set(reached)
    assert all(r["outcome"] == "failed" for r in broken.values()), [
        r["id"] for r in broken.values() if r["outcome"] != "failed"
    ]
    # cases that never reach the executor are unaffected by the sabotage
    assert {r["id"] for r in honest if not r["reached"]} == {r["id"] for r in sabotaged if not r["reached"]}


def test_excludes_file_marks_known_failures(tmp_path):
    base = suite_dir()
    target = str(base / "iOS14/test_activation.py::TestReLU")
    excludes = tmp_path / "excludes.txt"
    excludes.write_text("# comment\n"
                        "iOS14/test_activation.py::TestReLU::test_builder_to_backend_smoke[*fp16*] | known: reason\n"
                        "iOS14/test_activation.py::TestReLU::test_builder_eval | [skip] never run\n")
    records = {r["id"].split("[")[0]: r for r in run_cases([target], tmp_path / "r.jsonl", excludes=excludes,
                                                          sabotage=True)}
    assert records["iOS14/test_activation.py::TestReLU::test_builder_to_backend_smoke"]["outcome"] == "xfailed"
    assert records["iOS14/test_activation.py::TestReLU::test_builder_eval"]["outcome"] == "xfailed"
    assert not records["iOS14/test_activation.py::TestReLU::test_builder_eval"]["reached"]


def test_ci_sample_of_every_family(tmp_path):
    base = suite_dir()
    targets = [str(base / opset) for opset in OPSETS]
    records = run_cases(targets, tmp_path / "ci.jsonl", "--tl-sample", str(CI_SAMPLE), timeout=1800)
    files = {p.relative_to(base).as_posix() for opset in OPSETS for p in (base / opset).glob("test_*.py")}
    seen = {r["id"].split("::")[0] for r in records}
    assert seen >= files, sorted(files - seen)
    reached = [r for r in records if reached_program(r)]
    unexpected = [r for r in reached if r["outcome"] in ("failed", "error")]
    rate = sum(r["outcome"] in ("passed", "xpassed") for r in reached) / max(1, len(reached))
    report = "\n".join(f"{r['id']}: {r['message']}" for r in unexpected[:40])
    assert not unexpected, f"{len(unexpected)} failures not listed in excludes.txt:\n{report}"
    assert rate >= CI_MIN_PASS_RATE, f"pass rate {rate:.3f} over {len(reached)} reached cases"
