"""Reference architectures for the benchmarks, in plain torch (torchvision does not install beside
the CPU torch build here): ResNet-50 and MobileNetV2 with torchvision's layer structure and parameter
counts, and a BERT-base encoder with the Hugging Face layout (embeddings, 12 post-LN layers).

Weights are random; BatchNorm statistics are set from a few random batches first (``calibrate``),
because with fresh statistics MobileNetV2's outputs fall below fp16's smallest normal (FACTS.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(64, 3)
        self.layer2 = self._layer(128, 4, stride=2)
        self.layer3 = self._layer(256, 6, stride=2)
        self.layer4 = self._layer(512, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def _layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _conv_bn(inp: int, out: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers += _conv_bn(inp, hidden, 1, 1)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn(hidden, out, 1, 1, act=False)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1)]
        layers: list[nn.Module] = _conv_bn(3, 32, 3, 2)
        inp = 32
        for t, c, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers += _conv_bn(inp, 1280, 1, 1)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, seq: int):
        super().__init__()
        self.heads, self.seq = heads, seq
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sizes are constants (batch left to -1): coremltools 9 with numpy 2 cannot convert ints read
        # from a traced tensor's shape (FACTS.md).
        h = self.q.in_features
        d = h // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, self.seq, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(-1, self.seq, h)
        x = self.ln1(x + self.attn_out(ctx))
        return self.ln2(x + self.ffn_out(nn.functional.gelu(self.ffn_in(x))))


class BertBase(nn.Module):
    """BERT-base encoder: token + position + type embeddings, 12 layers of 768 wide, 12 heads.

    The sequence length is fixed at construction (see ``BertLayer.forward``).
    """

    def __init__(self, vocab: int = 30522, hidden: int = 768, layers: int = 12, heads: int = 12,
                 ffn: int = 3072, seq: int = 128):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(seq, hidden)
        self.typ = nn.Embedding(2, hidden)
        self.ln = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, ffn, seq) for _ in range(layers))
        self.register_buffer("positions", torch.arange(seq).unsqueeze(0), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.tok(input_ids) + self.pos(self.positions) + self.typ(torch.zeros_like(input_ids)))
        for layer in self.layers:
            x = layer(x)
        return x


@torch.no_grad()
def calibrate(model: nn.Module, shape: tuple[int, ...], batches: int = 3, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers realistic running statistics from a few random batches, then eval()."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    for _ in range(batches):
        model(torch.randn(shape, generator=g))
    return model.eval()


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A benchmark model in eval mode with its batch-1 input shape."""
    torch.manual_seed(seed)
    if name == "resnet50":
        return calibrate(ResNet50(), (8, 3, 224, 224)), (1, 3, 224, 224)
    if name == "mobilenetv2":
        return calibrate(MobileNetV2(), (8, 3, 224, 224)), (1, 3, 224, 224)
    if name == "bert-base":
        return BertBase().eval(), (1, 128)
    raise ValueError(f"unknown benchmark model {name!r}")


def resnet50() -> nn.Module:
    """``tl bench --torch-module benchmarks.models:resnet50``."""
    return build("resnet50")[0]


def mobilenetv2() -> nn.Module:
    """``tl bench --torch-module benchmarks.models:mobilenetv2``."""
    return build("mobilenetv2")[0]


def bert_base() -> nn.Module:
    """``tl bench --torch-module benchmarks.models:bert_base``."""
    return build("bert-base")[0]
