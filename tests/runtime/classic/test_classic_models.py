"""Classic models built directly (coremltools' builders or the protobuf messages), checked against values
computed from the .proto definitions by hand; pipelines chaining classic, NeuralNetwork and ML Program models;
and the errors these models can raise."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from tensorlogic.errors import InputError, UnsupportedError


def _ct():
    warnings.filterwarnings("ignore")
    import coremltools as ct

    return ct


def _build(spec, **kw):
    from tensorlogic.runtime.classic import build

    return build(spec, **kw)


def _tree_regressor(mode, value, missing_true=False, transform=None):
    """One tree: node 0 branches on feature 1 against ``value``; true → leaf 1 (10), false → leaf 2 (20)."""
    from coremltools.models import datatypes
    from coremltools.models.tree_ensemble import TreeEnsembleRegressor

    tree = TreeEnsembleRegressor([("x", datatypes.Array(3))], "y")
    tree.add_branch_node(0, 0, 1, value, mode, 1, 2, missing_value_tracks_true_child=missing_true)
    tree.add_leaf_node(0, 1, 10.0)
    tree.add_leaf_node(0, 2, 20.0)
    tree.set_default_prediction_value(0.5)
    if transform:
        tree.set_post_evaluation_transform(transform)
    return tree.spec


MODES = [("BranchOnValueLessThanEqual", [(2.0, 10.5), (2.5, 20.5)]),
         ("BranchOnValueLessThan", [(2.0, 20.5), (1.0, 10.5)]),
         ("BranchOnValueGreaterThanEqual", [(2.0, 10.5), (1.0, 20.5)]),
         ("BranchOnValueGreaterThan", [(2.0, 20.5), (3.0, 10.5)]), ("BranchOnValueEqual", [(2.0, 10.5), (1.0, 20.5)]),
         ("BranchOnValueNotEqual", [(2.0, 20.5), (1.0, 10.5)])]


@pytest.mark.parametrize("mode,cases", MODES, ids=[m[0] for m in MODES])
def test_tree_branch_modes(mode, cases):
    _ct()
    runner = _build(_tree_regressor(mode, 2.0))
    for feature, want in cases:
        assert runner.run({"x": torch.tensor([9.0, feature, -9.0])})["y"] == want


@pytest.mark.parametrize("missing_true,want", [(True, 10.5), (False, 20.5)])
def test_tree_missing_value_direction(missing_true, want):
    _ct()
    runner = _build(_tree_regressor("BranchOnValueNotEqual", 2.0, missing_true))
    assert runner.run({"x": torch.tensor([0.0, math.nan, 0.0])})["y"] == want


def test_tree_regressor_logistic_transform():
    _ct()
    runner = _build(_tree_regressor("BranchOnValueLessThanEqual", 0.0, transform="Regression_Logistic"))
    got = runner.run({"x": torch.tensor([0.0, -1.0, 0.0])})["y"]
    assert got == pytest.approx(1 / (1 + math.exp(-10.5)))


@pytest.mark.parametrize("transform", ["Classification_SoftMax", "Classification_SoftMaxWithZeroClassReference",
                                       "NoTransform"])
def test_tree_classifier_transforms(transform):
    _ct()
    from coremltools.models import datatypes
    from coremltools.models.tree_ensemble import TreeEnsembleClassifier

    labels = ["a", "b", "c"]
    dims = 2 if transform == "Classification_SoftMaxWithZeroClassReference" else 3
    tree = TreeEnsembleClassifier([("x", datatypes.Array(2))], labels, "label")
    tree.add_branch_node(0, 0, 0, 0.5, "BranchOnValueLessThan", 1, 2)
    tree.add_leaf_node(0, 1, {0: 1.0, dims - 1: -0.5})
    tree.add_leaf_node(0, 2, {1: 2.0})
    tree.add_branch_node(1, 0, 1, 1.0, "BranchOnValueGreaterThan", 1, 2)
    tree.add_leaf_node(1, 1, {0: 0.25})
    tree.add_leaf_node(1, 2, {1: -1.0})
    tree.set_default_prediction_value([0.1] * dims)
    tree.set_post_evaluation_transform(transform)
    runner = _build(tree.spec)
    out = runner.run({"x": torch.tensor([0.0, 3.0])})  # tree 0 → leaf 1, tree 1 → leaf 1
    scores = np.full(dims, 0.1)
    scores[0] += 1.0 + 0.25
    scores[dims - 1] -= 0.5
    if transform == "Classification_SoftMaxWithZeroClassReference":
        scores = np.concatenate([[0.0], scores])
    if transform != "NoTransform":
        scores = np.exp(scores) / np.exp(scores).sum()
    got = out["classProbability"]
    np.testing.assert_allclose([got[k] for k in labels], scores, rtol=1e-12)
    assert out["label"] == labels[int(np.argmax(scores))]


def _glm_classifier(weights, offsets, labels, link, encoding):
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 1
    inp = spec.description.input.add()
    inp.name = "x"
    inp.type.multiArrayType.shape.append(len(weights[0]))
    label = spec.description.output.add()
    label.name = "label"
    label.type.stringType.SetInParent()
    probs = spec.description.output.add()
    probs.name = "probs"
    probs.type.dictionaryType.stringKeyType.SetInParent()
    spec.description.predictedFeatureName = "label"
    spec.description.predictedProbabilitiesName = "probs"
    glm = spec.glmClassifier
    for row in weights:
        glm.weights.add().value.extend(row)
    glm.offset.extend(offsets)
    glm.postEvaluationTransform = link
    glm.classEncoding = encoding
    glm.stringClassLabels.vector.extend(labels)
    return spec


def test_glm_binary_probit_and_reference_class_softmax():
    from scipy.stats import norm

    x = np.array([0.5, -1.0, 2.0])
    w = [[0.3, -0.2, 0.1]]
    out = _build(_glm_classifier(w, [0.05], ["no", "yes"], 1, 0)).run({"x": torch.tensor(x)})
    p = norm.cdf(np.dot(w[0], x) + 0.05)
    assert out["probs"] == pytest.approx({"no": 1 - p, "yes": p})
    assert out["label"] == ("yes" if p > 0.5 else "no")

    w3 = [[0.3, -0.2, 0.1], [-0.4, 0.1, 0.6]]
    out = _build(_glm_classifier(w3, [0.1, -0.2], ["a", "b", "c"], 0, 0)).run({"x": torch.tensor(x)})
    z = np.array([0.0, np.dot(w3[0], x) + 0.1, np.dot(w3[1], x) - 0.2])
    want = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose([out["probs"][k] for k in "abc"], want, rtol=1e-12)


def test_svm_sparse_support_vectors():
    """A sparse (1-based) support-vector regressor equals the dense computation."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    inp = spec.description.input.add()
    inp.name = "x"
    inp.type.multiArrayType.shape.append(4)
    out = spec.description.output.add()
    out.name = "y"
    out.type.doubleType.SetInParent()
    svr = spec.supportVectorRegressor
    svr.kernel.rbfKernel.gamma = 0.5
    dense = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    for row in dense:
        vec = svr.sparseSupportVectors.vectors.add()
        for i, v in enumerate(row):
            if v:
                node = vec.nodes.add()
                node.index, node.value = i + 1, v
    svr.coefficients.alpha.extend([0.7, -1.3])
    svr.rho = 0.25
    x = np.array([0.5, -0.5, 1.0, 3.0])
    want = sum(a * np.exp(-0.5 * ((sv - x) ** 2).sum()) for a, sv in zip([0.7, -1.3], dense)) - 0.25
    assert _build(spec).run({"x": torch.tensor(x)})["y"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("prob_a,want", [(float("nan"), 1e-7), (-1e9, 1 - 1e-7), (0.5, None)])
def test_svm_platt_probability_clipping(prob_a, want):
    """Binary Platt probabilities clipped to [1e-7, 1 - 1e-7] as libsvm's C code does: its
    ``(x > y) ? x : y`` comparisons map a NaN from a degenerate fit to 1e-7."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    inp = spec.description.input.add()
    inp.name = "x"
    inp.type.multiArrayType.shape.append(1)
    for name in ("label", "probs"):
        out = spec.description.output.add()
        out.name = name
    spec.description.output[0].type.int64Type.SetInParent()
    spec.description.output[1].type.dictionaryType.int64KeyType.SetInParent()
    spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName = "label", "probs"
    svc = spec.supportVectorClassifier
    svc.kernel.linearKernel.SetInParent()
    for v in (1.0, -1.0):
        svc.denseSupportVectors.vectors.add().values.append(v)
    svc.numberOfSupportVectorsPerClass.extend([1, 1])
    svc.coefficients.add().alpha.extend([1.0, -1.0])
    svc.rho.append(0.0)
    svc.probA.append(prob_a)
    svc.probB.append(0.0)
    svc.int64ClassLabels.vector.extend([1, 2])
    out = _build(spec).run({"x": torch.tensor([2.0])})
    dec = 2.0 * 1.0 - 1.0 * -2.0  # sum(alpha * <sv, x>) - rho
    expected = want if want is not None else 1 / (1 + math.exp(prob_a * dec))
    assert out["probs"][1] == pytest.approx(expected, rel=1e-12)
    assert out["probs"][2] == pytest.approx(1 - expected, rel=1e-12)


def _transform_spec(kind, inputs, outputs):
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    for group, feats in ((spec.description.input, inputs), (spec.description.output, outputs)):
        for name, ftype, extra in feats:
            fd = group.add()
            fd.name = name
            getattr(fd.type, ftype).SetInParent()
            if ftype == "multiArrayType":
                fd.type.multiArrayType.shape.extend(extra)
                fd.type.multiArrayType.dataType = 65600
    getattr(spec, kind).SetInParent()
    return spec


def test_feature_vectorizer_with_scalars_arrays_and_sparse_dicts():
    spec = _transform_spec("featureVectorizer", [("a", "doubleType", ()), ("b", "multiArrayType", (2,)),
                                                 ("c", "dictionaryType", ())], [("out", "multiArrayType", (6,))])
    for name, size in (("a", 1), ("b", 2), ("c", 3)):
        col = spec.featureVectorizer.inputList.add()
        col.inputColumn, col.inputDimensions = name, size
    out = _build(spec).run({"a": 1.5, "b": torch.tensor([2.0, 3.0]), "c": {2: 7.0, 0: -1.0}})["out"]
    assert out.tolist() == [1.5, 2.0, 3.0, -1.0, 0.0, 7.0]


def test_array_feature_extractor_categorical_mapping_identity():
    afe = _transform_spec("arrayFeatureExtractor", [("x", "multiArrayType", (5,))], [("y", "int64Type", ())])
    afe.arrayFeatureExtractor.extractIndex.append(3)
    assert _build(afe).run({"x": torch.tensor([0.0, 1.0, 2.0, 7.0, 4.0])})["y"] == 7

    cm = _transform_spec("categoricalMapping", [("s", "stringType", ())], [("i", "int64Type", ())])
    cm.categoricalMapping.stringToInt64Map.map.update({"red": 1, "green": 2})
    cm.categoricalMapping.int64Value = -1
    runner = _build(cm)
    assert runner.run({"s": "green"})["i"] == 2 and runner.run({"s": "blue"})["i"] == -1

    back = _transform_spec("categoricalMapping", [("i", "int64Type", ())], [("s", "stringType", ())])
    back.categoricalMapping.int64ToStringMap.map.update({1: "red"})
    with pytest.raises(InputError, match="^categoricalMapping: 5 is not in the mapping and there is no default$"):
        _build(back).run({"i": 5})

    ident = _transform_spec("identity", [("p", "doubleType", ()), ("q", "stringType", ())],
                            [("p", "doubleType", ()), ("q", "stringType", ())])
    assert _build(ident).run({"p": 2.5, "q": "z"}) == {"p": 2.5, "q": "z"}


def test_imputer_scalar_replace_values_and_one_hot_dense():
    imp = _transform_spec("imputer", [("x", "int64Type", ())], [("y", "int64Type", ())])
    imp.imputer.imputedInt64Value = 42
    imp.imputer.replaceInt64Value = -1
    runner = _build(imp)
    assert runner.run({"x": -1})["y"] == 42 and runner.run({"x": 5})["y"] == 5

    ohe = _transform_spec("oneHotEncoder", [("c", "stringType", ())], [("v", "multiArrayType", (3,))])
    ohe.oneHotEncoder.stringCategories.vector.extend(["x", "y", "z"])
    ohe.oneHotEncoder.handleUnknown = 1
    runner = _build(ohe)
    assert runner.run({"c": "z"})["v"].tolist() == [0.0, 0.0, 1.0]
    assert runner.run({"c": "w"})["v"].tolist() == [0.0, 0.0, 0.0]
    ohe.oneHotEncoder.handleUnknown = 0
    with pytest.raises(InputError, match="^oneHotEncoder: 'w' is not one of its categories$"):
        _build(ohe).run({"c": "w"})


def test_pipeline_of_scaler_neural_network_and_ml_program(tmp_path):
    """scaler (classic) → NeuralNetwork → ML Program, chained by feature name."""
    ct = _ct()
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder
    from coremltools.proto import Model_pb2

    scaler = _transform_spec("scaler", [("x", "multiArrayType", (3,))], [("scaled", "multiArrayType", (3,))])
    scaler.scaler.shiftValue.extend([1.0, 0.0, -1.0])
    scaler.scaler.scaleValue.extend([2.0, 0.5, 1.0])
    w = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    nn_builder = NeuralNetworkBuilder([("scaled", datatypes.Array(3))], [("hidden", datatypes.Array(2))],
                                      disable_rank5_shape_mapping=True)
    nn_builder.add_inner_product("fc", w, np.array([0.5, -0.5], np.float32), 3, 2, True, "scaled", "hidden")

    lin = torch.nn.Linear(2, 2)
    traced = torch.jit.trace(lin.eval(), torch.zeros(2))
    prog = ct.convert(traced, inputs=[ct.TensorType(name="hidden", shape=(2,))], outputs=[ct.TensorType(name="y")],
                      convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                      minimum_deployment_target=ct.target.iOS15).get_spec()

    spec = Model_pb2.Model()
    spec.specificationVersion = prog.specificationVersion
    spec.description.input.add().CopyFrom(scaler.description.input[0])
    spec.description.output.add().CopyFrom(prog.description.output[0])
    for sub in (scaler, nn_builder.spec, prog):
        spec.pipeline.models.add().CopyFrom(sub)
    runner = _build(spec)
    x = np.array([0.5, 2.0, -3.0])
    out = runner.run({"x": torch.tensor(x)})
    hidden = w.astype(np.float64) @ ((x + [1.0, 0.0, -1.0]) * [2.0, 0.5, 1.0]) + [0.5, -0.5]
    want = lin.weight.detach().double().numpy() @ hidden + lin.bias.detach().double().numpy()
    np.testing.assert_allclose(out["y"].double().cpu().numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["visionFeaturePrint", "wordTagger", "textClassifier", "gazetteer", "wordEmbedding",
                                  "soundAnalysisPreprocessing", "linkedModel", "itemSimilarityRecommender"])
def test_apple_only_models_are_unsupported_by_name(kind):
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    getattr(spec, kind).SetInParent()
    with pytest.raises(UnsupportedError) as e:
        _build(spec)
    assert str(e.value).startswith(f"Core ML model type {kind!r} needs ")
    assert "\n" not in str(e.value)


def test_malformed_classic_specs():
    _ct()
    spec = _tree_regressor("BranchOnValueLessThan", 1.0)
    spec.treeEnsembleRegressor.treeEnsemble.nodes[0].falseChildNodeId = 9
    with pytest.raises(UnsupportedError,
                       match="^the treeEnsembleRegressor: tree 0 node 0 names a missing child node 9$"):
        _build(spec)
    from coremltools.proto import Model_pb2

    empty = Model_pb2.Model()
    empty.pipeline.SetInParent()
    with pytest.raises(UnsupportedError, match="^the pipeline has no models$"):
        _build(empty)
    with pytest.raises(UnsupportedError, match="^Core ML model type 'unknown' is not supported by TensorLogic$"):
        _build(Model_pb2.Model())


def test_pipeline_feature_wiring_errors():
    from coremltools.proto import Model_pb2

    scaler = _transform_spec("scaler", [("x", "multiArrayType", (2,))], [("y", "multiArrayType", (2,))])
    norm = _transform_spec("normalizer", [("z", "multiArrayType", (2,))], [("n", "multiArrayType", (2,))])
    spec = Model_pb2.Model()
    spec.description.input.add().CopyFrom(scaler.description.input[0])
    spec.description.output.add().CopyFrom(norm.description.output[0])
    spec.pipeline.models.add().CopyFrom(scaler)
    spec.pipeline.models.add().CopyFrom(norm)
    with pytest.raises(UnsupportedError, match="^pipeline model 1 \\(normalizer\\) needs feature 'z', which neither "
                                               "the pipeline inputs nor an earlier model provide$"):
        _build(spec)


def test_input_errors():
    _ct()
    runner = _build(_tree_regressor("BranchOnValueLessThan", 1.0))
    with pytest.raises(InputError, match="^input 'x' is missing$"):
        runner.run({})
    with pytest.raises(InputError, match="^input 'x' is not numeric \\(str\\)$"):
        runner.run({"x": "abc"})
    with pytest.raises(InputError, match="^the tree ensemble reads feature 1, the input has 1 values$"):
        runner.run({"x": torch.tensor([1.0])})
