"""Whole NeuralNetwork models: torch models converted with ``convert_to="neuralnetwork"`` against torch, and
the runner's model-level features (rank-5 inputs, image preprocessing, classifiers, optional inputs)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import TOLERANCES


def _convert(module, example, **kwargs):
    warnings.filterwarnings("ignore")
    import coremltools as ct

    traced = torch.jit.trace(module.eval(), example)
    inputs = kwargs.pop("inputs", None) or [ct.TensorType(name="x", shape=example.shape)]
    return ct.convert(traced, inputs=inputs, convert_to="neuralnetwork", **kwargs).get_spec()


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class TinyResNet(nn.Module):
    """torchvision's ResNet layout (7x7 stem, max pool, basic blocks, global pool, fc), narrow."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2), BasicBlock(16, 32, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class TinyMobileNet(nn.Module):
    """torchvision's MobileNetV2 layout (inverted residuals with depthwise convolutions, ReLU6), narrow."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
            InvertedResidual(8, 8, 1, 1), InvertedResidual(8, 12, 2, 4), InvertedResidual(12, 12, 1, 4),
            InvertedResidual(12, 16, 2, 4), nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def _calibrate(model, x):
    """Give BatchNorm real statistics (random ones leave activations vanishingly small)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand_like(x))
    return model.eval()


@pytest.mark.parametrize("make", [TinyResNet, TinyMobileNet], ids=["resnet", "mobilenet"])
def test_converted_cnn_matches_torch(device, make):
    from tensorlogic.runtime.nn import build

    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    model = _calibrate(make(), x)
    spec = _convert(model, x)
    kinds = {layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers}
    assert "convolution" in kinds
    runner = build(spec, device)
    (name,) = runner.output_names
    got = runner.run({"x": x})[name].detach().cpu().double()
    want = model.double()(x.double()).detach()
    atol, rtol = TOLERANCES["float32"]
    scale = float(want.abs().max())
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=atol * 10 * scale, rtol=rtol * 10)


def test_image_classifier_with_preprocessing(device):
    """An image input with scale and per-channel bias (BGR) and a classifier head with string labels."""
    import coremltools as ct

    from tensorlogic.runtime.nn import build

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
                          nn.Softmax(dim=1))
    x = torch.rand(1, 3, 16, 16)
    labels = ["cat", "dog", "emu"]
    scale, bias = 1 / 255.0, [-0.5, 0.1, 0.2]
    spec = _convert(model, x, inputs=[ct.ImageType(name="img", shape=x.shape, scale=scale, bias=bias,
                                                   color_layout=ct.colorlayout.BGR)],
                    classifier_config=ct.ClassifierConfig(labels))
    assert spec.WhichOneof("Type") == "neuralNetworkClassifier"
    assert spec.neuralNetworkClassifier.preprocessing[0].WhichOneof("preprocessor") == "scaler"
    pixels = torch.randint(0, 256, (1, 3, 16, 16)).float()  # 0-255, in the spec's BGR channel order
    runner = build(spec, device)
    out = runner.run({"img": pixels})
    probs = model(pixels * scale + torch.tensor(bias).reshape(1, 3, 1, 1)).detach()[0]
    desc = spec.description
    got = out[desc.predictedProbabilitiesName]
    assert list(got) == labels
    np.testing.assert_allclose([got[k] for k in labels], probs.numpy(), atol=1e-5)
    assert out[desc.predictedFeatureName] == labels[int(probs.argmax())]


def test_rank5_inputs_keep_sequence_and_batch(nnh, device):
    """Legacy mapping: a [C] input fed as [Seq, Batch, C] becomes [Seq, Batch, C, 1, 1]."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = nnh.make_builder({"x": (3,)}, ("out",), rank5=True)
    b.add_inner_product("fc", w, None, 3, 4, False, "x", "out")
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    out = nnh.run_spec(b.spec, {"x": x}, device)["out"]
    assert out.shape == (2, 5, 4, 1, 1)
    np.testing.assert_allclose(out[..., 0, 0], x.astype(np.float64) @ w.T, rtol=1e-5, atol=1e-5)


def test_rank5_declared_output_shape(nnh, device):
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("x", datatypes.Array(2, 3, 4))], [("out", datatypes.Array(24))])
    b.add_flatten("f", 0, "x", "out")
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = nnh.run_spec(b.spec, {"x": x}, device)["out"]
    assert out.shape == (24,)  # the declared [C] shape, not the rank-5 blob
    np.testing.assert_array_equal(out, x.reshape(-1))


def test_optional_input_default_and_int_output(nnh, device):
    from coremltools.proto import FeatureTypes_pb2

    b = nnh.make_builder({"x": (4,), "y": (4,)}, ("out", "idx"))
    b.add_add_broadcastable("add", ["x", "y"], "out")
    b.add_argmax("am", "out", "idx", axis=0)
    b.set_optional_input(1, value=2.5, format="float")
    b.spec.description.output[1].type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.INT32
    from tensorlogic.runtime.nn import build

    runner = build(b.spec, device)
    out = runner.run({"x": torch.tensor([1.0, 4.0, 2.0, 0.0])})
    np.testing.assert_allclose(out["out"].cpu().numpy(), [3.5, 6.5, 4.5, 2.5])
    assert out["idx"].dtype == torch.int32 and out["idx"].tolist() == [1]


def test_intermediate_blobs_and_trace(nnh, capsys, monkeypatch):
    from tensorlogic.runtime.nn import build

    b = nnh.make_builder({"x": (3,)}, ("out",))
    b.add_activation("relu", "RELU", "x", "hidden")
    b.add_elementwise("scale", ["hidden"], "out", "MULTIPLY", alpha=3.0)
    runner = build(b.spec)
    monkeypatch.setenv("TL_DEBUG", "2")
    got = runner.run({"x": torch.tensor([-1.0, 0.5, 2.0])}, outputs=["hidden", "out"])
    assert got["hidden"].tolist() == [0.0, 0.5, 2.0] and got["out"].tolist() == [0.0, 1.5, 6.0]
    err = capsys.readouterr().err
    assert "[tl] activation relu -> hidden: float32[3] min=0 max=2" in err
    assert "[tl] multiply scale -> out" in err
    monkeypatch.delenv("TL_DEBUG")
    assert os.environ.get("TL_DEBUG") is None
