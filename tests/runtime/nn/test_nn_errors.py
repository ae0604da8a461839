"""Every error a NeuralNetwork spec or its inputs can cause: one line, naming the layer and its type."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorlogic.errors import InputError, OpError, TensorLogicError, UnsupportedError


def _build(spec, policy="auto"):
    from tensorlogic.runtime.nn import build

    return build(spec, "cpu", policy)


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_custom_layer_is_unsupported_at_build(nnh):
    b = nnh.make_builder({"x": (3,)})
    layer = b.add_custom("my_custom", ["x"], ["out"])
    layer.custom.className = "MyFancyLayer"
    with pytest.raises(UnsupportedError) as e:
        _build(b.spec)
    assert _one_line(e.value) == ("NeuralNetwork custom layer 'my_custom' (class 'MyFancyLayer') needs code "
                                  "TensorLogic does not have")


def test_layer_without_parameters(nnh):
    b = nnh.make_builder({"x": (3,)})
    b.add_activation("relu", "RELU", "x", "out")
    b.spec.neuralNetwork.layers[0].ClearField("activation")
    with pytest.raises(OpError) as e:
        _build(b.spec)
    assert _one_line(e.value) == "op layer -> relu: has no layer parameters (unknown or empty layer type)"


def test_unregistered_layer_type_names_type_and_layer():
    from tensorlogic.runtime.nn import registry

    with pytest.raises(UnsupportedError) as e:
        registry.get("fancyNewLayer", "l7")
    assert _one_line(e.value) == "NeuralNetwork layer type 'fancyNewLayer' (layer 'l7') is not supported by TensorLogic"


def test_weight_count_mismatch_at_build(nnh):
    b = nnh.make_builder({"x": (4,)})
    b.add_inner_product("fc", np.ones((3, 4), np.float32), None, 4, 3, False, "x", "out")
    del b.spec.neuralNetwork.layers[0].innerProduct.weights.floatValue[-2:]
    with pytest.raises(OpError) as e:
        _build(b.spec)
    assert _one_line(e.value) == "op innerProduct -> fc: weights: holds 10 values, the layer needs 12"


def test_palette_index_past_lookup_table(nnh):
    b = nnh.make_builder({"x": (2,)})
    b.add_inner_product("fc", bytes([0b00011011]), None, 2, 2, False, "x", "out", is_quantized_weight=True,
                        quantization_type="lut", nbits=2, quant_lut=np.array([0.0, 1.0, 2.0, 3.0]))
    del b.spec.neuralNetwork.layers[0].innerProduct.weights.quantization.lookupTableQuantization.floatValue[-1]
    with pytest.raises(OpError) as e:
        _build(b.spec)
    assert _one_line(e.value) == "op innerProduct -> fc: weights: a palette index reaches past the 3-entry lookup table"


def test_undefined_input_blob_at_build(nnh):
    b = nnh.make_builder({"x": (3,)})
    b.add_activation("relu", "RELU", "nowhere", "out")
    with pytest.raises(OpError) as e:
        _build(b.spec)
    assert _one_line(e.value) == ("op activation -> relu: input blob 'nowhere' is not produced by the model inputs "
                                  "or an earlier layer")


def test_wrong_input_count_at_build(nnh):
    b = nnh.make_builder({"x": (3,), "y": (3,)})
    b.add_elementwise("e", ["x", "y"], "out", "ADD")
    b.spec.neuralNetwork.layers[0].ClearField("add")
    b.spec.neuralNetwork.layers[0].whereBroadcastable.SetInParent()
    with pytest.raises(OpError) as e:
        _build(b.spec)
    assert _one_line(e.value) == "op whereBroadcastable -> e: takes 3 inputs, the layer lists 2"


def test_run_time_failure_names_layer_type_and_shapes(nnh):
    b = nnh.make_builder({"x": (2, 3)})
    b.add_reshape_static("rs", "x", "out", (4, 2))
    runner = _build(b.spec)
    with pytest.raises(OpError) as e:
        runner.run({"x": torch.zeros(2, 3)})
    text = _one_line(e.value)
    assert text.startswith("op reshapeStatic -> rs: RuntimeError: shape '[4, 2]' is invalid for input of size 6")
    assert text.endswith("(inputs: float32[2,3])")


def test_index_out_of_range_at_run(nnh):
    b = nnh.make_builder({"x": (4,), "i": (2,)})
    b.add_gather("g", ["x", "i"], "out", axis=0)
    runner = _build(b.spec)
    with pytest.raises(OpError) as e:
        runner.run({"x": torch.zeros(4), "i": torch.tensor([1.0, 9.0])})
    assert _one_line(e.value) == ("op gather -> g: IndexError: an index is out of range for an axis of size 4 "
                                  "(inputs: float32[4], float32[2])")


def test_loop_break_outside_a_loop(nnh):
    b = nnh.make_builder({"x": (1,)})
    b.add_copy("c", "x", "out")
    b.add_loop_break("stop")
    with pytest.raises(OpError) as e:
        _build(b.spec)
    assert _one_line(e.value) == "op loopBreak -> stop: loopBreak is only allowed inside a loop body"


def test_missing_and_non_numeric_inputs(nnh):
    b = nnh.make_builder({"x": (3,)})
    b.add_activation("relu", "RELU", "x", "out")
    runner = _build(b.spec)
    with pytest.raises(InputError, match="^input 'x' is missing$"):
        runner.run({})
    with pytest.raises(InputError, match="^input 'x' is not numeric \\(dict\\)$"):
        runner.run({"x": {"a": 1}})
    with pytest.raises(InputError, match="^no blob named 'nope' was computed$"):
        runner.run({"x": torch.zeros(3)}, outputs=["nope"])


def test_classifier_without_probability_blob(nnh):
    b = nnh.make_builder({"x": (3,)}, mode="classifier")
    b.add_softmax_nd("sm", "x", "out", axis=-1)
    b.set_class_labels(["a", "b", "c"], predicted_feature_name="label")
    spec = b.spec
    spec.neuralNetworkClassifier.labelProbabilityLayerName = "ghost"
    with pytest.raises(UnsupportedError) as e:
        _build(spec)
    assert _one_line(e.value) == "class probabilities blob 'ghost' is not produced by any layer"


def test_classifier_label_count_mismatch_at_run(nnh):
    b = nnh.make_builder({"x": (3,)}, mode="classifier")
    b.add_softmax_nd("sm", "x", "out", axis=-1)
    b.set_class_labels(["a", "b"], predicted_feature_name="label", prediction_blob="out")
    runner = _build(b.spec)
    with pytest.raises(OpError) as e:
        runner.run({"x": torch.zeros(3)})
    assert _one_line(e.value) == "op classifier -> out: class probabilities blob has 3 values for 2 labels"


def test_bad_policy_and_wrong_model_type(nnh):
    b = nnh.make_builder({"x": (3,)})
    b.add_activation("relu", "RELU", "x", "out")
    with pytest.raises(TensorLogicError,
                       match="^unknown precision policy 'fp8' \\(use one of auto, fp32, fp16, fp16-storage\\)$"):
        _build(b.spec, policy="fp8")
    from coremltools.proto import Model_pb2

    other = Model_pb2.Model()
    other.scaler.shiftValue.append(1.0)
    with pytest.raises(UnsupportedError, match="^model type 'scaler' is not a NeuralNetwork$"):
        _build(other)


def test_while_loop_that_never_ends_is_stopped(nnh, monkeypatch):
    from coremltools.models.neural_network import NeuralNetworkBuilder

    from tensorlogic.runtime.nn import control

    monkeypatch.setattr(control, "MAX_WHILE_ITERATIONS", 50)
    b = nnh.make_builder({"x": (1,)})
    b.add_copy("c", "x", "out")
    loop = b.add_loop("forever", condition="go")
    NeuralNetworkBuilder(nn_spec=loop.loop.conditionNetwork, disable_rank5_shape_mapping=True).add_greater_than(
        "gt", ["out"], "go", alpha=-1.0)
    NeuralNetworkBuilder(nn_spec=loop.loop.bodyNetwork, disable_rank5_shape_mapping=True).add_elementwise(
        "inc", ["out"], "out2", "ADD", alpha=1.0)
    runner = _build(b.spec)
    with pytest.raises(OpError) as e:
        runner.run({"x": torch.zeros(1)})
    assert _one_line(e.value) == "op loop -> forever: while loop still running after 50 iterations"


def test_absurd_static_shapes_are_refused_before_allocating(nnh):
    b = nnh.make_builder({"x": (1,)})
    b.add_fill_static("f", "out", (1 << 20, 1 << 20), value=1.0)
    with pytest.raises(OpError) as e:
        _build(b.spec)
    assert _one_line(e.value) == "op fillStatic -> f: targetShape [1048576, 1048576] has more than 2147483648 elements"
    b = nnh.make_builder({"x": (1,)})
    b.add_range_static("r", "out", end=1.0, start=0.0, step=1e-12)
    with pytest.raises(OpError) as e:
        _build(b.spec)
    assert _one_line(e.value) == ("op rangeStatic -> r: ValueError: range(0, 1, 1e-12) has more than "
                                  "2147483648 elements")
