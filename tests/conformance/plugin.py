"""pytest plugin: run coremltools' own MIL op tests with predictions made by TensorLogic.

Load it with ``-p tests.conformance.plugin`` (see README.md). On import it

- opens the macOS gates of coremltools (``_IS_MACOS``, ``_is_macos()``, ``_macos_version()``) so the
  tests compare numbers instead of passing vacuously; ``skipif`` marks are evaluated when the test
  modules are collected, which is why this must happen at plugin import;
- replaces coremltools' native prediction proxy (``_MLModelProxy``) with ``TensorLogicProxy``, which
  loads the saved model with ``tensorlogic.load_model`` and predicts on our executor (ML Programs,
  NeuralNetworks, pipelines and classic models);
- for the wheel's suites: serves ``coremltools.test.utils.load_boston`` offline (synthetic data of the
  same layout) and exposes libsvm-official's bindings under their old module names.

During collection it keeps the cases of one backend (``--tl-backend``: ``mlprogram``, the default, drops
the neuralnetwork-backend cases and counts them, keeping cases without a backend parameter, such as
the wheel's ``coremltools/test`` suites; ``neuralnetwork`` keeps only the neuralnetwork-backend cases;
``all`` keeps everything),
applies ``excludes.txt`` (known failures run as non-strict xfail; ``[skip]`` entries do not run), and
can keep a stable sample of cases (``--tl-sample N``). Every case's outcome, and whether it reached our
executor, goes to ``--tl-results FILE`` (JSON lines) for ``run.py``.

``TL_CONFORMANCE_SABOTAGE=1`` perturbs every output we return: passes must turn into failures,
which shows that the suite really compares our numbers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

warnings.filterwarnings("ignore")
# coremltools logs a warning per missing native module at import; none of them matter here.
logging.getLogger("coremltools").setLevel(logging.ERROR)

import coremltools  # noqa: E402
import coremltools._deps as _deps  # noqa: E402
import coremltools.converters.mil.mil.ops.tests.testing_utils as _ops_testing_utils  # noqa: E402
import coremltools.converters.mil.testing_utils as _testing_utils  # noqa: E402
import coremltools.models.model as _ct_model  # noqa: E402
import coremltools.models.utils as _ct_utils  # noqa: E402

# The macOS version we claim: new enough for every deployment target the tests use (iOS18 needs 15)
# and past the "fixed in macOS 15.2" skips.
MACOS_VERSION = (15, 5)
HERE = Path(__file__).resolve().parent
EXCLUDES = Path(os.environ.get("TL_CONFORMANCE_EXCLUDES", HERE / "excludes.txt"))
TESTS_MARKER = "mil/ops/tests/"
# The wheel's other suites (neural_network, pipeline, sklearn_tests, xgboost_tests) live here.
WHEEL_TESTS_MARKER = "coremltools/test/"
SABOTAGE = os.environ.get("TL_CONFORMANCE_SABOTAGE", "") not in ("", "0")
# The device our executor uses: cpu unless the run asks for another (``TL_CONFORMANCE_DEVICE=cuda``).
DEVICE = os.environ.get("TL_CONFORMANCE_DEVICE", "cpu")


def _macos_version() -> tuple[int, int]:
    return MACOS_VERSION


def _is_macos() -> bool:
    return True


_deps._IS_MACOS = True
_testing_utils._IS_MACOS = True
# Modules that imported the originals by name (``from coremltools.models.utils import _macos_version``,
# e.g. quantization_utils) keep them: replace every binding already made. The real ones run ``sw_vers``.
_originals = {_ct_utils._is_macos: _is_macos, _ct_utils._macos_version: _macos_version}
for _name, _module in list(sys.modules.items()):
    if _name.startswith("coremltools") and _module is not None:
        for _attr in ("_is_macos", "_macos_version"):
            _value = getattr(_module, _attr, None)
            if _value in _originals:
                setattr(_module, _attr, _originals[_value])
for _module in (_ct_utils, _ct_model):
    _module._is_macos = _is_macos
    _module._macos_version = _macos_version


# --- the Boston housing data, offline ------------------------------------------------------------

# The wheel's sklearn/pipeline/xgboost tests call ``coremltools.test.utils.load_boston``, which downloads
# the data set from lib.stat.cmu.edu (no network here; scikit-learn no longer ships it). The tests
# compare the converted model's predictions with the scikit-learn/xgboost model's own, so any data of
# the same layout serves: 506 rows of 13 features with the original columns' ranges and kinds
# (binary CHAS, integer RAD and TAX, ZN in steps of 12.5), and a target in the original 5-50 range.


def synthetic_boston() -> dict[str, np.ndarray]:
    """Boston-shaped data (``data`` [506, 13], ``target``, ``feature_names``), from a fixed seed."""
    rng = np.random.default_rng(506)
    n = 506
    cols = [
        np.round(rng.exponential(3.6, n), 5),  # CRIM
        rng.choice([0.0, 0.0, 0.0, 12.5, 20.0, 25.0, 80.0], n),  # ZN
        np.round(rng.uniform(0.46, 27.74, n), 2),  # INDUS
        (rng.random(n) < 0.07).astype(np.float64),  # CHAS
        np.round(rng.uniform(0.385, 0.871, n), 3),  # NOX
        np.round(rng.normal(6.28, 0.7, n), 3),  # RM
        np.round(rng.uniform(2.9, 100.0, n), 1),  # AGE
        np.round(rng.uniform(1.13, 12.13, n), 4),  # DIS
        rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 24.0], n),  # RAD
        rng.integers(187, 712, n).astype(np.float64),  # TAX
        np.round(rng.uniform(12.6, 22.0, n), 1),  # PTRATIO
        np.round(rng.uniform(0.32, 396.9, n), 2),  # B
        np.round(rng.uniform(1.73, 37.97, n), 2),  # LSTAT
    ]
    data = np.ascontiguousarray(np.stack(cols, axis=1))
    target = 22.5 + 5.0 * (data[:, 5] - 6.28) - 0.5 * (data[:, 12] - 12.6) - 0.1 * data[:, 0] + rng.normal(0, 2, n)
    names = np.array(["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B",
                      "LSTAT"], dtype="<U7")
    return {"data": data, "target": np.round(np.clip(target, 5.0, 50.0), 1), "feature_names": names}


try:
    import coremltools.test.utils as _wheel_test_utils  # needs pandas, which only the suite runs install
except ImportError:
    _wheel_test_utils = None
if _wheel_test_utils is not None:
    _wheel_test_utils.load_boston = synthetic_boston


# The wheel's libsvm tests import libsvm's Python bindings by their old top-level names (``svmutil``,
# ``svm``); the libsvm-official package (3.30, put on the path by run.py) holds them inside ``libsvm``,
# and has no ``libsvm.__version__``, which coremltools' libsvm converter writes into the model metadata.
try:
    import libsvm.svm
    import libsvm.svmutil
except ImportError:
    pass
else:
    from importlib.metadata import PackageNotFoundError, version

    sys.modules.setdefault("svm", libsvm.svm)
    sys.modules.setdefault("svmutil", libsvm.svmutil)
    if not hasattr(libsvm, "__version__"):
        try:
            libsvm.__version__ = version("libsvm-official")
        except PackageNotFoundError:
            libsvm.__version__ = "unknown"


# --- the proxy ---------------------------------------------------------------------------------

_current: dict[str, Any] = {"nodeid": None, "reached": False, "ops": set(), "model_type": None,
                            "fp16_tolerance": False, "backend": None}


def _perturb(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            return ~value
        if value.dtype.kind in "iu":
            return value + 1
        if value.dtype.kind == "f":
            # Off by more than even the suite's fp16 tolerance (atol 0.5, rtol 0.05) allows.
            return (value + 1.0 + 0.5 * np.abs(value)).astype(value.dtype)
        return value
    if isinstance(value, dict):
        return {k: v + 1.0 if isinstance(v, float) else v for k, v in value.items()}
    if isinstance(value, str):
        return value + "~"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value + 1
    try:
        from PIL import Image

        if isinstance(value, Image.Image):
            return Image.eval(value, lambda p: 255 - p)
    except ImportError:  # pragma: no cover
        pass
    return value


@contextlib.contextmanager
def _as_framework_error() -> Iterator[None]:
    """An op failing at run time surfaces as the native proxy's RuntimeError, with our message in it."""
    from tensorlogic.errors import OpError

    try:
        yield
    except OpError as e:
        kind = _current["model_type"]
        what = "ML Program" if kind in (None, "mlProgram") else "a neural network model" if kind in _NN_TYPES \
            else "the model"
        raise RuntimeError(f"Unable to compute the prediction using {what}. ({e})") from e


