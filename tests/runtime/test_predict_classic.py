"""The public predict API on NeuralNetwork, pipeline and classic Core ML models, end to end.

Models are converted here with coremltools (``convert_to="neuralnetwork"``, its sklearn converter) and
saved as ``.mlmodel`` files; ``tl.load_model(path).predict`` (and ``tl.coreml.MLModel``, ``tl predict``)
must match the source: torch in float64 for the networks, scikit-learn's ``predict_proba`` / ``predict``
for the sklearn models. The networks follow torchvision's ResNet-18 and MobileNetV2 layouts exactly
(torchvision itself is not installed here), at full width on 224x224 inputs and, on every device, at
reduced width and input size.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import tensorlogic as tl
from conftest import TOLERANCES
from tensorlogic.cli import main as tl_main
from tensorlogic.errors import InputError

ct = pytest.importorskip("coremltools")
warnings.filterwarnings("ignore")


# --- torchvision's layouts ------------------------------------------------------------------------


def _divisible(v: float, d: int = 8) -> int:
    """torchvision's channel rounding for MobileNetV2 widths."""
    out = max(d, int(v + d / 2) // d * d)
    return out + d if out < 0.9 * v else out


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + identity)


class ResNet18(nn.Module):
    """torchvision.models.resnet18's layout; ``width`` scales every stage (64 is torchvision's)."""

    def __init__(self, width: int = 64, classes: int = 1000):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], w[0]
        for i, c in enumerate(w):
            stages.append(nn.Sequential(BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[3], classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2's layout; ``width_mult`` as in torchvision (1.0 is the default)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, width_mult: float = 1.0, classes: int = 1000):
        super().__init__()
        cin = _divisible(32 * width_mult)
        last = _divisible(1280 * max(1.0, width_mult))
        feats: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin),
                                                nn.ReLU6(inplace=True))]
        for t, c, n, s in self.SETTINGS:
            cout = _divisible(c * width_mult)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BatchNorm statistics from a few random batches: random ones leave the outputs vanishingly small."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, *x.shape[1:]))
    return model.eval()


def _save_nn(model: nn.Module, x: torch.Tensor, path: Path, **kwargs) -> Path:
    traced = torch.jit.trace(model.eval(), x)
    inputs = kwargs.pop("inputs", None) or [ct.TensorType(name="x", shape=tuple(x.shape))]
    ct.convert(traced, inputs=inputs, convert_to="neuralnetwork", **kwargs).save(str(path))
    return path


def _check_network(make, size: int, path: Path, device: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, size, size)
    model = _calibrated(make(), x)
    model_path = _save_nn(model, x, path)
    m = tl.load_model(model_path, device=device)
    assert m.file.model_type == "neuralNetwork"
    (name,) = [f.name for f in m.metadata.outputs]
    got = m.predict({"x": x.numpy()})[name]
    want = model.double()(x.double()).detach().numpy()
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == want.shape
    # fp32 arithmetic over a deep network: the float32 tolerance, scaled by the output's magnitude and
    # by 10 for the accumulated rounding of ~20 layers.
    atol, rtol = TOLERANCES["float32"]
    np.testing.assert_allclose(got, want, atol=10 * atol * float(np.abs(want).max()), rtol=10 * rtol)


@pytest.mark.parametrize("make,size", [(lambda: ResNet18(width=16, classes=10), 64),
                                       (lambda: MobileNetV2(width_mult=0.35, classes=10), 64)],
                         ids=["resnet18-narrow", "mobilenetv2-narrow"])
def test_torchvision_networks_match_torch(tmp_path, device, make, size):
    _check_network(make, size, tmp_path / "net.mlmodel", device)


@pytest.mark.parametrize("make", [ResNet18, MobileNetV2], ids=["resnet18", "mobilenetv2"])
def test_torchvision_networks_full_width_match_torch(tmp_path, device, make):
    _check_network(make, 224, tmp_path / "net.mlmodel", device)


# --- image classifier: PIL input, preprocessing, labels ------------------------------------------


@pytest.fixture(scope="module")
def image_classifier(tmp_path_factory):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
                          nn.Softmax(dim=1)).eval()
    x = torch.rand(1, 3, 16, 16)
    scale, bias = 1 / 255.0, [-0.5, 0.1, 0.2]
    path = _save_nn(model, x, tmp_path_factory.mktemp("img") / "classifier.mlmodel",
                    inputs=[ct.ImageType(name="img", shape=x.shape, scale=scale, bias=bias,
                                         color_layout=ct.colorlayout.BGR)],
                    classifier_config=ct.ClassifierConfig(["cat", "dog", "emu"]))
    return path, model, scale, bias


