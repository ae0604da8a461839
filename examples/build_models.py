"""Regenerate the small model and image files the example scripts load (fixed seeds, deterministic).

    .venv/bin/python examples/build_models.py

Writes, next to this file:
  model.mlpackage       ColorNet with an ImageType input, converted exactly as the seed document shows
                        (torch.jit.trace, mlprogram, FLOAT16): the model of seed_coreml.tl and quickstart.tl
  model.mlmodelc        the same model as a compiled-style folder, built by tensorlogic's write_mlmodelc
  classifier.mlpackage  ColorNet with a normalized tensor input "input" [1, 3, 224, 224] (classify_image.tl)
  image.png             a small, mostly green 64x48 picture
  tiny.safetensors      a PyTorch Linear(3, 2) saved as "layer.0.weight" / "layer.0.bias"
  tiny.gguf             two tensors written with gguf-py: a Q8_0 embedding and an F32 norm vector

The torch modules are built by functions here, so tests can recompute the expected outputs.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LABELS = ["red", "green", "blue"]
SIZE = 224


def color_net():
    """A tiny colour classifier: 3x3 conv → ReLU → global mean → linear to (red, green, blue) scores."""
    import torch
    from torch import nn

    class ColorNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return self.fc(x.mean(dim=(2, 3)))

    gen = torch.Generator().manual_seed(7)
    net = ColorNet().eval()
    with torch.no_grad():
        # Channel c of the conv passes input channel c through (plus a little noise); channel 3 is their
        # average. The linear layer scores each colour by its channel minus half the average.
        w = torch.randn(4, 3, 3, 3, generator=gen) * 0.01
        for c in range(3):
            w[c, c, 1, 1] += 1.0
            w[3, c, 1, 1] += 1.0 / 3.0
        net.conv.weight.copy_(w)
        net.conv.bias.zero_()
        fc = torch.tensor([[1.0, 0.0, 0.0, -0.5], [0.0, 1.0, 0.0, -0.5], [0.0, 0.0, 1.0, -0.5]])
        net.fc.weight.copy_(fc + torch.randn(3, 4, generator=gen) * 0.01)
        net.fc.bias.zero_()
    return net


def image_array() -> np.ndarray:
    """The example picture as uint8 [48, 64, 3]: green with a darker band and mild noise."""
    rng = np.random.default_rng(3)
    img = np.empty((48, 64, 3), dtype=np.float32)
    img[...] = (40, 170, 70)
    img[16:32, :, :] = (30, 120, 50)
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def linear_weights() -> dict[str, np.ndarray]:
    """The tiny.safetensors tensors, as a PyTorch Linear(3, 2) stores them ([out, in] weight)."""
    return {
        "layer.0.weight": np.array([[0.1, 0.2, 0.3], [-0.4, 0.5, -0.6]], dtype=np.float32),
        "layer.0.bias": np.array([0.01, -0.02], dtype=np.float32),
    }


def gguf_tensors() -> dict[str, np.ndarray]:
    """The tiny.gguf tensors before quantization: an [8, 32] embedding (stored Q8_0) and a [32] norm (F32)."""
    rng = np.random.default_rng(11)
    return {
        "token_embd.weight": rng.uniform(-1, 1, (8, 32)).astype(np.float32),
        "output_norm.weight": np.linspace(0.5, 1.5, 32, dtype=np.float32),
    }


def _convert(net, inputs, out: Path) -> None:
    import coremltools as ct
    import torch

    example_input = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    traced_model = torch.jit.trace(net, example_input)
    mlmodel = ct.convert(
        traced_model,
        inputs=inputs(example_input),
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16,
    )
    mlmodel.short_description = "Tiny colour classifier (red, green, blue) for the TensorLogic examples"
    mlmodel.author = "TensorLogic examples"
    mlmodel.license = "Apache-2.0"
    if out.exists():
        shutil.rmtree(out)
    mlmodel.save(str(out))


def build_coreml() -> None:
    import coremltools as ct

    from tensorlogic.formats.mlmodelc import write_mlmodelc

    net = color_net()
    _convert(net, lambda x: [ct.ImageType(shape=x.shape)], HERE / "model.mlpackage")
    _convert(net, lambda x: [ct.TensorType(name="input", shape=x.shape)], HERE / "classifier.mlpackage")
    compiled = HERE / "model.mlmodelc"
    if compiled.exists():
        shutil.rmtree(compiled)
    write_mlmodelc(HERE / "model.mlpackage", compiled)


def build_image() -> None:
    from PIL import Image

    Image.fromarray(image_array(), "RGB").save(HERE / "image.png", optimize=True)


def build_safetensors() -> None:
    from safetensors.numpy import save_file

    save_file(linear_weights(), str(HERE / "tiny.safetensors"), metadata={"format": "pt"})


def build_gguf() -> None:
    import gguf

    tensors = gguf_tensors()
    out = HERE / "tiny.gguf"
    writer = gguf.GGUFWriter(str(out), "tiny")
    writer.add_name("tiny-example")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    q8 = gguf.quants.quantize(tensors["token_embd.weight"], gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output_norm.weight", tensors["output_norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> int:
    warnings.filterwarnings("ignore")
    build_image()
    build_safetensors()
    build_gguf()
    build_coreml()
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"examples/: {total / 1024:.0f} KiB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
