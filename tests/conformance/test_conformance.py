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

from conformance.run import DEFAULT_DEPS_DIR, OPSETS, install_deps, reached_program, suite_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# CI keeps a stable 1-in-N sample of the fp16 ML Program cases of every test file.
CI_SAMPLE = 25
CI_MIN_PASS_RATE = 0.98
# ... and of the neuralnetwork-backend cases (iOS14), and of the wheel suites' cases.
NN_CI_SAMPLE = 10
WHEEL_CI_SAMPLE = 2


def run_cases(targets: list[str], results: Path, *extra: str, sabotage: bool = False,
              fp32: bool = False, timeout: int = 1200, excludes: Path | None = None,
              pythonpath: str = "") -> list[dict]:
    env = dict(os.environ)
    env.update(
        TL_CONFORMANCE_SABOTAGE="1" if sabotage else "0",
        INCLUDE_MIL_FP32_UNIT_TESTS="1" if fp32 else "0",
        TL_CONFORMANCE_DEVICE="cpu",
    )
    env.pop("TL_CONFORMANCE_BACKEND", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH", "")) if p)
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


def _check_sample(records: list[dict], min_reached: int) -> None:
    reached = [r for r in records if r["reached"]]
    unexpected = [r for r in records if r["outcome"] in ("failed", "error")]
    rate = sum(r["outcome"] in ("passed", "xpassed") for r in reached) / max(1, len(reached))
    report = "\n".join(f"{r['id']}: {r['message']}" for r in unexpected[:40])
    assert not unexpected, f"{len(unexpected)} failures not listed in excludes.txt:\n{report}"
    assert len(reached) >= min_reached, f"only {len(reached)} cases reached the executor"
    assert rate >= CI_MIN_PASS_RATE, f"pass rate {rate:.3f} over {len(reached)} reached cases"


def test_ci_sample_of_neuralnetwork_backend(tmp_path):
    """The op tests' neuralnetwork-backend cases (iOS14 only) through our NeuralNetwork executor."""
    base = suite_dir()
    records = run_cases([str(base / "iOS14")], tmp_path / "nn.jsonl", "--tl-backend", "neuralnetwork",
                        "--tl-sample", str(NN_CI_SAMPLE), timeout=1800)
    assert records and all("'neuralnetwork'" in r["id"] for r in records)
    assert {r["model_type"] for r in records if r["reached"]} <= {"neuralNetwork", "neuralNetworkClassifier"}
    _check_sample(records, 100)


def _wheel_deps() -> str:
    """pandas & co. for the wheel suites, pip-installed once outside the venv (see run.py)."""
    try:
        install_deps(DEFAULT_DEPS_DIR)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot install pandas for the wheel suites: {e}")
    return str(DEFAULT_DEPS_DIR / "site")


def _wheel_dir() -> Path:
    return suite_dir().parents[4] / "test"


# Wheel-suite files of the CI subset: NeuralNetwork builder/converter tests, pipelines, sklearn models.
WHEEL_CI_FILES = (
    "neural_network/test_numpy_nn_layers.py", "neural_network/test_nn_builder.py", "neural_network/test_model.py",
    "neural_network/test_simple_nn_inference.py", "neural_network/test_quantization.py",
    "pipeline/test_pipeline.py", "pipeline/test_model_updatable.py",
    "sklearn_tests/test_standard_scalar.py", "sklearn_tests/test_glm_classifier.py",
    "sklearn_tests/test_normalizer.py", "sklearn_tests/test_one_hot_encoder.py", "sklearn_tests/test_imputer.py",
    "sklearn_tests/test_dict_vectorizer.py", "sklearn_tests/test_io_types.py", "sklearn_tests/test_SVC.py",
    "sklearn_tests/test_random_forest_classifier_numeric.py",
)


def test_ci_sample_of_wheel_suites(tmp_path):
    """A sample of the wheel's neural_network, pipeline and sklearn_tests suites through our executor."""
    pythonpath = _wheel_deps()
    targets = [str(_wheel_dir() / f) for f in WHEEL_CI_FILES]
    # The "stress" cases train dozens of models each (40-90 s apiece on 2 cores): `make conformance` runs them.
    records = run_cases(targets, tmp_path / "wheel.jsonl", "--tl-sample", str(WHEEL_CI_SAMPLE), "-k", "not stress",
                        timeout=1800, pythonpath=pythonpath)
    assert {r["id"].split("::")[0] for r in records} == set(WHEEL_CI_FILES)
    _check_sample(records, 120)


@pytest.mark.parametrize("group", ["neuralnetwork-backend", "wheel-suites"])
def test_sabotage_fails_neuralnetwork_and_classic_cases(tmp_path, group):
    if group == "neuralnetwork-backend":
        pythonpath, extra = "", ("--tl-backend", "neuralnetwork", "--tl-sample", "3")
        targets = [str(suite_dir() / t) for t in ("iOS14/test_activation.py::TestReLU",
                                                  "iOS14/test_conv.py::TestConv::test_padding_mode_stress",
                                                  "iOS14/test_pool.py::TestAvgPool")]
    else:
        pythonpath, extra = _wheel_deps(), ()
        targets = [str(_wheel_dir() / t) for t in ("sklearn_tests/test_glm_classifier.py",
                                                   "sklearn_tests/test_standard_scalar.py",
                                                   "neural_network/test_simple_nn_inference.py")]
    honest = {r["id"]: r for r in run_cases(targets, tmp_path / "h.jsonl", *extra, pythonpath=pythonpath)
              if r["reached"]}
    assert len(honest) >= 4 and all(r["outcome"] == "passed" for r in honest.values()), honest
    broken = {r["id"]: r for r in run_cases(targets, tmp_path / "s.jsonl", *extra, sabotage=True,
                                            pythonpath=pythonpath) if r["reached"]}
    assert set(broken) == set(honest)
    assert all(r["outcome"] == "failed" for r in broken.values()), [
        r["id"] for r in broken.values() if r["outcome"] != "failed"]
