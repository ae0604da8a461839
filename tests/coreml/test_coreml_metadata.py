"""Core ML metadata, tensors and `tl inspect`, checked against coremltools' reading of the same files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from fixtures_coreml import CONV_DESCRIPTION, COREML_FIXTURES, ML_PROGRAM_FIXTURES, NEURAL_NETWORK_FIXTURES
from tensorlogic.cli import main as tl_main
from tensorlogic.formats import open_model_file
from tensorlogic.formats.coreml import ARRAY_DTYPES, MODEL_TYPES
from tensorlogic.mil.ir import NUMPY_STORAGE
from tensorlogic.model import Model

# What each fixture's weights are, by construction (see tests/fixtures_coreml.py).
EXPECTED_QUANTIZATION = {
    "conv_fp16": "F16", "attention": "F16", "stateful": "F16",
    "quant_int8": "INT8", "quant_int4": "INT4", "palettized_4bit": "PALETTIZED_4BIT", "pruned": "SPARSE",
    "neuralnetwork_fp16": "F16", "neuralnetwork_int8": "INT8", "neuralnetwork_lut4": "PALETTIZED_4BIT",
}


def _ct_spec(path):
    import coremltools as ct

    return ct.models.MLModel(str(path), skip_model_load=True).get_spec()


def _proto_ops(block, counts):
    for op in block.operations:
        counts[op.type] += 1
        for b in op.blocks:
            _proto_ops(b, counts)


@pytest.mark.parametrize("name", COREML_FIXTURES)
def test_metadata_matches_coremltools_spec(coreml_model, name):
    import coremltools as ct

    path = coreml_model(name)
    spec = _ct_spec(path)
    md = open_model_file(path).metadata()
    assert md.format == "CoreML"
    assert md.name == name
    assert md.model_type == spec.WhichOneof("Type")
    assert md.model_type in MODEL_TYPES
    assert md.spec_version == spec.specificationVersion
    assert md.min_os == ct.target(spec.specificationVersion).name
    assert md.quantization == EXPECTED_QUANTIZATION.get(name, "F32")
    assert md.extra["userDefined"] == dict(spec.description.metadata.userDefined)
    if name != "multifunction":  # save_multifunction writes no user-defined metadata
        assert md.extra["userDefined"]["com.github.apple.coremltools.version"] == ct.__version__

    desc = spec.description
    if len(spec.description.functions):
        default = spec.description.defaultFunctionName
        desc = next(f for f in spec.description.functions if f.name == default)
    assert [f.name for f in md.inputs] == [f.name for f in desc.input]
    assert [f.name for f in md.outputs] == [f.name for f in desc.output]
    assert [f.name for f in md.states] == [f.name for f in desc.state]
    for ours, theirs in zip(md.inputs + md.outputs, list(desc.input) + list(desc.output)):
        kind = theirs.type.WhichOneof("Type")
        if kind == "multiArrayType":
            arr = theirs.type.multiArrayType
            assert ours.kind == "multiArray"
            assert ours.shape == (tuple(arr.shape) if len(arr.shape) else None)
            want = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType)
            assert {"FLOAT32": "fp32", "FLOAT16": "fp16", "INT32": "int32", "DOUBLE": "fp64"}[want] == ours.dtype

    if md.model_type == "mlProgram":
        counts: Counter = Counter()
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                _proto_ops(block, counts)
        assert md.extra["op_histogram"] == dict(counts)
        main_fn = spec.description.defaultFunctionName or "main"
        assert md.opset == spec.mlProgram.functions[main_fn].opset
        assert set(md.extra["functions"]) == set(spec.mlProgram.functions)
        if "buildInfo" in spec.mlProgram.attributes:
            assert md.extra["buildInfo"]["coremltools-version"] == ct.__version__
    json.dumps(md.to_dict())  # everything is JSON-serializable


def test_descriptive_fields(coreml_model):
    md = open_model_file(coreml_model("conv_fp32")).metadata()
    assert md.author == CONV_DESCRIPTION["author"]
    assert md.license == CONV_DESCRIPTION["license"]
    assert md.description == CONV_DESCRIPTION["short_description"]
    assert md.version == CONV_DESCRIPTION["version"]
    assert md.inputs[0].description == CONV_DESCRIPTION["inputs"]["x"]
    assert md.extra["userDefined"]["purpose"] == "fixture"
    # BatchNorm folds into the conv: conv weight + bias + fc weight + bias
    assert md.parameter_count == 4 * 3 * 3 * 3 + 4 + 5 * 144 + 5
    assert md.extra["compute_precision"] == "FLOAT32"
    assert md.file_size > 0


@pytest.mark.parametrize("name,color,channels", [("image_rgb", "RGB", 3), ("image_bgr", "BGR", 3),
                                                  ("image_gray", "GRAYSCALE", 1)])
def test_image_inputs(coreml_model, name, color, channels):
    spec = _ct_spec(coreml_model(name))
    img = spec.description.input[0].type.imageType
    feat = open_model_file(coreml_model(name)).metadata().inputs[0]
    assert feat.kind == "image"
    assert feat.image == {"colorspace": color, "width": img.width, "height": img.height}
    assert (img.width, img.height) == (12, 16)
    assert feat.shape == (1, channels, 16, 12)
    assert str(feat) == f"image: image {color} 12x16"


@pytest.mark.parametrize("name", ["classifier_str", "classifier_int"])
def test_classifier(coreml_fixture, name):
    fx = coreml_fixture(name)
    md = open_model_file(fx.path).metadata()
    assert md.extra["classLabels"] == fx.notes["labels"]
    assert md.extra["predictedFeatureName"] == "classLabel"
    assert md.extra["predictedProbabilitiesName"] == "classLabel_probs"
    label, probs = md.outputs
    assert label.kind == ("string" if name == "classifier_str" else "int64")
    assert probs.kind == "dictionary"
    assert probs.extra["key_type"] == ("string" if name == "classifier_str" else "int64")


def test_flexible_shapes(coreml_fixture):
    rng = open_model_file(coreml_fixture("flex_range").path).metadata().inputs[0]
    assert rng.flexibility == {"ranges": coreml_fixture("flex_range").notes["ranges"]}
    enum = open_model_file(coreml_fixture("flex_enum").path).metadata().inputs[0]
    assert enum.flexibility == {"enumerated": [list(s) for s in coreml_fixture("flex_enum").notes["shapes"]]}
    assert enum.shape == (1, 3, 8)


def test_states_and_multifunction(coreml_model):
    md = open_model_file(coreml_model("stateful")).metadata()
    assert [(s.name, s.kind, s.dtype, s.shape) for s in md.states] == [("acc", "state", "fp16", (1, 4))]
    assert md.min_os == "iOS18" and md.opset == "CoreML8"

    cm = open_model_file(coreml_model("multifunction"))
    md = cm.metadata()
    assert set(md.extra["functions"]) == {"relu", "sigmoid"}
    assert md.extra["default_function"] == "relu"
    ins, outs, _ = cm.feature_specs("sigmoid")
    assert [f.name for f in ins] == ["x"] and outs[0].shape == (1, 3)
    from tensorlogic.errors import InputError

    with pytest.raises(InputError, match="no function 'tanh'; the model has relu, sigmoid"):
        cm.feature_specs("tanh")


def test_model_types_name_every_oneof_member():
    from tensorlogic.formats import _proto

    members = {f.name for f in _proto.Model_pb2.Model.DESCRIPTOR.oneofs_by_name["Type"].fields}
    assert members == set(MODEL_TYPES)


def test_array_dtypes_cover_the_enum():
    from tensorlogic.formats import _proto

    enum = _proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType
    assert {v for k, v in enum.items() if k != "INVALID_ARRAY_DATA_TYPE"} == set(ARRAY_DTYPES)


# --- tensors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ML_PROGRAM_FIXTURES)
def test_tensor_infos_and_reads(coreml_model, name):
    cm = open_model_file(coreml_model(name))
    infos = cm.tensor_infos()
    assert len(infos) == cm.metadata().tensor_count
    weight_bin = cm.weights_dir / "weight.bin"
    for info in infos:
        arr = cm.read_numpy(info.name)
        assert tuple(arr.shape) == info.shape
        if info.offset is not None:
            assert info.file == str(weight_bin)
            assert info.offset % 64 == 0 and info.offset < weight_bin.stat().st_size
            if info.dtype in NUMPY_STORAGE:  # a plain const: one blob
                assert info.offset + info.nbytes <= weight_bin.stat().st_size
    cm.close()


def test_blob_reads_are_zero_copy(coreml_model):
    cm = open_model_file(coreml_model("conv_fp32"))
    info = next(i for i in cm.tensor_infos() if i.name == "fc_weight")
    arr = cm.read_numpy("fc_weight")
    assert not arr.flags.writeable and not arr.flags.owndata
    raw = np.fromfile(cm.weights_dir / "weight.bin", dtype=np.uint8)[info.offset: info.offset + info.nbytes]
    np.testing.assert_array_equal(arr.reshape(-1), raw.view(np.float32))
    cm.close()


def test_get_tensor_through_model(coreml_fixture):
    torch = pytest.importorskip("torch")
    fx = coreml_fixture("quant_int8")
    # Model without a runner: tensors need no executor.
    m = Model(open_model_file(fx.path))
    w = m.get_tensor("op_2_weight_to_fp16_quantized", dtype=torch.float32)
    ref = fx.module[2].weight.detach()
    # int8 per-channel symmetric quantization: error at most half a step of each row's scale.
    step = ref.abs().amax(dim=1, keepdim=True) / 127
    assert torch.all((w - ref).abs() <= step * 0.5 + 1e-3)
    assert m.get_tensor("var_2_bias_to_fp16").dtype == torch.float16


@pytest.mark.parametrize("name", NEURAL_NETWORK_FIXTURES)
def test_neuralnetwork_weights_match_coremltools_dequantization(coreml_model, name):
    from coremltools.models.neural_network.quantization_utils import _dequantize_wp

    cm = open_model_file(coreml_model(name))
    layers = {layer.name: layer for layer in _ct_spec(coreml_model(name)).neuralNetwork.layers}
    infos = cm.tensor_infos()
    assert {i.name for i in infos} == {
        "24.convolution.weights", "24.convolution.bias", "linear_0.innerProduct.weights", "linear_0.innerProduct.bias"}
    for info in infos:
        layer_name, kind, field = info.name.split(".")
        wp = getattr(getattr(layers[layer_name], kind), field)
        if wp.HasField("quantization"):
            _dequantize_wp(wp, info.shape)  # coremltools' own dequantizer, in place
        if len(wp.floatValue):
            ref = np.asarray(wp.floatValue, np.float32)
        else:
            ref = np.frombuffer(wp.float16Value, np.float16)[: info.numel].astype(np.float32)
        got = cm.read_numpy(info.name)
        assert got.shape == info.shape
        np.testing.assert_allclose(got.reshape(-1).astype(np.float32), ref, rtol=1e-6, atol=1e-7)


def test_neuralnetwork_weights_match_torch(coreml_fixture):
    fx = coreml_fixture("neuralnetwork")
    cm = open_model_file(fx.path)
    fc = cm.read_numpy("linear_0.innerProduct.weights")
    np.testing.assert_array_equal(fc, fx.module.fc.weight.detach().numpy())
    assert cm.tensor_infos()[0].shape == (4, 3, 3, 3)


# --- tl inspect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COREML_FIXTURES)
def test_tl_inspect(coreml_model, name, capsys):
    path = coreml_model(name)
    assert tl_main(["inspect", str(path), "--tensors"]) == 0
    out = capsys.readouterr().out
    md = open_model_file(path).metadata()
    for text in ("CoreML", md.quantization, md.model_type, str(md.spec_version), md.min_os):
        assert text in out
    for feat in md.inputs + md.outputs:
        assert feat.name in out


def test_tl_inspect_json_without_torch(coreml_model):
    path = coreml_model("palettized_4bit")
    code = (
        "import sys, json, io, contextlib\n"
        "from tensorlogic.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        f"    rc = main(['inspect', {str(path)!r}, '--json', '--tensors'])\n"
        "print(json.dumps({'rc': rc, 'doc': json.loads(buf.getvalue()),\n"
        "                  'torch': 'torch' in sys.modules, 'coremltools': 'coremltools' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rc"] == 0
    assert result["torch"] is False and result["coremltools"] is False
    doc = result["doc"]
    assert doc["format"] == "CoreML" and doc["quantization"] == "PALETTIZED_4BIT"
    assert doc["opset"] == "CoreML8" and doc["min_os"] == "iOS18"
    assert {t["dtype"] for t in doc["tensors"]} == {"PALETTIZED_4BIT", "fp16"}


def test_proto_classes_are_shared_with_coremltools():
    code = (
        "import sys\n"
        "from tensorlogic.formats import _proto\n"
        "ours = _proto.Model_pb2.Model\n"
        "assert 'coremltools' not in sys.modules\n"
        "import coremltools\n"
        "from coremltools.proto import Model_pb2\n"
        "assert Model_pb2.Model is ours, (Model_pb2.Model, ours)\n"
        "m = ours(); m.specificationVersion = 9\n"
        "copy = Model_pb2.Model(); copy.CopyFrom(m)\n"
        "print('shared')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("shared")
