"""Small real architectures converted with coremltools, run by TensorLogic, checked against torch float64.

Each architecture is converted to an ML Program with FLOAT32 and with FLOAT16 compute precision; our
output must match the same torch module run in float64 within the tolerance of the precision the
program declares (``TOLERANCES`` in conftest.py), on the CPU and, where one exists, on CUDA.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tensorlogic as tl
from conftest import TOLERANCES
from fixtures_coreml import random_batchnorm

ct = pytest.importorskip("coremltools")
warnings.filterwarnings("ignore")


class BasicBlock(nn.Module):
    """ResNet basic block with a strided projection shortcut."""

    def __init__(self, cin=8, cout=16):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = random_batchnorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = random_batchnorm(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), random_batchnorm(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.down(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand, identity shortcut, then global pooling head."""

    def __init__(self, c=16, mid=4):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, mid, 1, bias=False), random_batchnorm(mid), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(mid, mid, 3, padding=1, bias=False), random_batchnorm(mid), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(mid, c, 1, bias=False), random_batchnorm(c))
        self.fc = nn.Linear(c, 5)

    def forward(self, x):
        y = F.relu(self.c(self.b(self.a(x))) + x)
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


class DepthwiseBlock(nn.Module):
    """MobileNetV2 inverted residual: expand, depthwise 3x3 (ReLU6), project, residual."""

    def __init__(self, c=8, expand=4):
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), random_batchnorm(h), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), random_batchnorm(h), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), random_batchnorm(c))

    def forward(self, x):
        return x + self.project(self.dw(self.expand(x)))


# Shapes are fixed at construction: coremltools 9 with numpy 2 fails to convert ints taken from x.shape.
class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: multi-head self-attention written out, GELU MLP."""

    def __init__(self, d=16, heads=4, ff=32, batch=2, seq=6):
        super().__init__()
        self.heads, self.dims = heads, (batch, seq, d)
        self.scale = 1.0 / math.sqrt(d // heads)
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

    def forward(self, x):
        b, t, d = self.dims
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.ff(self.ln2(x))


class SdpaLayer(nn.Module):
    """Attention through ``F.scaled_dot_product_attention`` (iOS18 keeps it as one op)."""

    def __init__(self, d=16, heads=2, batch=1, seq=5):
        super().__init__()
        self.heads, self.dims = heads, (batch, seq, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = self.dims
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class LSTMTagger(nn.Module):
    """Token features → bidirectional LSTM → per-step tag log-probabilities."""

    def __init__(self, d=8, hidden=12, tags=5):
        super().__init__()
        self.lstm = nn.LSTM(d, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, tags)

    def forward(self, x):
        y, _ = self.lstm(x)
        return F.log_softmax(self.out(y), dim=-1)


class UNetUp(nn.Module):
    """UNet decoder step: down path, bilinear and transposed-conv upsampling, skip concat."""

    def __init__(self, c=4):
        super().__init__()
        self.c = c
        self.enc = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.fuse = nn.Conv2d(3 * c, c, 3, padding=1)

    def forward(self, x):
        skip = self.enc(x)
        deep = self.down(skip)
        smooth = F.interpolate(deep, scale_factor=2, mode="bilinear", align_corners=False)
        up = self.up(deep)
        return self.fuse(torch.cat([skip, up, smooth[:, : self.c]], dim=1))


ARCHS = {
    "resnet_basic": (BasicBlock, (1, 8, 12, 12), "iOS16"),
    "resnet_bottleneck": (Bottleneck, (1, 16, 8, 8), "iOS16"),
    "mobilenet_depthwise": (DepthwiseBlock, (1, 8, 10, 10), "iOS16"),
    "transformer_encoder": (EncoderLayer, (2, 6, 16), "iOS16"),
    "sdpa_attention": (SdpaLayer, (1, 5, 16), "iOS18"),
    "lstm_tagger": (LSTMTagger, (1, 7, 8), "iOS16"),
    "unet_up": (UNetUp, (1, 3, 8, 8), "iOS16"),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Converts each (architecture, precision) once: returns (path, float64 module, input)."""
    cache: dict = {}
    folder = tmp_path_factory.mktemp("e2e")

    def get(arch: str, precision: str):
        key = (arch, precision)
        if key not in cache:
            cls, shape, target = ARCHS[arch]
            torch.manual_seed(0)
            module = cls().eval()
            x = torch.randn(*shape)
            traced = torch.jit.trace(module, x)
            mlmodel = ct.convert(
                traced,
                inputs=[ct.TensorType(name="x", shape=shape)],
                outputs=[ct.TensorType(name="y")],
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                minimum_deployment_target=getattr(ct.target, target),
            )
            path = folder / f"{arch}_{precision}.mlpackage"
            mlmodel.save(str(path))
            cache[key] = (path, module.double(), x.numpy())
        return cache[key]

    return get


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_architecture_matches_torch_float64(converted, device, arch, precision):
    path, module, x = converted(arch, precision)
    model = tl.load_model(path, device=device)
    with torch.no_grad():
        expected = module(torch.from_numpy(x).double()).numpy()
    got = model.predict({"x": x})["y"]
    assert got.shape == expected.shape
    assert got.dtype == (np.float16 if precision == "fp16" else np.float32)
    # fp16 programs hold fp16 weights and activations at their boundaries: fp16 tolerance.
    atol, rtol = TOLERANCES["float16" if precision == "fp16" else "float32"]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got.astype(np.float64), expected, atol=atol * scale, rtol=rtol)


def test_fp16_program_forced_to_float16_compute_stays_close(converted):
    # The "fp16" policy computes in float16 even on the CPU (for overflow studies).
    from tensorlogic.runtime.predictor import Predictor

    path, module, x = converted("resnet_basic", "fp16")
    file = tl.load_model(path, device="cpu").file
    pred = Predictor(file, device="cpu", policy="fp16")
    assert pred.interpreter.input_slots[0].dtype == torch.float16
    with torch.no_grad():
        expected = module(torch.from_numpy(x).double()).numpy()
    got = pred.predict({"x": x})["y"].astype(np.float64)
    np.testing.assert_allclose(got, expected, atol=2e-2, rtol=2e-2)