_NN_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
_PIPELINE_TYPES = ("pipeline", "pipelineClassifier", "pipelineRegressor")


def _spec_parts(spec: Any) -> set[str]:
    """What a non-ML-Program model is made of: NeuralNetwork layer types, else model types (pipelines opened)."""
    kind = spec.WhichOneof("Type")
    if kind in _NN_TYPES:
        return {layer.WhichOneof("layer") or "?" for layer in getattr(spec, kind).layers}
    if kind in _PIPELINE_TYPES:
        pipe = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        return set().union(*(_spec_parts(m) for m in pipe.models)) if len(pipe.models) else set()
    return {kind or "?"}


class TensorLogicProxy:
    """Stands in for coremltools' ``_MLModelProxy``: same constructor and methods, our executor."""

    @staticmethod
    def maximum_supported_specification_version() -> int:
        return 10

    @staticmethod
    def get_available_compute_devices() -> list:
        return []

    def __init__(self, path: str, compute_units: str, function_name: str = "", hints: Any = None,
                 asset: Any = None):
        import tensorlogic
        from tensorlogic.formats import open_model_file

        self.path = path
        self.error: Exception | None = None
        self.model = None
        self.model_type: str | None = None
        try:
            # Loads everything now: for neuralnetwork models the file is deleted right after.
            file = open_model_file(path)
            self.model_type = getattr(file, "model_type", None)
            runner = file.runner(DEVICE, compute_units, function_name or None)
            self.model = tensorlogic.Model(file, runner)
        except tensorlogic.TensorLogicError as e:
            self.error = e

    def _runner(self) -> Any:
        _current["reached"] = True
        _current["model_type"] = self.model_type
        if self.error is not None:
            raise self.error
        program = getattr(self.model.file, "program", None)
        if program is not None:
            _current["ops"].update(t for t in program.op_histogram() if t != "const")
        elif getattr(self.model.file, "spec", None) is not None:
            _current["ops"].update(_spec_parts(self.model.file.spec))
        return self.model

    def predict(self, data: dict, state: Any = None) -> dict:
        runner = self._runner()
        with _as_framework_error():
            out = runner.predict(data, state=state)
        return {k: _perturb(v) for k, v in out.items()} if SABOTAGE else out

    def batchPredict(self, data: list) -> list:  # noqa: N802 - coremltools' name
        runner = self._runner()
        with _as_framework_error():
            outs = runner.predict(list(data))
        return [{k: _perturb(v) for k, v in o.items()} for o in outs] if SABOTAGE else outs

    def newState(self) -> Any:  # noqa: N802 - coremltools' name
        return self._runner().make_state()

    def get_compiled_model_path(self) -> str:
        return self.path


