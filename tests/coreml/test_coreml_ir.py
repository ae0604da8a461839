"""ML Program protobuf → IR: structure and weights against torch and against coremltools' own reader."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures_coreml import ML_PROGRAM_FIXTURES
from tensorlogic.formats import open_model_file
from tensorlogic.formats.coreml import CoreMLFile
from tensorlogic.mil.ir import BlobRef, TensorType, Value


def _bn_folded_conv(module) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight/bias with the BatchNorm folded in, in float64 (what the converter stores)."""
    conv, bn = module.conv, module.bn
    w = conv.weight.detach().double().numpy()
    b = conv.bias.detach().double().numpy()
    gamma = bn.weight.detach().double().numpy()
    beta = bn.bias.detach().double().numpy()
    mean = bn.running_mean.double().numpy()
    var = bn.running_var.double().numpy()
    k = gamma / np.sqrt(var + bn.eps)
    return w * k[:, None, None, None], (b - mean) * k + beta


def _const(fn, name: str) -> Value:
    for op in fn.block.walk():
        if op.type == "const" and op.outputs[0].name == name:
            return op.attributes["val"]
    raise KeyError(name)


@pytest.mark.parametrize("name,dtype", [("conv_fp16", "fp16"), ("conv_fp32", "fp32")])
def test_conv_model_ir_matches_torch(coreml_fixture, name, dtype):
    fx = coreml_fixture(name)
    cm = open_model_file(fx.path)
    assert isinstance(cm, CoreMLFile)
    assert cm.model_type == "mlProgram" and cm.spec is not None
    assert cm.weights_dir == fx.path / "Data" / "com.apple.CoreML" / "weights"
    fn = cm.program.functions["main"]
    assert fn.opset == ("CoreML6" if dtype == "fp16" else "CoreML5")
    assert [op.type for op in fn.block.operations if op.type != "const"] == ["conv", "relu", "reshape", "linear"]
    assert fn.inputs[0].name == "x" and fn.inputs[0].type == TensorType(dtype, (1, 3, 8, 8))

    conv = next(op for op in fn.block.operations if op.type == "conv")
    suffix = "_to_fp16" if dtype == "fp16" else ""
    weight_arg = conv.arg("weight")
    assert isinstance(weight_arg, str)
    w = _const(fn, weight_arg)
    assert isinstance(w.data, BlobRef) and w.data.path == "@model_path/weights/weight.bin"
    ref_w, ref_b = _bn_folded_conv(fx.module)
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    got = w.numpy()
    assert got.dtype == np_dtype and got.shape == ref_w.shape
    tol = dict(rtol=1e-3, atol=1e-3) if dtype == "fp16" else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.astype(np.float64), ref_w, **tol)
    np.testing.assert_allclose(_const(fn, conv.arg("bias")).numpy().astype(np.float64), ref_b, **tol)

    fc_w = _const(fn, "fc_weight" + suffix).numpy()
    torch_fc = fx.module.fc.weight.detach().numpy()
    np.testing.assert_array_equal(fc_w, torch_fc.astype(np_dtype))
    fc_b = fx.module.fc.bias.detach().numpy().astype(np_dtype)
    np.testing.assert_array_equal(cm.read_numpy("fc_bias" + suffix), fc_b)
    cm.close()


def _pymil(path):
    """coremltools' own protobuf → PyMIL reader (independent reference)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    return load(spec, spec.specificationVersion, file_weights_dir=model.weights_dir)


@pytest.mark.parametrize("name", ML_PROGRAM_FIXTURES)
def test_ir_matches_coremltools_reader(coreml_model, name):
    import coremltools as ct

    cm = open_model_file(coreml_model(name))
    prog = _pymil(coreml_model(name))
    assert sorted(cm.program.functions) == sorted(prog.functions)
    for fname, pyfn in prog.functions.items():
        fn = cm.program.functions[fname]
        assert fn.opset == ct._OPSET[pyfn.opset_version.value]
        assert [v.name for v in fn.inputs] == list(pyfn.inputs)
        assert fn.block.outputs == [v.name for v in pyfn.outputs]
        # PyMIL turns every literal argument into a const op of its own: compare consts by name.
        ref_consts = {op.outputs[0].name: op for op in pyfn.operations if op.op_type == "const"}
        ours = _fuse_state_updates([op for op in fn.block.operations if op.type != "const"])
        theirs = [op for op in pyfn.operations if op.op_type != "const"]
        assert [op.type for op in ours] == [op.op_type for op in theirs]
        assert [[o.name for o in op.outputs] for op in ours] == [[o.name for o in op.outputs] for op in theirs]
        for op in fn.block.operations:
            if op.type == "const":
                _assert_value_equal(op.attributes["val"].numpy(), ref_consts[op.outputs[0].name].outputs[0].val)
        for op, ref in zip(ours, theirs):
            if op.type.startswith("constexpr_"):
                mat = ref.materialized_val_inference()
                mat = mat if isinstance(mat, tuple) else (mat,)
                for out, expect in zip(op.outputs, mat):
                    _assert_value_equal(cm.read_numpy(out.name), expect)
                continue
            for key, args in op.inputs.items():
                ref_in = ref.inputs[key]
                ref_args = ref_in if isinstance(ref_in, (list, tuple)) else (ref_in,)
                assert len(args) == len(ref_args)
                for a, r in zip(args, ref_args):
                    if isinstance(a, str):
                        assert a == r.name
                    else:
                        _assert_value_equal(a.numpy(), r.val)
    cm.close()


def _fuse_state_updates(ops):
    """PyMIL's loader fuses ``write_state`` + ``read_state`` of one state into ``coreml_update_state``."""
    from tensorlogic.mil.ir import Op

    out = []
    for op in ops:
        prev = out[-1] if out else None
        if (op.type == "read_state" and prev is not None and prev.type == "write_state"
                and op.arg("input") == prev.arg("input")):
            out[-1] = Op("coreml_update_state", {"state": prev.inputs["input"], "value": prev.inputs["data"]},
                         op.outputs)
        else:
            out.append(op)
    return out


