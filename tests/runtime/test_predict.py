"""The coremltools-compatible predict API on models converted here with coremltools.

References are the torch modules the models were converted from (float64) and numpy; never our own
outputs. Each model is converted once per module.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tensorlogic as tl
from tensorlogic.cli import main as tl_main
from tensorlogic.errors import InputError, UnsupportedError
from tensorlogic.runtime.predictor import resolve_device

ct = pytest.importorskip("coremltools")
warnings.filterwarnings("ignore")


def _convert(module, example, path: Path, precision="fp32", target="iOS16", **kwargs) -> Path:
    traced = torch.jit.trace(module.eval(), example)
    opts = {"convert_to": "mlprogram", "minimum_deployment_target": getattr(ct.target, target),
            "compute_precision": ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32}
    opts.update(kwargs)
    ct.convert(traced, **opts).save(str(path))
    return path


class _Affine(torch.nn.Module):
    def __init__(self, n_in=4, n_out=3):
        super().__init__()
        torch.manual_seed(1)
        self.fc = torch.nn.Linear(n_in, n_out)

    def forward(self, x):
        return torch.tanh(self.fc(x))


class _Pixels(torch.nn.Module):
    # The program sees the image after its scale/bias: returning a simple function of it lets the
    # test check channel order and scaling exactly.
    def forward(self, x):
        return x * 2.0


class _Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("acc", torch.zeros(1, 3, dtype=torch.float16))

    def forward(self, x):
        self.acc.add_(x)
        return self.acc * 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    x = torch.rand(2, 4)
    out = {}
    out["affine"] = _convert(_Affine(), x, d / "affine.mlpackage", inputs=[ct.TensorType(name="x", shape=(2, 4))],
                             outputs=[ct.TensorType(name="y")])
    out["range"] = _convert(
        _Affine(), x, d / "range.mlpackage",
        inputs=[ct.TensorType(name="x", shape=(ct.RangeDim(1, 8, default=2), 4))], outputs=[ct.TensorType(name="y")],
    )
    out["enum"] = _convert(
        _Affine(), x, d / "enum.mlpackage",
        inputs=[ct.TensorType(name="x", shape=ct.EnumeratedShapes(shapes=[(1, 4), (3, 4)], default=(1, 4)))],
        outputs=[ct.TensorType(name="y")],
    )
    img = torch.rand(1, 3, 5, 6)
    for layout in ("RGB", "BGR"):
        out[f"image_{layout}"] = _convert(
            _Pixels(), img, d / f"image_{layout}.mlpackage",
            inputs=[ct.ImageType(name="img", shape=(1, 3, 5, 6), scale=1 / 255.0, bias=[0.1, 0.2, 0.3],
                                 color_layout=getattr(ct.colorlayout, layout))],
            outputs=[ct.TensorType(name="y")],
        )
    out["image_gray"] = _convert(
        _Pixels(), torch.rand(1, 1, 5, 6), d / "image_gray.mlpackage",
        inputs=[ct.ImageType(name="img", shape=(1, 1, 5, 6), scale=0.5, color_layout=ct.colorlayout.GRAYSCALE)],
        outputs=[ct.TensorType(name="y")],
    )
    out["image_range"] = _convert(
        _Pixels(), img, d / "image_range.mlpackage",
        inputs=[ct.ImageType(name="img", shape=(1, 3, ct.RangeDim(4, 12, default=5), ct.RangeDim(4, 12, default=6)),
                             color_layout=ct.colorlayout.RGB)],
        outputs=[ct.TensorType(name="y")],
    )
    out["image_enum"] = _convert(
        _Pixels(), img, d / "image_enum.mlpackage",
        inputs=[ct.ImageType(name="img", shape=ct.EnumeratedShapes(shapes=[(1, 3, 5, 6), (1, 3, 8, 8)]),
                             color_layout=ct.colorlayout.RGB)],
        outputs=[ct.TensorType(name="y")],
    )
    out["image_out"] = _convert(
        _Pixels(), img, d / "image_out.mlpackage", inputs=[ct.TensorType(name="x", shape=(1, 3, 5, 6))],
        outputs=[ct.ImageType(name="pic", color_layout=ct.colorlayout.BGR)],
    )
    out["classifier"] = _convert(
        torch.nn.Sequential(_Affine(4, 3), torch.nn.Softmax(dim=-1)), torch.rand(1, 4), d / "classifier.mlpackage",
        inputs=[ct.TensorType(name="x", shape=(1, 4))], classifier_config=ct.ClassifierConfig(["cat", "dog", "eel"]),
    )
    out["classifier_int"] = _convert(
        torch.nn.Sequential(_Affine(4, 3), torch.nn.Softmax(dim=-1)), torch.rand(1, 4),
        d / "classifier_int.mlpackage", inputs=[ct.TensorType(name="x", shape=(1, 4))],
        classifier_config=ct.ClassifierConfig([10, 20, 30]),
    )
    out["int_input"] = _convert(
        _IntScale(), torch.ones(3, dtype=torch.int32), d / "int_input.mlpackage",
        inputs=[ct.TensorType(name="n", shape=(3,), dtype=np.int32)], outputs=[ct.TensorType(name="y")],
    )
    out["optional"] = _convert(
        _Sum(), (torch.rand(2, 3), torch.rand(2, 3)), d / "optional.mlpackage",
        inputs=[ct.TensorType(name="x", shape=(2, 3)),
                ct.TensorType(name="y", shape=(2, 3), default_value=np.full((2, 3), 0.5, np.float32))],
        outputs=[ct.TensorType(name="z")],
    )
    out["state"] = _convert(
        _Counter(), torch.rand(1, 3), d / "state.mlpackage", precision="fp16", target="iOS18",
        inputs=[ct.TensorType(name="x", shape=(1, 3), dtype=np.float16)],
        states=[ct.StateType(wrapped_type=ct.TensorType(shape=(1, 3), dtype=np.float16), name="acc")],
        outputs=[ct.TensorType(name="y", dtype=np.float16)],
    )
    return out


class _Sum(torch.nn.Module):
    def forward(self, x, y):
        return x + y


class _IntScale(torch.nn.Module):
    def forward(self, n):
        return n * 3 + 1


def _affine_ref(x: np.ndarray) -> np.ndarray:
    m = _Affine().double()
    return m(torch.from_numpy(x.astype(np.float64))).detach().numpy()


def test_predict_matches_torch_and_returns_numpy(models):
    model = tl.load_model(models["affine"], device="cpu")
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    out = model.predict({"x": x})
    assert list(out) == ["y"] and isinstance(out["y"], np.ndarray) and out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], _affine_ref(x), atol=1e-5, rtol=1e-4)
    # torch tensors, float64 arrays and nested lists are accepted and cast like Core ML does
    for given in (torch.from_numpy(x), x.astype(np.float64), x.tolist()):
        np.testing.assert_allclose(model.predict({"x": given})["y"], out["y"], rtol=1e-6)


def test_batch_predict_returns_a_list(models):
    model = tl.load_model(models["affine"], device="cpu")
    xs = [np.full((2, 4), v, np.float32) for v in (0.0, 0.5, 1.0)]
    outs = model.predict([{"x": x} for x in xs])
    assert isinstance(outs, list) and len(outs) == 3
    for x, o in zip(xs, outs):
        np.testing.assert_allclose(o["y"], _affine_ref(x), atol=1e-5, rtol=1e-4)


def test_int_input_sent_as_float_is_cast_to_declared_int32(models):
    model = tl.load_model(models["int_input"], device="cpu")
    out = model.predict({"n": np.array([1.0, 2.0, 7.0], np.float32)})
    np.testing.assert_array_equal(out["y"], np.array([4, 7, 22]))
    assert out["y"].dtype == np.int32


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"x": np.zeros((2, 4)), "z": np.zeros(1)}, "unknown input 'z' (model inputs: x)"),
        ({}, "input 'x' is missing (model inputs: x)"),
        ({"x": np.zeros((2, 5))}, "input 'x' has shape [2, 5], the model accepts [2, 4]"),
        ({"x": np.zeros((2, 4, 1))}, "input 'x' has shape [2, 4, 1], the model accepts [2, 4]"),
        ({"x": np.array([["a"] * 4] * 2)}, "input 'x' holds <U1 data, the model expects fp32"),
        ({"x": Image.new("RGB", (4, 2))}, "input 'x' is an array input ([2, 4]), not an image"),
    ],
)
def test_bad_inputs_give_one_line_input_errors(models, data, message):
    model = tl.load_model(models["affine"], device="cpu")
    with pytest.raises(InputError) as e:
        model.predict(data)
    assert str(e.value) == message


def test_optional_input_takes_its_default(models):
    model = tl.load_model(models["optional"], device="cpu", compute_units="CPU_ONLY")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(model.predict({"x": x})["z"], x + 0.5)
    np.testing.assert_allclose(model.predict({"x": x, "y": np.ones((2, 3))})["z"], x + 1)
    with pytest.raises(InputError, match="input 'x' is missing"):
        model.predict({"y": np.ones((2, 3))})


def test_predict_rejects_non_dict(models):
    model = tl.load_model(models["affine"], device="cpu")
    with pytest.raises(InputError, match="predict takes a dict of inputs"):
        model.predict(np.zeros((2, 4)))


def test_range_flexible_shape(models):
    model = tl.load_model(models["range"], device="cpu")
    for n in (1, 5, 8):
        x = np.random.default_rng(n).random((n, 4), dtype=np.float32)
        np.testing.assert_allclose(model.predict({"x": x})["y"], _affine_ref(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match=r"^input 'x' has shape \[9, 4\], the model accepts \[1\.\.8, 4\]$"):
        model.predict({"x": np.zeros((9, 4), np.float32)})


def test_enumerated_flexible_shape(models):
    model = tl.load_model(models["enum"], device="cpu")
    x = np.random.default_rng(3).random((3, 4), dtype=np.float32)
    np.testing.assert_allclose(model.predict({"x": x})["y"], _affine_ref(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match=r"^input 'x' has shape \[2, 4\], the model accepts \[1, 4\] or \[3, 4\]$"):
        model.predict({"x": np.zeros((2, 4), np.float32)})


def _rgb_image(seed=0, size=(6, 5)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.mark.parametrize("layout", ["RGB", "BGR"])
def test_image_input_scale_bias_and_channel_order(models, layout):
    model = tl.load_model(models[f"image_{layout}"], device="cpu")
    img = _rgb_image()
    chw = np.asarray(img, np.float64).transpose(2, 0, 1)
    if layout == "BGR":
        chw = chw[::-1]
    expected = (chw / 255.0 + np.array([0.1, 0.2, 0.3])[:, None, None]) * 2.0
    out = model.predict({"img": img})["y"]
    np.testing.assert_allclose(out, expected[None], atol=1e-5, rtol=1e-5)


def test_grayscale_image_input(models):
    model = tl.load_model(models["image_gray"], device="cpu")
    pixels = np.random.default_rng(1).integers(0, 256, (5, 6), dtype=np.uint8)
    out = model.predict({"img": Image.fromarray(pixels, "L")})["y"]
    np.testing.assert_allclose(out, pixels[None, None] * 0.5 * 2.0, atol=1e-5)


def test_image_input_errors(models):
    model = tl.load_model(models["image_RGB"], device="cpu")
    with pytest.raises(InputError, match=r"^image input 'img' is 7x5, the model expects 6x5$"):
        model.predict({"img": _rgb_image(size=(7, 5))})
    with pytest.raises(InputError, match=r"^image input 'img' is RGB: it needs a PIL image of mode 'RGB', not 'L'$"):
        model.predict({"img": Image.new("L", (6, 5))})
    with pytest.raises(InputError, match=r"^input 'img' is an image input: pass a PIL.Image, not ndarray$"):
        model.predict({"img": np.zeros((1, 3, 5, 6), np.float32)})


def test_flexible_image_sizes(models):
    ranged = tl.load_model(models["image_range"], device="cpu")
    for size in ((4, 4), (6, 5), (12, 9)):
        img = _rgb_image(size=size)
        expected = np.asarray(img, np.float64).transpose(2, 0, 1)[None] * 2.0
        np.testing.assert_allclose(ranged.predict({"img": img})["y"], expected, atol=1e-4)
    with pytest.raises(InputError, match=r"^image input 'img' is 13x5, the model accepts width 4..12 and height 4"):
        ranged.predict({"img": _rgb_image(size=(13, 5))})
    enum = tl.load_model(models["image_enum"], device="cpu")
    img = _rgb_image(size=(8, 8))
    expected = np.asarray(img, np.float64).transpose(2, 0, 1)[None] * 2.0
    np.testing.assert_allclose(enum.predict({"img": img})["y"], expected, atol=1e-4)
    with pytest.raises(InputError, match=r"^image input 'img' is 7x7, the model accepts 6x5, 8x8$"):
        enum.predict({"img": _rgb_image(size=(7, 7))})


def test_image_output_is_a_pil_image_in_declared_channel_order(models):
    model = tl.load_model(models["image_out"], device="cpu")
    x = np.random.default_rng(2).integers(0, 128, (1, 3, 5, 6)).astype(np.float32)
    pic = model.predict({"x": x})["pic"]
    # coremltools returns colour image outputs as RGBA (Core ML's 32-bit pixel buffers), alpha opaque
    assert isinstance(pic, Image.Image) and pic.mode == "RGBA" and pic.size == (6, 5)
    # BGR layout: the program's channel 0 is blue
    expected = (x[0] * 2.0)[::-1].transpose(1, 2, 0).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(pic)[:, :, :3], expected)
    assert (np.asarray(pic)[:, :, 3] == 255).all()


@pytest.mark.parametrize(("name", "labels"), [("classifier", ["cat", "dog", "eel"]), ("classifier_int", [10, 20, 30])])
def test_classifier_outputs_label_and_probabilities(models, name, labels):
    model = tl.load_model(models[name], device="cpu")
    x = np.random.default_rng(4).random((1, 4), dtype=np.float32)
    out = model.predict({"x": x})
    probs = torch.softmax(_Affine().double()(torch.from_numpy(x.astype(np.float64))), -1).detach().numpy()[0]
    assert out["classLabel"] == labels[int(np.argmax(probs))]
    assert type(out["classLabel"]) is type(labels[0])
    prob_key = next(k for k in out if k != "classLabel")
    assert set(out[prob_key]) == set(labels)
    np.testing.assert_allclose([out[prob_key][lab] for lab in labels], probs, atol=1e-5)


def test_state_accumulates_and_reads_writes(models):
    model = tl.load_model(models["state"], device="cpu")
    state = model.make_state()
    np.testing.assert_array_equal(state.read_state("acc"), np.zeros((1, 3), np.float16))
    x = np.array([[1.0, 2.0, 0.5]], np.float32)
    for k in (1, 2, 3):
        out = model.predict({"x": x}, state=state)
        np.testing.assert_allclose(out["y"], x * k * 2)
    np.testing.assert_allclose(state.read_state("acc"), x * 3)
    assert state.read_state("acc").dtype == np.float16
    state.write_state("acc", np.array([[10.0, 0.0, -1.0]]))
    np.testing.assert_allclose(model.predict({"x": x}, state=state)["y"], (np.array([[10.0, 0.0, -1.0]]) + x) * 2)
    fresh = model.make_state()
    np.testing.assert_allclose(model.predict({"x": x}, state=fresh)["y"], x * 2)


def test_state_errors(models):
    model = tl.load_model(models["state"], device="cpu")
    with pytest.raises(InputError, match=r"^the model is stateful \(states: acc\): pass state=model.make_state\(\)$"):
        model.predict({"x": np.zeros((1, 3))})
    state = model.make_state()
    with pytest.raises(InputError, match=r"^no state named 'nope' \(states: acc\)$"):
        state.read_state("nope")
    with pytest.raises(InputError, match=r"^state 'acc' has shape \[1, 3\], the value written has shape \[3\]$"):
        state.write_state("acc", np.zeros(3))
    other = tl.load_model(models["state"], device="cpu")
    with pytest.raises(InputError, match="not made by this model"):
        other.predict({"x": np.zeros((1, 3))}, state=state)
    with pytest.raises(InputError, match="single prediction"):
        model.predict([{"x": np.zeros((1, 3))}], state=state)


def test_intermediate_outputs_on_request(models):
    model = tl.load_model(models["affine"], device="cpu")
    prog = model.file.program.functions["main"]
    linear_out = next(op.outputs[0].name for op in prog.block.operations if op.type == "linear")
    x = np.random.default_rng(5).random((2, 4), dtype=np.float32)
    out = model.predict({"x": x}, outputs=[linear_out, "y"])
    ref = _Affine().double()
    pre = ref.fc(torch.from_numpy(x.astype(np.float64))).detach().numpy()
    np.testing.assert_allclose(out[linear_out], pre, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(out["y"], np.tanh(pre), atol=1e-5, rtol=1e-4)


def test_concurrent_predicts_on_one_model(models):
    model = tl.load_model(models["affine"], device="cpu")
    xs = [np.random.default_rng(i).random((2, 4), dtype=np.float32) for i in range(8)]
    results: dict[int, np.ndarray] = {}

    def work(i):
        for _ in range(5):
            results[i] = model.predict({"x": xs[i]})["y"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i, x in enumerate(xs):
        np.testing.assert_allclose(results[i], _affine_ref(x), atol=1e-5, rtol=1e-4)


def test_multifunction_model(models, tmp_path):
    from coremltools.models.utils import MultiFunctionDescriptor, save_multifunction

    desc = MultiFunctionDescriptor()
    desc.add_function(str(models["affine"]), src_function_name="main", target_function_name="affine")
    desc.add_function(str(models["int_input"]), src_function_name="main", target_function_name="ints")
    desc.default_function_name = "affine"
    path = tmp_path / "multi.mlpackage"
    save_multifunction(desc, str(path))
    x = np.random.default_rng(6).random((2, 4), dtype=np.float32)
    default = tl.load_model(path, device="cpu")
    np.testing.assert_allclose(default.predict({"x": x})["y"], _affine_ref(x), atol=1e-5, rtol=1e-4)
    ints = tl.load_model(path, device="cpu", function_name="ints")
    np.testing.assert_array_equal(ints.predict({"n": np.array([0, 1, 2])})["y"], [1, 4, 7])
    with pytest.raises(InputError, match="no function"):
        tl.load_model(path, device="cpu", function_name="nope")


def test_devices_and_compute_units():
    assert resolve_device("auto", "CPU_ONLY").type == "cpu"
    assert resolve_device("auto", ct.ComputeUnit.CPU_ONLY).type == "cpu"
    assert resolve_device("cpu", "ALL").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", "CPU_AND_GPU").type in (expected, "mps")
    with pytest.raises(InputError, match="unknown compute units 'GPU_ONLY'"):
        resolve_device("auto", "GPU_ONLY")
    if not torch.cuda.is_available():
        with pytest.raises(UnsupportedError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.cuda
def test_predict_on_cuda_matches_torch(models):
    model = tl.load_model(models["affine"], device="cuda")
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    np.testing.assert_allclose(model.predict({"x": x})["y"], _affine_ref(x), atol=1e-5, rtol=1e-4)


def test_neuralnetwork_model_predicts(tmp_path):
    traced = torch.jit.trace(_Affine().eval(), torch.rand(2, 4))
    path = tmp_path / "nn.mlmodel"
    ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(2, 4))], outputs=[ct.TensorType(name="y")],
               convert_to="neuralnetwork").save(str(path))
    x = np.random.default_rng(3).random((2, 4), dtype=np.float32)
    got = tl.load_model(path).predict({"x": x})
    assert list(got) == ["y"] and got["y"].dtype == np.float32
    np.testing.assert_allclose(got["y"], _affine_ref(x), atol=1e-5, rtol=1e-4)


def test_coreml_mlmodel_drop_in(models):
    m = tl.coreml.MLModel(str(models["affine"]), compute_units=ct.ComputeUnit.CPU_ONLY)
    assert list(m.input_description) == ["x"] and list(m.output_description) == ["y"]
    assert m.get_spec().WhichOneof("Type") == "mlProgram"
    assert m.compute_unit == ct.ComputeUnit.CPU_ONLY and "affine.mlpackage" in repr(m)
    x = np.random.default_rng(7).random((2, 4), dtype=np.float32)
    np.testing.assert_allclose(m.predict({"x": x})["y"], _affine_ref(x), atol=1e-5, rtol=1e-4)
    # from a spec plus its weights folder, as in coremltools
    from_spec = tl.coreml.MLModel(m.get_spec(), weights_dir=m.weights_dir, compute_units="CPU_ONLY")
    np.testing.assert_allclose(from_spec.predict({"x": x})["y"], _affine_ref(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="needs weights_dir"):
        tl.coreml.MLModel(m.get_spec())


def test_coreml_mlmodel_state_api(models):
    m = tl.coreml.MLModel(str(models["state"]), compute_units="CPU_ONLY")
    state = m.make_state()
    x = np.ones((1, 3), np.float32)
    m.predict({"x": x}, state)
    np.testing.assert_allclose(m.predict({"x": x}, state)["y"], x * 4)


def test_cli_predict_prints_outputs(models, tmp_path, capsys):
    x = np.random.default_rng(8).random((2, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert tl_main(["predict", str(models["affine"]), "--input", f"x={tmp_path / 'x.npy'}", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("y: float32[2, 3]\n")
    assert tl_main(["predict", str(models["affine"]), "-i", f"x={tmp_path / 'x.npy'}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(np.array(doc["y"]["values"]), _affine_ref(x), atol=1e-5, rtol=1e-4)


def test_cli_predict_classifier_and_image(models, tmp_path, capsys):
    (tmp_path / "x.json").write_text(json.dumps([[0.1, 0.2, 0.3, 0.4]]))
    assert tl_main(["predict", str(models["classifier"]), "-i", f"x={tmp_path / 'x.json'}"]) == 0
    out = capsys.readouterr().out
    assert "classLabel: " in out and "cat: " in out
    _rgb_image().save(tmp_path / "img.png")
    assert tl_main(["predict", str(models["image_RGB"]), "-i", f"img={tmp_path / 'img.png'}"]) == 0
    assert capsys.readouterr().out.startswith("y: float32[1, 3, 5, 6]")


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("x", "tl: error: --input 'x': expected NAME=FILE (a .npy, image or .json file)"),
        ("x=/nonexistent.npy", "tl: error: --input x: no file '/nonexistent.npy'"),
        ("q={npy}", "tl: error: unknown input 'q' (model inputs: x)"),
    ],
)
def test_cli_predict_errors_are_one_line(models, tmp_path, capsys, arg, message):
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    code = tl_main(["predict", str(models["affine"]), "-i", arg.format(npy=tmp_path / "x.npy")])
    assert code == 2
    assert capsys.readouterr().err.strip() == message