_ct_model._MLModelProxy = TensorLogicProxy


# --- fp16 data in fp32 cases --------------------------------------------------------------------

# With INCLUDE_MIL_FP32_UNIT_TESTS=1 many cases build programs that hold fp16 data (fp16 inputs,
# weights or palettes) but compare at the fp32 tolerance (atol 1e-4) against a reference computed
# from the fp32 data: any engine that honours the declared fp16 values misses by fp16 rounding.
# Such a case, when it fails at the fp32 tolerance, is compared again at the tolerance the suite
# itself uses for fp16 programs, and recorded as passing only at that tolerance (``fp16_tolerance``
# in the results; docs/CONFORMANCE.md counts them apart). TL_CONFORMANCE_STRICT=1 turns this off.
STRICT = os.environ.get("TL_CONFORMANCE_STRICT", "") not in ("", "0")


def _holds_fp16(mlmodel: Any) -> bool:
    proxy = getattr(mlmodel, "__proxy__", None)
    program = getattr(getattr(getattr(proxy, "model", None), "file", None), "program", None)
    if program is None:
        return False
    from tensorlogic.mil import ir

    for fn in program.functions.values():
        if any(isinstance(v.type, ir.TensorType) and v.type.dtype == "fp16" for v in fn.inputs):
            return True
        for op in fn.block.walk():
            if any(isinstance(v.type, ir.TensorType) and v.type.dtype == "fp16" for v in op.outputs):
                return True
    return False


