"""Run coremltools' own tests on TensorLogic and write the tables of docs/CONFORMANCE.md.

    python -m tests.conformance.run --jobs 2              # everything (make conformance): op tests of both
                                                          # backends, fp16 + fp32, and the wheel's suites
    python -m tests.conformance.run --suites ops --backend mlprogram --opsets iOS17 --families conv --no-write
    python -m tests.conformance.run --suites ops --backend neuralnetwork --no-write   # NN-backend op cases
    python -m tests.conformance.run --suites pipeline,sklearn_tests --no-write
    python -m tests.conformance.run --sample 40           # a sample of everything

One pytest process per test file (``--jobs`` at a time), each loading ``tests.conformance.plugin``
and writing JSON lines; this script gathers them. The pass rate counts only cases that reached our
executor (called predict or make_state); known failures listed in excludes.txt count as failures.

The wheel's suites (``--suites``: neural_network, pipeline, sklearn_tests, xgboost_tests) need packages
the project does not depend on: pandas for all of them, xgboost 1.4.2 (the newest coremltools 9 accepts)
for xgboost_tests, and xgboost 1.4.2 needs numpy < 2. Unless ``--no-install-deps``, missing ones are
pip-installed into ``--deps-dir`` (xgboost and numpy 1.26 into folders of their own, used only by the
xgboost_tests processes); they reach the test processes through PYTHONPATH and never enter the venv.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPSETS = ("iOS14", "iOS15", "iOS16", "iOS17", "iOS18")
# The wheel's test folders (coremltools/test/<suite>) that run models we can execute.
SUITES = ("neural_network", "pipeline", "sklearn_tests", "xgboost_tests")
BACKENDS = ("mlprogram", "neuralnetwork", "all")
NN_MODEL_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
# Packages for the wheel's suites, installed outside the venv (see the module docstring).
DEPS = {
    # every wheel suite; libsvm 3.30 still has the module-level constants coremltools' converter reads
    "site": ("pandas==2.3.3", "python-dateutil", "pytz", "tzdata", "six", "libsvm-official==3.30.0"),
    "xgboost": ("xgboost==1.4.2", "setuptools<81"),  # xgboost_tests only (xgboost imports pkg_resources)
    "numpy1": ("numpy==1.26.4",),  # xgboost_tests only: xgboost 1.4.2 fails on numpy 2
}
DEFAULT_DEPS_DIR = ROOT / ".venv" / "conformance-deps"
OUTCOMES = ("passed", "failed", "error", "xfailed", "xpassed", "skipped")


def suite_dir() -> Path:
    spec = importlib.util.find_spec("coremltools")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("coremltools is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "converters/mil/mil/ops/tests"


def wheel_suite_files(suites: Iterable[str]) -> list[Path]:
    """The test files of the wheel's ``coremltools/test/<suite>`` folders."""
    base = suite_dir().parents[4] / "test"
    return [p for suite in suites for p in sorted((base / suite).glob("test_*.py"))]


def install_deps(deps_dir: Path, xgboost: bool = False) -> None:
    """pip-install the wheel suites' extra packages into ``deps_dir`` (once), outside the venv."""
    for name in ("site", "xgboost", "numpy1") if xgboost else ("site",):
        folder = deps_dir / name
        if folder.is_dir() and any(folder.iterdir()):
            continue
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder), *DEPS[name]]
        subprocess.run(cmd, check=True)


def deps_path(test_file: Path, deps_dir: Path) -> str:
    """The PYTHONPATH entries a wheel-suite file needs (xgboost and numpy 1 only for xgboost_tests)."""
    names = ("numpy1", "xgboost", "site") if test_file.parent.name == "xgboost_tests" else ("site",)
    return os.pathsep.join(str(deps_dir / n) for n in names if (deps_dir / n).is_dir())


