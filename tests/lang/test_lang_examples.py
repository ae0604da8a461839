"""The example scripts: golden outputs (reviewed by hand), the seed's blocks verbatim, and the model
builtins checked against independent references (torch, PIL/numpy, safetensors, gguf-py)."""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.lang.evaluator import ScriptInterpreter
from tensorlogic.lang.values import IMAGENET_MEAN, IMAGENET_STD, Context

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SEED_DOC = ROOT.parent / "shared" / "seed" / "coreml_neural_engine.ko.md"

# The seed document's two TensorLogic blocks, character for character.
SEED_BLOCKS = [
    'model = load_model("model.mlpackage")\n// 또는\nmodel = load_model("model.mlmodelc")\n',
    'print("Model format:", model.metadata.format)  // CoreML\n'
    'print("Quantization:", model.metadata.quantization)  // F16\n',
]

SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.tl"))


def build_models():
    spec = importlib.util.spec_from_file_location("build_models", EXAMPLES / "build_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(path: Path, tmp: Path | None = None) -> tuple[str, ScriptInterpreter]:
    out = io.StringIO()
    interp = ScriptInterpreter(Context(base_dir=path.parent, device="cpu", out=out, err=io.StringIO()))
    interp.run(path.read_text(encoding="utf-8"), path.name, path=path)
    return out.getvalue(), interp


def run_src(src: str, **variables) -> ScriptInterpreter:
    interp = ScriptInterpreter(Context(base_dir=EXAMPLES, device="cpu", out=io.StringIO(), err=io.StringIO()))
    interp.globals.vars.update(variables)
    interp.run(src, "t.tl")
    return interp


def test_every_example_has_a_golden_file():
    assert set(SCRIPTS) >= {
        "quickstart", "seed_coreml", "linear_forward", "classify_image", "safetensors_loading", "gguf_loading",
    }
    for name in SCRIPTS:
        assert (EXAMPLES / f"{name}.expected").is_file(), name


@pytest.mark.parametrize("name", SCRIPTS)
def test_golden_output(name):
    out, _ = run_script(EXAMPLES / f"{name}.tl")
    assert out == (EXAMPLES / f"{name}.expected").read_text(encoding="utf-8")


def test_seed_blocks_are_verbatim_and_print_coreml_f16():
    script = (EXAMPLES / "seed_coreml.tl").read_text(encoding="utf-8")
    assert "".join(SEED_BLOCKS) in script
    if SEED_DOC.is_file():
        blocks = re.findall(r"```tensorlogic\n(.*?)```", SEED_DOC.read_text(encoding="utf-8"), re.S)
        assert blocks == SEED_BLOCKS
    out, interp = run_script(EXAMPLES / "seed_coreml.tl")
    assert out == "Model format: CoreML\nQuantization: F16\n"
    assert interp.globals.vars["model"].path.name == "model.mlmodelc"


def test_examples_stay_small():
    total = sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024


# ---------------------------------------------------------------------------------------------- references


def _reference_preprocess(arr: np.ndarray, size: int = 224) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(arr, "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float64) / 255.0
    x = (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return x.transpose(2, 0, 1)[None]


def test_load_image_and_preprocess_match_pil_numpy():
    from PIL import Image

    arr = np.asarray(Image.open(EXAMPLES / "image.png").convert("RGB"))
    interp = run_src('img = load_image("image.png")\np = preprocess(img)\nq = preprocess(img, size: [32, 16])')
    img = interp.globals.vars["img"]
    assert img.dtype == torch.float16 and img.tolist() == torch.from_numpy(arr.transpose(2, 0, 1).copy()).tolist()
    p = interp.globals.vars["p"]
    assert p.dtype == torch.float16 and list(p.shape) == [1, 3, 224, 224]
    atol, rtol = TOLERANCES["float16"]
    np.testing.assert_allclose(p.double().numpy(), _reference_preprocess(arr), atol=atol, rtol=rtol)
    assert list(interp.globals.vars["q"].shape) == [1, 3, 32, 16]
    # no resize when the image already has the size: exact normalization
    square = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    t = torch.from_numpy(square.transpose(2, 0, 1).copy()).half()
    custom = run_src("p = preprocess(t, mean: [0.5, 0.5, 0.5], std: [0.25, 0.5, 1.0])", t=t).globals.vars["p"]
    ref = (square.astype(np.float64) / 255.0 - 0.5) / np.array([0.25, 0.5, 1.0])
    np.testing.assert_allclose(custom.double().numpy(), ref.transpose(2, 0, 1)[None], atol=atol, rtol=rtol)


def test_classifier_prediction_matches_torch():
    from PIL import Image

    out, interp = run_script(EXAMPLES / "classify_image.tl")
    output = interp.globals.vars["output"]
    arr = np.asarray(Image.open(EXAMPLES / "image.png").convert("RGB"))
    x = torch.from_numpy(_reference_preprocess(arr)).float()
    with torch.no_grad():
        ref = build_models().color_net()(x)
    assert list(output.shape) == [1, 3]
    scale = float(ref.abs().max())
    np.testing.assert_allclose(output.double().numpy(), ref.double().numpy(), atol=0.02 * scale)
    assert interp.globals.vars["class_id"] == int(ref.argmax()) == 1
    assert "Predicted class: 1 green" in out


def test_image_input_model_prediction_matches_torch():
    from PIL import Image

    interp = run_src('model = load_model("model.mlpackage")\ns = model.predict(load_image("image.png"))')
    scores = interp.globals.vars["s"]
    img = Image.open(EXAMPLES / "image.png").convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        ref = build_models().color_net()(x)
    scale = float(ref.abs().max())
    np.testing.assert_allclose(scores.double().numpy(), ref.double().numpy(), atol=0.02 * scale)


def test_mlmodelc_metadata_and_prediction_match_the_mlpackage():
    interp = run_src(
        'a = load_model("model.mlpackage")\nb = load_model("model.mlmodelc")\n'
        'img = load_image("image.png")\npa = a.predict(img)\npb = b.predict(img)\n'
        'fa = a.metadata.format\nfb = b.metadata.format\nqa = a.metadata.quantization\nqb = b.metadata.quantization'
    )
    g = interp.globals.vars
    assert (g["fa"], g["fb"], g["qa"], g["qb"]) == ("CoreML", "CoreML", "F16", "F16")
    assert torch.equal(g["pa"], g["pb"])


def test_predict_with_a_dict_returns_a_dict():
    interp = run_src(
        'm = load_model("classifier.mlpackage")\nx = preprocess(load_image("image.png"))\n'
        'd = m.predict({"input": x})\nt = m.predict(x)'
    )
    d, t = interp.globals.vars["d"], interp.globals.vars["t"]
    assert isinstance(d, dict) and len(d) == 1
    assert torch.equal(next(iter(d.values())), t)


def test_safetensors_builtins_match_the_file():
    from safetensors.numpy import load_file

    ref = load_file(str(EXAMPLES / "tiny.safetensors"))
    interp = run_src(
        'm = load_model("tiny.safetensors")\nw = m.get_tensor("layer.0.weight")\n'
        'w32 = m.get_tensor("layer.0.weight", dtype: float32)\nnames = m.tensor_names()'
    )
    g = interp.globals.vars
    assert sorted(g["names"]) == sorted(ref)
    assert g["w"].dtype == torch.float16
    assert g["w"].tolist() == torch.from_numpy(ref["layer.0.weight"]).half().tolist()
    assert g["w32"].dtype == torch.float32 and np.array_equal(g["w32"].numpy(), ref["layer.0.weight"])


def test_gguf_builtins_match_gguf_py():
    import gguf

    reader = gguf.GGUFReader(str(EXAMPLES / "tiny.gguf"))
    tensors = {t.name: t for t in reader.tensors}
    emb = tensors["token_embd.weight"]
    ref = gguf.quants.dequantize(emb.data, emb.tensor_type).reshape(8, 32)
    interp = run_src('m = load_model("tiny.gguf")\ne = m.get_tensor("token_embd.weight", dtype: float32)')
    np.testing.assert_allclose(interp.globals.vars["e"].numpy(), ref, rtol=1e-6, atol=1e-7)


def test_save_model_round_trips_through_safetensors(tmp_path):
    from safetensors.numpy import load_file

    interp = ScriptInterpreter(Context(base_dir=tmp_path, device="cpu", out=io.StringIO()))
    interp.run(
        'w = tensor<float32>([[1.0, 2.0], [3.0, 4.0]])\nsave_model({"w": w, "b": [0.5, 1.5]}, "out.safetensors")\n'
        f'm = load_model("{EXAMPLES / "tiny.safetensors"}")\nsave_model(m, "copy.safetensors")\n',
        "t.tl",
    )
    saved = load_file(str(tmp_path / "out.safetensors"))
    assert saved["w"].dtype == np.float32 and saved["w"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert saved["b"].dtype == np.float16 and saved["b"].tolist() == [0.5, 1.5]
    copy, orig = load_file(str(tmp_path / "copy.safetensors")), load_file(str(EXAMPLES / "tiny.safetensors"))
    assert set(copy) == set(orig) and all(np.array_equal(copy[k], orig[k]) for k in orig)


def test_model_attribute_errors_are_helpful():
    from tensorlogic.errors import ScriptError

    with pytest.raises(ScriptError) as info:
        run_src('m = load_model("tiny.safetensors")\nm.get_tensor("layer.0.wieght")')
    assert info.value.message == (
        "get_tensor: no tensor named 'layer.0.wieght' in tiny.safetensors — did you mean 'layer.0.weight'?"
    )
    with pytest.raises(ScriptError) as info:
        run_src('m = load_model("tiny.safetensors")\nm.metadata.formt')
    assert info.value.message.startswith("metadata has no field 'formt' (it has format, quantization,")
    with pytest.raises(ScriptError) as info:
        run_src('m = load_model("tiny.safetensors")\nm.predict(zeros(3))')
    assert info.value.message.startswith("predict: ") and "weights only" in info.value.message


def test_examples_run_on_each_device(device):
    """On CUDA (where present) tensors and predictions stay on the GPU and agree with the references."""
    out = io.StringIO()
    ctx = Context(base_dir=EXAMPLES, device="gpu" if device == "cuda" else "cpu", out=out, err=io.StringIO())
    interp = ScriptInterpreter(ctx)
    for name in ("linear_forward", "classify_image"):
        path = EXAMPLES / f"{name}.tl"
        interp.run(path.read_text(encoding="utf-8"), path.name, path=path)
    output = interp.globals.vars["output"]
    assert output.device.type == device
    assert interp.globals.vars["class_id"] == 1
    X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [10.0, 11.0, 12.0]]).half().double()
    W = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]).half().double()
    b = torch.tensor([0.01, 0.02]).half().double()
    # linear_forward's output was overwritten by classify_image's; recompute it on the same device
    interp.run("y = forward(X, W, b)", "t.tl")
    y = interp.globals.vars["y"]
    assert y.device.type == device and y.dtype == torch.float16
    atol, rtol = TOLERANCES["float16"]
    np.testing.assert_allclose(y.double().cpu().numpy(), (X @ W + b).numpy(), atol=atol, rtol=rtol)


def test_printing_models_and_metadata():
    out = io.StringIO()
    interp = ScriptInterpreter(Context(base_dir=EXAMPLES, device="cpu", out=out))
    interp.run('m = load_model("tiny.gguf")\nprint(m)\nprint(m.metadata)\nprint(m.metadata.tensor_count)', "t.tl")
    assert out.getvalue().splitlines() == [
        "Model(GGUF)",
        'Metadata(format="GGUF", quantization="Q8_0", name="tiny-example", architecture="tiny", '
        "parameter_count=288, tensor_count=2)",
        "2",
    ]
