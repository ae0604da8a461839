"""`tl inspect` on a ResNet-50-sized (~100 MB) ML Program: works, and never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CONVS = 53  # ResNet-50 has 53 convolutions
CHANNELS = 256
FC = (4096, 2048)


def build_big_package(folder):
    """Convert a MIL program with ResNet-50's conv count and ~130 MB of fp16 weights into ``folder``."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(0)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, CHANNELS, 7, 7), dtype=types.fp16)],
                opset_version=ct.target.iOS16)
    def prog(x):
        for _ in range(CONVS):
            w = (rng.standard_normal((CHANNELS, CHANNELS, 3, 3), dtype=np.float32) * 0.02).astype(np.float16)
            x = mb.relu(x=mb.conv(x=x, weight=w, pad_type="same"))
        x = mb.reshape(x=mb.reduce_mean(x=x, axes=[2, 3]), shape=[1, CHANNELS])
        x = mb.linear(x=x, weight=(rng.standard_normal((FC[1], CHANNELS)) * 0.02).astype(np.float16))
        for _ in range(2):
            x = mb.linear(x=x, weight=(rng.standard_normal((FC[0], FC[1]), dtype=np.float32) * 0.02).astype(
                np.float16))
            x = mb.linear(x=x, weight=(rng.standard_normal((FC[1], FC[0]), dtype=np.float32) * 0.02).astype(
                np.float16))
        return x

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                       compute_precision=ct.precision.FLOAT16)
    path = folder / "resnet50_sized.mlpackage"
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def big_package(tmp_path_factory):
    pytest.importorskip("coremltools")
    return build_big_package(tmp_path_factory.mktemp("big"))


def test_inspect_large_mlpackage_without_torch(big_package):
    weights = big_package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    assert weights.stat().st_size > 90_000_000
    code = (
        "import sys, io, json, time, contextlib\n"
        "t0 = time.perf_counter()\n"
        "from tensorlogic.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        f"    rc = main(['inspect', {str(big_package)!r}, '--json', '--tensors'])\n"
        "print(json.dumps({'rc': rc, 'doc': json.loads(buf.getvalue()), 'torch': 'torch' in sys.modules,\n"
        "                  'seconds': time.perf_counter() - t0}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rc"] == 0 and result["torch"] is False
    doc = result["doc"]
    conv_params = CONVS * CHANNELS * CHANNELS * 9
    fc_params = FC[1] * CHANNELS + 4 * FC[0] * FC[1]
    biases = FC[1] + 2 * (FC[0] + FC[1])  # zero biases mb.linear adds (identical ones get deduplicated)
    assert conv_params + fc_params <= doc["parameter_count"] <= conv_params + fc_params + biases
    assert doc["quantization"] == "F16" and doc["opset"] == "CoreML6"
    assert doc["extra"]["op_histogram"]["conv"] == CONVS
    assert sum(t["nbytes"] for t in doc["tensors"] if t["dtype"] == "fp16") >= 2 * (conv_params + fc_params)
    print(f"tl inspect --json --tensors on {weights.stat().st_size / 1e6:.0f} MB: {result['seconds']:.3f} s")