def test_files(opsets: Iterable[str], families: Iterable[str] | None) -> list[Path]:
    base = suite_dir()
    wanted = {f.strip() for f in families} if families else None
    files = []
    for opset in opsets:
        for path in sorted((base / opset).glob("test_*.py")):
            family = path.stem[len("test_"):]
            if wanted is None or family in wanted:
                files.append(path)
    return files


def run_file(path: Path, out: Path, sample: int, fp32: bool, device: str, sabotage: bool,
             extra: list[str], timeout: int, backend: str = "mlprogram", pythonpath: str = "") -> tuple[Path, int, str]:
    env = dict(os.environ)
    env["TL_CONFORMANCE_BACKEND"] = backend
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH", "")) if p)
    env["INCLUDE_MIL_FP32_UNIT_TESTS"] = "1" if fp32 else "0"
    env["TL_CONFORMANCE_DEVICE"] = device
    env["TL_CONFORMANCE_SABOTAGE"] = "1" if sabotage else "0"
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [
        sys.executable, "-m", "pytest", "-p", "tests.conformance.plugin", "-p", "no:cacheprovider",
        "-q", "-W", "ignore", "--tl-results", str(out), "--tl-sample", str(sample), str(path), *extra,
    ]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        tail = (proc.stdout + proc.stderr)[-2000:]
        return path, proc.returncode, tail
    except subprocess.TimeoutExpired:
        return path, -1, f"timed out after {timeout} s"


def read_results(paths: Iterable[Path]) -> tuple[list[dict], int]:
    cases, nn = [], 0
    for p in paths:
        if not p.is_file():
            continue
        for line in p.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("summary"):
                nn += int(rec.get("deselected_neuralnetwork", 0))
            else:
                cases.append(rec)
    return cases, nn


def precision_of(case_id: str) -> str:
    if "precision='fp32'" in case_id or "'fp32')" in case_id:
        return "fp32"
    if "precision='fp16'" in case_id or "'fp16')" in case_id:
        return "fp16"
    return "n/a"


def group_of(case_id: str) -> str:
    """``iOS14/test_conv.py::TestConv`` from a case id."""
    parts = case_id.split("::")
    return "::".join(parts[:2]) if len(parts) > 2 else parts[0]


def is_pass(case: dict) -> bool:
    return case["outcome"] in ("passed", "xpassed")


def reached_program(case: dict) -> bool:
    """Reached our executor with an ML Program (a few backend-less cases build neuralnetwork models)."""
    return bool(case["reached"]) and case.get("model_type") in (None, "mlProgram")


def case_part(case: dict) -> str:
    """``mlprogram`` or ``neuralnetwork`` for an op-test case (by its backend), else the wheel suite's name."""
    cid = case["id"]
    if not cid.startswith("iOS"):
        return cid.split("/")[0]
    backend = case.get("backend") or ("neuralnetwork" if "'neuralnetwork'" in cid else None)
    return "neuralnetwork" if backend == "neuralnetwork" else "mlprogram"


def reached_any(case: dict) -> bool:
    """Reached our executor, whatever the model type (NeuralNetwork-backend cases, the wheel's suites)."""
    return bool(case["reached"])


def summarize(cases: list[dict], reached_fn=reached_program) -> dict:
    reached = [c for c in cases if reached_fn(c)]
    passed = sum(is_pass(c) for c in reached)
    widened = sum(is_pass(c) and bool(c.get("fp16_tolerance")) for c in reached)
    return {
        "cases": len(cases),
        "reached": len(reached),
        "passed_reached": passed,
        "widened": widened,
        "rate": passed / len(reached) if reached else 0.0,
        "strict_rate": (passed - widened) / len(reached) if reached else 0.0,
        "outcomes": Counter(c["outcome"] for c in cases),
    }