def test_image_classifier_from_pil(image_classifier):
    path, model, scale, bias = image_classifier
    m = tl.load_model(path)
    rgb = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = m.predict({"img": Image.fromarray(rgb, "RGB")})
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    label, probs = spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName
    assert set(out) == {label, probs}
    # the network sees BGR pixels scaled and biased by the spec's preprocessing
    bgr = torch.from_numpy(rgb[:, :, ::-1].transpose(2, 0, 1).copy()).double()[None]
    want = model.double()(bgr * scale + torch.tensor(bias, dtype=torch.float64).reshape(1, 3, 1, 1))[0]
    want = want.detach().numpy()
    assert list(out[probs]) == ["cat", "dog", "emu"] and all(type(v) is float for v in out[probs].values())
    np.testing.assert_allclose([out[probs][k] for k in ("cat", "dog", "emu")], want, atol=1e-5)
    assert out[label] == ["cat", "dog", "emu"][int(np.argmax(want))]
    # the same through the coremltools drop-in
    again = tl.coreml.MLModel(str(path), compute_units="CPU_ONLY").predict({"img": Image.fromarray(rgb, "RGB")})
    assert again[label] == out[label] and again[probs] == pytest.approx(out[probs])


def test_image_input_errors(image_classifier):
    m = tl.load_model(image_classifier[0])
    with pytest.raises(InputError, match=r"^image input 'img' is 8x8, the model expects 16x16$"):
        m.predict({"img": Image.new("RGB", (8, 8))})
    with pytest.raises(InputError, match=r"^image input 'img' is BGR: it needs a PIL image of mode 'RGB', not 'L'$"):
        m.predict({"img": Image.new("L", (16, 16))})
    with pytest.raises(InputError, match=r"^input 'img' is an image input: pass a PIL.Image, not ndarray$"):
        m.predict({"img": np.zeros((1, 3, 16, 16), np.float32)})


# --- plain networks: intermediates, lists, errors, CLI --------------------------------------------


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).eval()
    x = torch.rand(2, 4)
    path = _save_nn(model, x, tmp_path_factory.mktemp("net") / "mlp.mlmodel", outputs=[ct.TensorType(name="y")])
    return path, model


def _ref(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return model.double()(torch.from_numpy(x).double()).detach().numpy()


def test_network_predict_list_intermediates_and_dtypes(small_net, monkeypatch, capsys):
    path, model = small_net
    m = tl.load_model(path)
    rng = np.random.default_rng(4)
    xs = [rng.random((2, 4), dtype=np.float32) for _ in range(3)]
    outs = m.predict([{"x": x} for x in xs])
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out["y"], _ref(model, x), atol=1e-5, rtol=1e-4)
    # float64 and torch inputs are cast to the declared float32
    np.testing.assert_allclose(m.predict({"x": torch.from_numpy(xs[0]).double()})["y"], outs[0]["y"], atol=1e-6)
    # an intermediate blob: the first layer's output, compared with torch's first Linear
    spec = m.file.spec
    first = spec.neuralNetwork.layers[0].output[0]
    inner = m.predict({"x": xs[0]}, outputs=[first])
    want = model[0].double()(torch.from_numpy(xs[0]).double()).detach().numpy()
    np.testing.assert_allclose(np.asarray(inner[first]).reshape(want.shape), want, atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="^no blob named 'nowhere' was computed$"):
        m.predict({"x": xs[0]}, outputs=["nowhere"])
    monkeypatch.setenv("TL_DEBUG", "1")
    m.predict({"x": xs[0]})
    assert first in capsys.readouterr().err


def test_network_input_errors(small_net):
    m = tl.load_model(small_net[0])
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(InputError, match=r"^input 'x' is missing \(model inputs: x\)$"):
        m.predict({})
    with pytest.raises(InputError, match=r"^unknown input 'z' \(model inputs: x\)$"):
        m.predict({"x": x, "z": x})
    with pytest.raises(InputError, match=r"^input 'x' has shape \[3, 4\], the model accepts \[2, 4\]$"):
        m.predict({"x": np.zeros((3, 4), np.float32)})
    with pytest.raises(InputError, match=r"^input 'x' holds <U1 data, the model expects fp32$"):
        m.predict({"x": np.array(["a"])})
    with pytest.raises(InputError, match=r"^predict takes a dict of inputs \(or a list of dicts\), not int$"):
        m.predict(3)
    with pytest.raises(InputError, match=r"^the neuralNetwork model is not stateful: predict it without a state$"):
        m.predict({"x": x}, state=object())


