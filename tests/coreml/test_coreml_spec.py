"""Feature kinds, flexibility and classic model types, from specs written by hand with the protobuf schema."""

from __future__ import annotations

import pytest

from tensorlogic.formats import _proto, open_model_file
from tensorlogic.formats.coreml import SPEC_VERSION_OS

FT = _proto.FeatureTypes_pb2


def _save(tmp_path, spec, name="hand.mlmodel"):
    path = tmp_path / name
    path.write_bytes(spec.SerializeToString())
    return path


def _glm_spec(version: int = 1):
    spec = _proto.Model_pb2.Model()
    spec.specificationVersion = version
    glm = spec.glmClassifier
    glm.weights.add().value.extend([0.5, -1.0])
    glm.offset.append(0.25)
    glm.stringClassLabels.vector.extend(["no", "yes"])
    spec.description.predictedFeatureName = "label"
    spec.description.predictedProbabilitiesName = "probs"
    return spec


def test_every_feature_kind(tmp_path):
    spec = _glm_spec(4)
    d = spec.description
    f = d.input.add(name="counts", shortDescription="per-word counts")
    f.type.dictionaryType.stringKeyType.SetInParent()
    f = d.input.add(name="n")
    f.type.int64Type.SetInParent()
    f.type.isOptional = True
    f = d.input.add(name="ratio")
    f.type.doubleType.SetInParent()
    f = d.input.add(name="text")
    f.type.stringType.SetInParent()
    f = d.input.add(name="ids")
    f.type.sequenceType.int64Type.SetInParent()
    f.type.sequenceType.sizeRange.lowerBound = 1
    f.type.sequenceType.sizeRange.upperBound = -1
    f = d.input.add(name="arr")
    arr = f.type.multiArrayType
    arr.shape.extend([1, 3])
    arr.dataType = FT.ArrayFeatureType.DOUBLE
    arr.floatDefaultValue = 1.5
    f = d.input.add(name="photo")
    img = f.type.imageType
    img.width, img.height, img.colorSpace = 64, 48, FT.ImageFeatureType.BGR
    for w, h in ((64, 48), (128, 96)):
        img.enumeratedSizes.sizes.add(width=w, height=h)
    f = d.input.add(name="scan")
    img = f.type.imageType
    img.width, img.height, img.colorSpace = 32, 32, FT.ImageFeatureType.GRAYSCALE_FLOAT16
    img.imageSizeRange.widthRange.lowerBound = 16
    img.imageSizeRange.widthRange.upperBound = -1
    img.imageSizeRange.heightRange.lowerBound = 16
    img.imageSizeRange.heightRange.upperBound = 64
    d.output.add(name="label").type.stringType.SetInParent()
    d.output.add(name="probs").type.dictionaryType.stringKeyType.SetInParent()

    md = open_model_file(_save(tmp_path, spec)).metadata()
    got = {f.name: f for f in md.inputs}
    assert got["counts"].kind == "dictionary" and got["counts"].extra == {"key_type": "string"}
    assert got["counts"].description == "per-word counts"
    assert (got["n"].kind, got["n"].dtype, got["n"].optional) == ("int64", "int64", True)
    assert (got["ratio"].kind, got["ratio"].dtype) == ("double", "fp64")
    assert (got["text"].kind, got["text"].dtype) == ("string", "string")
    assert got["ids"].kind == "sequence"
    assert got["ids"].extra == {"element_type": "int64", "size_range": [1, -1]}
    assert (got["arr"].dtype, got["arr"].shape, got["arr"].extra) == ("fp64", (1, 3), {"default": 1.5})
    assert got["photo"].image == {"colorspace": "BGR", "width": 64, "height": 48, "sizes": [[64, 48], [128, 96]]}
    assert got["photo"].shape == (1, 3, 48, 64)
    assert got["scan"].image == {"colorspace": "GRAYSCALE_FLOAT16", "width": 32, "height": 32,
                                 "width_range": [16, -1], "height_range": [16, 64]}
    assert got["scan"].dtype == "fp16" and got["scan"].shape == (1, 1, 32, 32)
    assert md.extra["classLabels"] == ["no", "yes"]
    assert md.extra["predictedFeatureName"] == "label"


@pytest.mark.parametrize("version", sorted(SPEC_VERSION_OS))
def test_spec_version_to_minimum_os(tmp_path, version):
    md = open_model_file(_save(tmp_path, _glm_spec(version))).metadata()
    assert md.spec_version == version
    assert md.min_os == {1: "iOS11", 2: "iOS11.2", 3: "iOS12", 4: "iOS13", 5: "iOS14", 6: "iOS15", 7: "iOS16",
                         8: "iOS17", 9: "iOS18", 10: "iOS26"}[version]
    assert md.model_type == "glmClassifier"
    assert md.opset is None and md.quantization == "UNKNOWN"


def test_classic_model_runner_is_the_executor(tmp_path):
    """Non-ML-Program models open and describe themselves; running them is the executor's call."""
    cm = open_model_file(_save(tmp_path, _glm_spec(1)))
    assert cm.program is None and cm.spec.WhichOneof("Type") == "glmClassifier"
    assert cm.tensor_infos() == []
    assert cm.metadata().extra["model_type_description"] == "generalized linear classifier"


def test_pipeline_lists_its_models(tmp_path):
    spec = _proto.Model_pb2.Model()
    spec.specificationVersion = 4
    pipe = spec.pipelineClassifier.pipeline
    pipe.models.add().CopyFrom(_glm_spec(1))
    inner = pipe.models.add()
    inner.specificationVersion = 1
    inner.identity.SetInParent()
    md = open_model_file(_save(tmp_path, spec)).metadata()
    assert md.model_type == "pipelineClassifier"
    assert md.extra["pipeline_models"] == ["glmClassifier", "identity"]
    assert md.extra["classLabels"] == ["no", "yes"]


def test_multifunction_default_and_unknown_function(coreml_model):
    cm = open_model_file(coreml_model("conv_fp16"))
    ins, outs, states = cm.feature_specs("main")
    assert [f.name for f in ins] == ["x"] and states == []
    from tensorlogic.errors import InputError

    with pytest.raises(InputError) as e:
        cm.feature_specs("other")
    assert str(e.value).endswith("no function 'other'; the model has a single function (main)")