def render(cases: list[dict], nn: int, meta: dict) -> str:
    parts: dict[str, list[dict]] = defaultdict(list)
    for c in cases:
        parts[case_part(c)].append(c)
    program, network = parts.pop("mlprogram", []), parts.pop("neuralnetwork", [])
    lines = ["# Conformance: coremltools' own tests on TensorLogic", ""]
    lines += [
        "coremltools ships its own tests: the MIL op tests (`coremltools/converters/mil/mil/ops/tests/iOS14…iOS18`,",
        "run with the ML Program backend and, in iOS14, with the NeuralNetwork backend) and the wheel's",
        "`coremltools/test/<suite>` folders. On Linux they pass vacuously. `tests/conformance/plugin.py` opens",
        "their macOS gates and swaps coremltools' native prediction proxy for our executor, so every numeric",
        "comparison in them runs against TensorLogic. Generated by `python -m tests.conformance.run` — do not",
        "edit by hand.",
        "",
        f"- date: {meta['date']}",
        f"- coremltools {meta['coremltools']}, torch {meta['torch']}, device `{meta['device']}`",
        f"- command: `{meta['command']}`",
        f"- fp32 ML Program cases included (`INCLUDE_MIL_FP32_UNIT_TESTS=1`): {meta['fp32']}",
        "- sample: " + ("all cases" if meta["sample"] == 1 else f"1 in {meta['sample']}"),
        *(f"- note: {n}" for n in meta.get("notes", [])),
        f"- ML Program op tests: neuralnetwork-backend cases deselected there: {nn} (they run in their own "
        "section); backend-less cases that build a neuralnetwork model: "
        f"{sum(c['reached'] and not reached_program(c) for c in program)} (not in the ML Program rate)",
        "",
        "**Pass rate** = passed / cases that reached our executor (called `predict` or `make_state`).",
        "Known failures (`tests/conformance/excludes.txt`) count as failures here. Cases that never reach",
        "the executor (type inference, conversion-only checks) are listed but not in the rate.",
        "",
    ]
    if program:
        lines += _render_program(program)
    if network:
        lines += _render_network(network)
    if parts:
        lines += _render_suites(parts)
    lines.append("")
    return "\n".join(lines)