def _compare_backend(mlmodel: Any, input_key_values: Any, expected_outputs: Any, dtype: str = "fp32",
                     *args: Any, **kwargs: Any) -> Any:
    try:
        return _strict_compare(mlmodel, input_key_values, expected_outputs, dtype, *args, **kwargs)
    except AssertionError:
        stateful = kwargs.get("state") is not None
        if STRICT or SABOTAGE or dtype != "fp32" or stateful or not _holds_fp16(mlmodel):
            raise
    _current["fp16_tolerance"] = True
    return _strict_compare(mlmodel, input_key_values, expected_outputs, "fp16", *args, **kwargs)


_strict_compare = _ops_testing_utils.compare_backend
_ops_testing_utils.compare_backend = _compare_backend


# --- collection --------------------------------------------------------------------------------


def short_id(nodeid: str) -> str:
    """A node id from the ops/tests folder on: ``iOS14/test_conv.py::TestConv::test_x[...]``."""
    for marker in (TESTS_MARKER, WHEEL_TESTS_MARKER):
        i = nodeid.find(marker)
        if i >= 0:
            return nodeid[i + len(marker):]
    return nodeid


def load_excludes(path: Path = EXCLUDES) -> list[tuple[str, str]]:
    """``(pattern, reason)`` pairs from ``excludes.txt`` (``pattern | reason`` lines, ``#`` comments)."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition(" | ")
        entries.append((pattern.strip(), reason.strip() or "known failure"))
    return entries


def pattern_regex(pattern: str) -> re.Pattern:
    """An excludes pattern as a regex: ``*`` matches anything, every other character itself
    (case ids are full of ``[`` and ``]``, which fnmatch would read as character sets)."""
    return re.compile("".join(".*" if ch == "*" else re.escape(ch) for ch in pattern) + r"\Z")


def case_backend(item: Any) -> tuple[str | None, str | None, str | None]:
    """(backend, precision, opset) of a case's ``backend`` parameter, if it has one."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    b = params.get("backend")
    if b is None:
        return None, None, None
    if isinstance(b, tuple):
        return b[0], b[1], None
    opset = getattr(getattr(b, "opset_version", None), "name", None)
    return getattr(b, "backend", None), getattr(b, "precision", None), opset


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("tensorlogic conformance")
    group.addoption("--tl-results", default=None, help="write one JSON line per case to this file")
    group.addoption("--tl-sample", type=int, default=1, help="keep a stable 1-in-N sample of the cases")
    group.addoption("--tl-no-excludes", action="store_true", help="ignore excludes.txt")
    group.addoption("--tl-backend", choices=("mlprogram", "neuralnetwork", "all"),
                    default=os.environ.get("TL_CONFORMANCE_BACKEND", "mlprogram"),
                    help="which backend's cases of the op tests to run (default mlprogram)")


_results: dict[str, Any] = {"file": None, "deselected_nn": 0}


def pytest_configure(config: Any) -> None:
    path = config.getoption("--tl-results")
    if path:
        _results["file"] = open(path, "w")  # noqa: SIM115 - closed in pytest_unconfigure


def pytest_unconfigure(config: Any) -> None:
    fh = _results.get("file")
    if fh is not None:
        fh.write(json.dumps({"summary": True, "deselected_neuralnetwork": _results["deselected_nn"],
                             "backend": _results.get("backend", "mlprogram")}) + "\n")
        fh.close()
        _results["file"] = None