def _assert_value_equal(ours, theirs):
    if isinstance(ours, str) or isinstance(theirs, str):
        assert str(ours) == str(theirs)
        return
    if isinstance(ours, tuple):
        assert len(ours) == len(theirs)
        for v, t in zip(ours, theirs):
            _assert_value_equal(v.numpy(), t)
        return
    theirs = np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape
    if theirs.dtype.kind == "f":
        np.testing.assert_array_equal(ours.astype(np.float64), theirs.astype(np.float64))
    else:
        np.testing.assert_array_equal(ours.astype(theirs.dtype), theirs)


@pytest.mark.parametrize("name", ML_PROGRAM_FIXTURES)
def test_mlmodelc_round_trip(coreml_model, tmp_path, name):
    """IR from the .mlpackage equals the IR parsed back from its written model.mil, and so does metadata."""
    from tensorlogic.formats.mlmodelc import write_mlmodelc

    out = write_mlmodelc(coreml_model(name), tmp_path / f"{name}.mlmodelc")
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.mil", "weights"]
    pkg = open_model_file(coreml_model(name))
    compiled = open_model_file(out)
    assert isinstance(compiled, CoreMLFile) and compiled.variant == "mlmodelc"
    assert compiled.spec is None and compiled.model_type == "mlProgram"
    assert compiled.weights_dir == out / "weights"
    assert compiled.program == pkg.program
    a, b = pkg.metadata(), compiled.metadata()
    for field in ("format", "quantization", "inputs", "outputs", "states", "spec_version", "min_os", "opset",
                  "author", "license", "description", "version", "parameter_count", "tensor_count", "model_type"):
        assert getattr(a, field) == getattr(b, field), field
    for key in ("userDefined", "classLabels", "op_histogram", "functions", "predictedFeatureName"):
        assert a.extra.get(key) == b.extra.get(key), key
    for info in pkg.tensor_infos():
        np.testing.assert_array_equal(compiled.read_numpy(info.name), pkg.read_numpy(info.name))
    pkg.close()
    compiled.close()


def test_mlmodelc_metadata_json_shape(coreml_model, tmp_path):
    """metadata.json is a list holding one dict with Apple's field names and string-typed schema values."""
    import json

    from tensorlogic.formats.mlmodelc import write_mlmodelc

    out = write_mlmodelc(coreml_model("flex_range"), tmp_path / "flex.mlmodelc")
    doc = json.loads((out / "metadata.json").read_text())
    assert isinstance(doc, list) and len(doc) == 1
    entry = doc[0]
    assert entry["modelType"] == {"name": "MLModelType_mlProgram"}
    assert entry["specificationVersion"] == 6
    (x,) = entry["inputSchema"]
    assert x["name"] == "x" and x["type"] == "MultiArray" and x["dataType"] == "Float32"
    assert x["shape"] == "[2, 5, 8]" and x["hasShapeFlexibility"] == "1"
    assert json.loads(x["shapeRange"]) == [[1, 4], [1, 16], [8, 8]]
    assert entry["mlProgramOperationTypeHistogram"]["Ios15.linear"] == 1
    with pytest.raises(Exception, match="already exists"):
        write_mlmodelc(coreml_model("flex_range"), out)


def test_mlmodelc_without_metadata_json(coreml_model, tmp_path):
    """Without metadata.json the features come from the program itself."""
    from tensorlogic.formats.mlmodelc import write_mlmodelc

    out = write_mlmodelc(coreml_model("conv_fp16"), tmp_path / "c.mlmodelc")
    (out / "metadata.json").unlink()
    md = open_model_file(out).metadata()
    assert [(f.name, f.dtype, f.shape) for f in md.inputs] == [("x", "fp16", (1, 3, 8, 8))]
    assert [(f.name, f.dtype, f.shape) for f in md.outputs] == [("var_31", "fp16", (1, 5))]
    assert md.quantization == "F16" and md.opset == "CoreML6" and md.spec_version is None