def _render_program(cases: list[dict]) -> list[str]:
    lines = [
        "# ML Program op tests",
        "",
        "**fp16 data in fp32 cases.** With `INCLUDE_MIL_FP32_UNIT_TESTS=1` many cases build programs that hold",
        "fp16 data (fp16 inputs, weights or palettes) yet compare at the fp32 tolerance (atol 1e-4) against a",
        "reference computed from the fp32 data, so any engine that honours the declared fp16 values misses by",
        "fp16 rounding (Apple's CI does not run these fp32 cases by default). When such a case fails at the fp32",
        "tolerance, the plugin compares it again at the tolerance the suite itself uses for fp16 programs; the",
        "column *fp16 tol.* counts the cases that passed only then, and the **strict pass rate** counts them",
        "as failures (`TL_CONFORMANCE_STRICT=1` turns the second comparison off).",
        "",
    ]
    total = summarize(cases)
    lines += ["## Summary", "", "| opset | precision | cases | reached | passed (reached) | fp16 tol. | pass rate | "
              "strict pass rate | failed | errors | known (xfail) | skipped |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for c in cases:
        by_key[(c["id"].split("/")[0], precision_of(c["id"]))].append(c)
    for key in sorted(by_key):
        s = summarize(by_key[key])
        o = s["outcomes"]
        lines.append(f"| {key[0]} | {key[1]} | {s['cases']} | {s['reached']} | {s['passed_reached']} | "
                     f"{s['widened']} | {100 * s['rate']:.2f}% | {100 * s['strict_rate']:.2f}% | {o['failed']} | "
                     f"{o['error']} | {o['xfailed']} | {o['skipped']} |")
    o = total["outcomes"]
    lines.append(f"| **all** | | **{total['cases']}** | **{total['reached']}** | **{total['passed_reached']}** | "
                 f"{total['widened']} | **{100 * total['rate']:.2f}%** | **{100 * total['strict_rate']:.2f}%** | "
                 f"{o['failed']} | {o['error']} | {o['xfailed']} | {o['skipped']} |")
    lines += ["", "## Per op (test class)", ""] + _class_table(cases, "MIL ops reached", reached_program)
    lines += _failures(cases, reached_program)
    lines.append("")
    return lines


def _failures(cases: list[dict], reached_fn) -> list[str]:
    failing = [c for c in cases if reached_fn(c) and not is_pass(c)]
    if not failing:
        return []
    lines = ["", "## Failures (first message per test class)", ""]
    seen: dict[str, dict] = {}
    for c in failing:
        seen.setdefault(group_of(c["id"]), c)
    for g, c in sorted(seen.items()):
        msg = (c.get("message") or c["outcome"]).replace("|", "\\|")
        n = sum(group_of(x["id"]) == g for x in failing)
        lines.append(f"- `{g}` ({n} failing): {msg[:200]}")
    return lines


def _class_table(cases: list[dict], what: str, reached_fn=reached_any) -> list[str]:
    lines = [f"| test class | {what} | reached | passed | failed | errors | known | skipped | not reached |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    groups: dict[str, list[dict]] = defaultdict(list)
    for c in cases:
        groups[group_of(c["id"])].append(c)
    for g in sorted(groups):
        cs = groups[g]
        reached = [c for c in cs if reached_fn(c)]
        oc = Counter(c["outcome"] for c in reached)
        kinds = sorted({op for c in reached for op in c.get("ops", [])})
        shown = ", ".join(kinds[:6]) + (", …" if len(kinds) > 6 else "")
        lines.append(
            f"| `{g}` | {shown} | {len(reached)} | {oc['passed'] + oc['xpassed']} | {oc['failed']} | {oc['error']} | "
            f"{oc['xfailed']} | {sum(c['outcome'] == 'skipped' for c in cs)} | {len(cs) - len(reached)} |"
        )
    return lines


def _summary_row(label: str, s: dict) -> str:
    o = s["outcomes"]
    rate = f"{100 * s['rate']:.2f}%" if s["reached"] else "—"
    return (f"| {label} | {s['cases']} | {s['reached']} | {s['passed_reached']} | {rate} | "
            f"{o['failed']} | {o['error']} | {o['xfailed']} | {o['skipped']} |")


SUMMARY_HEAD = ["| {} | cases | reached | passed (reached) | pass rate | failed | errors | known (xfail) | skipped |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]


def _render_network(cases: list[dict]) -> list[str]:
    lines = [
        "# NeuralNetwork-backend op tests",
        "",
        "The same op tests with `backend=('neuralnetwork', 'fp32')` (iOS14 only): coremltools converts each MIL",
        "program to a NeuralNetwork spec, which our NeuralNetwork executor (`runtime/nn`) runs. Compared at the",
        "suite's fp32 tolerance. Apple's own skips (`rdar://…`, TensorFlow not installed, \"no need to test fp16",
        "for neuralnetwork backend\") are in *skipped*.",
        "",
        "## Summary",
        "",
        SUMMARY_HEAD[0].format("opset"), SUMMARY_HEAD[1],
    ]
    by_opset: dict[str, list[dict]] = defaultdict(list)
    for c in cases:
        by_opset[c["id"].split("/")[0]].append(c)
    for opset in sorted(by_opset):
        lines.append(_summary_row(opset, summarize(by_opset[opset], reached_any)))
    if len(by_opset) > 1:
        lines.append(_summary_row("**all**", summarize(cases, reached_any)))
    lines += ["", "## Per op (test class)", ""] + _class_table(cases, "NeuralNetwork layers reached")
    lines += _failures(cases, reached_any)
    lines.append("")
    return lines


def _render_suites(parts: dict[str, list[dict]]) -> list[str]:
    lines = [
        "# The wheel's test suites",
        "",
        "`coremltools/test/<suite>`: NeuralNetwork specs built with `NeuralNetworkBuilder` or converted,",
        "pipelines, and scikit-learn / xgboost models converted by coremltools, each compared by the suite with",
        "the source library's own predictions. The suites need pandas and libsvm (libsvm-official 3.30), and",
        "xgboost_tests xgboost 1.4.2 (the newest coremltools 9 accepts) on numpy < 2: `run.py` pip-installs them",
        "outside the venv. Their `load_boston()` downloads a data set (no network here): the plugin substitutes",
        "Boston-shaped synthetic data (the tests compare against the source model trained on the same data, so",
        "any data serves). Cases needing TensorFlow are skipped by the suites themselves. Many cases check only",
        "the converted spec and never predict (*reached* counts those that did).",
        "",
        "## Summary",
        "",
        SUMMARY_HEAD[0].format("suite"), SUMMARY_HEAD[1],
    ]
    everything = [c for cs in parts.values() for c in cs]
    for suite in sorted(parts):
        lines.append(_summary_row(suite, summarize(parts[suite], reached_any)))
    lines.append(_summary_row("**all**", summarize(everything, reached_any)))
    lines += ["", "## Per test file", "", SUMMARY_HEAD[0].format("test file"), SUMMARY_HEAD[1]]
    files: dict[str, list[dict]] = defaultdict(list)
    for c in everything:
        files[c["id"].split("::")[0]].append(c)
    for f in sorted(files):
        lines.append(_summary_row(f"`{f}`", summarize(files[f], reached_any)))
    lines += ["", "## Per test class", ""] + _class_table(everything, "models / layers reached")
    lines += _failures(everything, reached_any)
    lines.append("")
    return lines


def _command(argv: list[str]) -> str:
    # Notes have a line of their own in the header.
    argv = [a for i, a in enumerate(argv) if a != "--note" and (i == 0 or argv[i - 1] != "--note")]
    # A table rendered from saved results shows the run that made them.
    if "--from-results" in argv:
        i = argv.index("--from-results")
        argv = [*argv[:i], "--results-dir", *argv[i + 1:]]
    return " ".join(["python -m tests.conformance.run", *argv])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opsets", default=None,
                    help="comma list, e.g. iOS14,iOS17 (default: all; iOS14, the only one with "
                         "neuralnetwork cases, for --backend neuralnetwork)")
    ap.add_argument("--families", default=None, help="comma list of test file stems, e.g. conv,activation")
    ap.add_argument("--backend", choices=BACKENDS, default="all",
                    help="which backend's op-test cases run (default all)")
    ap.add_argument("--suites", default="all",
                    help="comma list of ops (the MIL op tests) and wheel suites (" + ", ".join(SUITES) + "), "
                         "or all (the default)")
    ap.add_argument("--no-install-deps", action="store_true",
                    help="do not pip-install the wheel suites' packages into --deps-dir when missing")
    ap.add_argument("--deps-dir", default=str(DEFAULT_DEPS_DIR), help="where those packages live")
    ap.add_argument("--no-fp32", action="store_true", help="fp16 ML Program cases only (default: both)")
    ap.add_argument("--sample", type=int, default=1, help="run a stable 1-in-N sample of the cases")
    ap.add_argument("--device", default="cpu", help="device for our executor (cpu, cuda)")
    ap.add_argument("--jobs", type=int, default=1, help="test files run in parallel")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per test file")
    ap.add_argument("--sabotage", action="store_true", help="perturb our outputs (passes must turn to failures)")
    ap.add_argument("--results-dir", default=None, help="keep the JSON lines here")
    ap.add_argument("--output", default=str(ROOT / "docs" / "CONFORMANCE.md"))
    ap.add_argument("--no-write", action="store_true", help="print the summary, do not write --output")
    ap.add_argument("--from-results", default=None, metavar="DIR",
                    help="do not run: render the JSON lines already in DIR (with --sample/--device as they ran)")
    ap.add_argument("--note", action="append", default=[],
                    help="a line for the header (e.g. how results of several runs were gathered)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    fp32 = not args.no_fp32
    if args.from_results:
        return report(sorted(Path(args.from_results).glob("*.jsonl")), args, fp32, argv)

    suites = [x.strip() for x in args.suites.split(",") if x.strip()]
    if "all" in suites:
        suites = ["ops", *SUITES]
    unknown = [x for x in suites if x != "ops" and x not in SUITES]
    if unknown:
        print(f"unknown suite {unknown[0]!r} (use ops, {', '.join(SUITES)} or all)", file=sys.stderr)
        return 2
    deps_dir = Path(args.deps_dir)
    wheel = [x for x in suites if x != "ops"]
    if wheel and not args.no_install_deps:
        install_deps(deps_dir, xgboost="xgboost_tests" in wheel)
    out_dir = Path(args.results_dir or tempfile.mkdtemp(prefix="tl-conformance-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[Path, Path, str, str]] = []  # test file, results file, backend, PYTHONPATH
    if "ops" in suites:
        default_opsets = ("iOS14",) if args.backend == "neuralnetwork" else OPSETS
        opsets = [o.strip() for o in args.opsets.split(",") if o.strip()] if args.opsets else list(default_opsets)
        prefix = "nn_" if args.backend == "neuralnetwork" else ""
        for f in test_files(opsets, args.families.split(",") if args.families else None):
            jobs.append((f, out_dir / f"{prefix}{f.parent.name}_{f.stem}.jsonl", args.backend, ""))
    for f in wheel_suite_files(wheel):
        jobs.append((f, out_dir / f"suite_{f.parent.name}_{f.stem}.jsonl", "mlprogram", deps_path(f, deps_dir)))
    if not jobs:
        print("no test files match", file=sys.stderr)
        return 2

    def one(job: tuple[Path, Path, str, str]) -> tuple[Path, int, str]:
        return run_file(job[0], job[1], args.sample, fp32, args.device, args.sabotage, args.pytest_args,
                        args.timeout, job[2], job[3])

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for path, code, tail in pool.map(one, jobs):
            label = f"{path.parent.name}/{path.name}"
            if code in (0, 1, 5):
                print(f"{label}: done", flush=True)
            else:
                print(f"{label}: pytest exited {code}\n{tail}", flush=True)

    return report([job[1] for job in jobs], args, fp32, argv, out_dir)


def report(paths: list[Path], args: argparse.Namespace, fp32: bool, argv: list[str] | None,
           out_dir: Path | None = None) -> int:
    cases, nn = read_results(paths)
    parts: dict[str, list[dict]] = defaultdict(list)
    for c in cases:
        parts[case_part(c)].append(c)
    for part, cs in sorted(parts.items()):
        s = summarize(cs, reached_program if part == "mlprogram" else reached_any)
        strict = f"; strict {100 * s['strict_rate']:.2f}%" if part == "mlprogram" else ""
        print(f"{part}: cases {s['cases']}, reached {s['reached']}, passed {s['passed_reached']} "
              f"({100 * s['rate']:.2f}% of reached{strict}), outcomes {dict(s['outcomes'])}")
    if out_dir:
        print(f"results in {out_dir}")
    if not args.no_write:
        import logging

        logging.getLogger("coremltools").setLevel(logging.ERROR)
        import coremltools
        import torch

        meta = {
            "date": datetime.date.today().isoformat(),
            "coremltools": coremltools.__version__,
            "torch": torch.__version__,
            "device": args.device,
            "command": _command(argv if argv is not None else sys.argv[1:]),
            "fp32": fp32,
            "sample": args.sample,
            "notes": list(args.note),
        }
        Path(args.output).write_text(render(cases, nn, meta))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