def test_cli_predict_network(small_net, tmp_path, capsys):
    path, model = small_net
    x = np.random.default_rng(5).random((2, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert tl_main(["predict", str(path), "--input", f"x={tmp_path / 'x.npy'}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(np.array(doc["y"]["values"]), _ref(model, x), atol=1e-5, rtol=1e-4)


def test_rank5_network_takes_sequence_and_batch_axes(tmp_path):
    """A legacy (rank-5 mapping) network declared on [C] also takes [Seq, Batch, C] inputs, like Core ML."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("x", datatypes.Array(3))], [("y", None)])
    b.add_activation("act", "SIGMOID", "x", "y")
    path = tmp_path / "rank5.mlmodel"
    ct.models.MLModel(b.spec).save(str(path))
    m = tl.load_model(path)
    x = np.random.default_rng(6).normal(size=(2, 1, 3)).astype(np.float32)
    got = m.predict({"x": x})["y"]
    np.testing.assert_allclose(np.asarray(got).reshape(x.shape), 1 / (1 + np.exp(-x.astype(np.float64))), atol=1e-6)
    np.testing.assert_allclose(np.asarray(m.predict({"x": x[0, 0]})["y"]).reshape(3),
                               1 / (1 + np.exp(-x[0, 0].astype(np.float64))), atol=1e-6)
    with pytest.raises(InputError, match=r"^input 'x' has shape \[2, 4\], the model accepts \[3\]$"):
        m.predict({"x": np.zeros((2, 4), np.float32)})


# --- scikit-learn pipelines -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris():
    pytest.importorskip("sklearn", reason="coremltools' sklearn converter needs scikit-learn <= 1.5.1")
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


def _save_sklearn(model, path: Path) -> Path:
    ct.converters.sklearn.convert(model, "x", "target").save(str(path))
    return path


def _probs(out: dict, classes) -> np.ndarray:
    return np.array([out["classProbability"][int(c)] for c in classes])


def test_sklearn_scaler_svc_pipeline(iris, tmp_path):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = iris
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC(probability=True, random_state=0))]).fit(x, y)
    m = tl.load_model(_save_sklearn(pipe, tmp_path / "svc.mlmodel"))
    assert m.file.model_type == "pipelineClassifier"
    rows = x[::2]
    outs = m.predict([{"x": row} for row in rows])
    got = np.array([_probs(o, pipe.classes_) for o in outs])
    np.testing.assert_allclose(got, pipe.predict_proba(rows), atol=1e-9)
    assert [o["target"] for o in outs] == list(pipe.predict(rows))
    assert all(type(o["target"]) is int for o in outs)


def test_pipeline_debug_trace(iris, tmp_path, monkeypatch, capsys):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = iris
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC(random_state=0))]).fit(x, y)
    m = tl.load_model(_save_sklearn(pipe, tmp_path / "svc.mlmodel"))
    monkeypatch.setenv("TL_DEBUG", "2")
    m.predict({"x": x[0]})
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[tl] pipeline model")]
    assert len(lines) == 2 and "(scaler)" in lines[0] and "(supportVectorClassifier)" in lines[1]
    assert "min=" in lines[0]


def _clear_of_thresholds(x: np.ndarray, pipe) -> np.ndarray:
    """Rows whose scaled features are not within 1e-6 of a split threshold: scikit-learn compares in
    float32, Core ML (and we) in float64, so values that close to a threshold may branch differently."""
    scaled = pipe[0].transform(x)
    keep = [not any(np.abs(s[t.feature[t.feature >= 0]] - t.threshold[t.feature >= 0]).min(initial=1) < 1e-6
                    for t in (e.tree_ for e in pipe[-1].estimators_)) for s in scaled]
    return x[np.array(keep)]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_sklearn_scaler_random_forest_pipeline(iris, tmp_path, n_classes):
    """StandardScaler → RandomForestClassifier through ``tl.coreml.MLModel``.

    Two classes: coremltools writes each tree's class fractions scaled by 1/n_trees, so the model's
    probabilities are scikit-learn's ``predict_proba``. More classes (coremltools issue #1541): it
    writes them unscaled and Core ML sums the trees without normalizing, so the model's "probabilities"
    are n_trees × ``predict_proba``; we compare them exactly so, and compare the label with ``predict``.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = iris
    target = y if n_classes == 3 else (y == 2).astype(int)
    trees = 10
    pipe = Pipeline([("scale", StandardScaler()),
                     ("rf", RandomForestClassifier(n_estimators=trees, max_depth=4, random_state=0))]).fit(x, target)
    m = tl.coreml.MLModel(str(_save_sklearn(pipe, tmp_path / "rf.mlmodel")))
    rows = _clear_of_thresholds(x, pipe)
    assert len(rows) > 60
    factor = 1.0 if n_classes == 2 else float(trees)
    for row in rows:
        out = m.predict({"x": row})
        np.testing.assert_allclose(_probs(out, pipe.classes_), factor * pipe.predict_proba(row[None])[0], atol=1e-9)
        assert out["target"] == pipe.predict(row[None])[0]


def test_sklearn_regressor_and_cli(iris, tmp_path, capsys):
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = iris
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LinearRegression())]).fit(x[:, :3], x[:, 3])
    path = _save_sklearn(pipe, tmp_path / "lr.mlmodel")
    m = tl.load_model(path)
    got = [m.predict({"x": row})["target"] for row in x[:20, :3]]
    assert all(type(v) is float for v in got)
    np.testing.assert_allclose(got, pipe.predict(x[:20, :3]), rtol=1e-9)
    (tmp_path / "x.json").write_text(json.dumps(x[0, :3].tolist()))
    assert tl_main(["predict", str(path), "--input", f"x={tmp_path / 'x.json'}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["target"]["value"] == pytest.approx(pipe.predict(x[:1, :3])[0], rel=1e-9)
    with pytest.raises(InputError, match=r"^input 'x' has shape \[4\], the model accepts \[3\]$"):
        m.predict({"x": x[0]})


def test_coreml_drop_in_from_network_spec(small_net):
    path, model = small_net
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    m = tl.coreml.MLModel(spec, compute_units=ct.ComputeUnit.CPU_ONLY)
    assert list(m.input_description) == ["x"] and list(m.output_description) == ["y"]
    assert m.get_spec().WhichOneof("Type") == "neuralNetwork"
    x = np.random.default_rng(8).random((2, 4), dtype=np.float32)
    np.testing.assert_allclose(m.predict({"x": x})["y"], _ref(model, x), atol=1e-5, rtol=1e-4)
    assert not m._is_stateful()


def test_dictionary_input(iris, tmp_path):
    """A DictVectorizer (a dictionary input) through predict, and the error for a value of the wrong kind."""
    from sklearn.feature_extraction import DictVectorizer

    rows = [{"a": 1.0, "b": 2.0}, {"b": -1.5, "c": 4.0}, {"a": 0.5}]
    vec = DictVectorizer(sparse=False).fit(rows)
    path = tmp_path / "dv.mlmodel"
    ct.converters.sklearn.convert(vec, "x", "out").save(str(path))
    m = tl.load_model(path)
    for row in rows:
        np.testing.assert_allclose(m.predict({"x": row})["out"], vec.transform([row])[0])
    with pytest.raises(InputError, match=r"^input 'x' is a dictionary input, not list$"):
        m.predict({"x": [1.0, 2.0]})


def test_network_flexible_input_shape(tmp_path):
    """A NeuralNetwork converted with a RangeDim takes every length in its range and names the range otherwise."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU()).eval()
    x = torch.rand(1, 5, 3)
    path = _save_nn(model, x, tmp_path / "flex.mlmodel",
                    inputs=[ct.TensorType(name="x", shape=(1, ct.RangeDim(1, 8), 3))],
                    outputs=[ct.TensorType(name="y")])
    m = tl.load_model(path)
    for n in (1, 5, 8):
        xs = np.random.default_rng(n).random((1, n, 3), dtype=np.float32)
        np.testing.assert_allclose(m.predict({"x": xs})["y"], _ref(model, xs), atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match=r"^input 'x' has shape \[1, 9, 3\], the model accepts \[1, 1\.\.8, 3\]$"):
        m.predict({"x": np.zeros((1, 9, 3), np.float32)})