def pytest_collection_modifyitems(session: Any, config: Any, items: list) -> None:
    keep, nn = [], []
    sample = max(1, int(config.getoption("--tl-sample")))
    wanted = config.getoption("--tl-backend")
    files_kept: set[str] = set()
    for item in items:
        backend, _, _ = case_backend(item)
        if wanted != "all" and (backend == "neuralnetwork") != (wanted == "neuralnetwork") \
                and (backend is not None or wanted == "neuralnetwork"):
            if backend == "neuralnetwork":
                nn.append(item)
            continue
        # A sample keeps each case with a stable 1-in-N chance, and the first case of every file,
        # so that every family is represented.
        file = short_id(item.nodeid).split("::")[0]
        if sample > 1 and file in files_kept and zlib.crc32(short_id(item.nodeid).encode()) % sample:
            continue
        files_kept.add(file)
        keep.append(item)
    kept = set(keep)
    dropped = [i for i in items if i not in kept]
    _results["deselected_nn"] = len(nn)
    _results["backend"] = wanted
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
    if config.getoption("--tl-no-excludes"):
        return
    excludes = [(pattern_regex(p), p, r) for p, r in load_excludes()]
    for item in items:
        sid = short_id(item.nodeid)
        for rx, _pattern, reason in excludes:
            if rx.match(sid):
                run = not reason.startswith("[skip]")
                item.add_marker(pytest.mark.xfail(reason=f"excludes.txt: {reason}", run=run, strict=False))
                break


def pytest_runtest_setup(item: Any) -> None:
    _current.update(nodeid=item.nodeid, reached=False, ops=set(), model_type=None, fp16_tolerance=False,
                    backend=case_backend(item)[0])


_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: Any) -> None:
    # One outcome per case: the first failing phase wins, else the call phase's outcome.
    nodeid = report.nodeid
    if report.when == "setup":
        _outcomes.pop(nodeid, None)
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    elif report.failed:
        outcome = "error" if report.when != "call" else "failed"
    elif report.skipped:
        outcome = "skipped"
    else:
        outcome = "passed"
    prev = _outcomes.get(nodeid)
    if prev in (None, ("passed", "")) and (report.when == "call" or outcome != "passed"):
        message = _message(report) if outcome in ("failed", "error") else ""
        if outcome == "xfailed":
            message = str(report.wasxfail)[:300]
        _outcomes[nodeid] = (outcome, message)
    if report.when == "teardown":
        _record(report, *_outcomes.pop(nodeid, ("passed", "")))


def _message(report: Any) -> str:
    # The exception line plus the first line of detail (numpy's mismatch report starts on line 2).
    if report.longrepr is None:
        return ""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:3])[:300]


def _record(report: Any, outcome: str, message: str) -> None:
    fh = _results.get("file")
    if fh is None:
        return
    reached = bool(_current["reached"]) if _current["nodeid"] == report.nodeid else False
    sid = short_id(report.nodeid)
    fh.write(json.dumps({
        "id": sid,
        "outcome": outcome,
        "reached": reached,
        "ops": sorted(_current["ops"]) if reached else [],
        "model_type": _current["model_type"] if reached else None,
        "backend": _current.get("backend") if _current["nodeid"] == report.nodeid else None,
        "fp16_tolerance": bool(_current["fp16_tolerance"]) and reached,
        "message": message,
    }) + "\n")
    fh.flush()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    stats = terminalreporter.stats
    tr = terminalreporter
    tr.write_sep("-", "tensorlogic conformance")
    tr.write_line(f"coremltools {coremltools.__version__}; predictions by TensorLogic on {DEVICE}"
                  + (" (SABOTAGE: outputs perturbed)" if SABOTAGE else ""))
    if _results.get("backend", "mlprogram") == "mlprogram":
        tr.write_line(f"neuralnetwork-backend cases deselected: {_results['deselected_nn']}")
    counts = {k: len(v) for k, v in stats.items() if k in ("passed", "failed", "error", "skipped", "xfailed",
                                                              "xpassed")}
    tr.write_line("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
