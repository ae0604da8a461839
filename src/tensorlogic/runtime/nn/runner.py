"""Runners: one Core ML model spec, run on torch with already-converted inputs.

A ``Runner`` is all the predictor needs: ``run(feeds)`` takes the model inputs by name (torch tensors
for multiArrays and images — images as float ``[1, C, H, W]`` in 0–255, in the spec's channel order —
and Python/numpy values for int64, double, string and dictionary features) and returns the outputs by
name: torch tensors, or Python values (class labels, ``{label: probability}`` dicts, strings).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ...errors import InputError, OpError, TensorLogicError, UnsupportedError
from ..dtypes import POLICIES
from ..interpreter import cudnn_flags
from .executor import Network, plan_network
from .weights import is_fp16

NN_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")

# ArrayFeatureType.ArrayDataType values.
_INT32, _DOUBLE, _FLOAT16 = 131104, 65600, 65552
_INT8 = 131080


class Runner:
    """Runs one model spec: ``run(feeds)`` → outputs by name."""

    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    device: torch.device = torch.device("cpu")

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


def resolve_dtype(policy: str, device: torch.device, half_weights: bool) -> torch.dtype:
    """The dtype a NeuralNetwork computes in: float32, or float16 where the policy or the weights ask for it.

    A NeuralNetwork declares no activation dtype. Under ``auto`` it runs in float32 on the CPU (as Core
    ML's CPU engine does) and in float16 on a GPU when its weights are stored as float16. ``fp16-storage``
    (rounding each value of a declared half type) has nothing to round here and runs in float32.
    """
    if policy not in POLICIES:
        raise TensorLogicError(f"unknown precision policy {policy!r} (use one of {', '.join(POLICIES)})")
    if policy == "fp16":
        return torch.float16
    if policy == "auto" and device.type != "cpu" and half_weights:
        return torch.float16
    return torch.float32


def _all_weights(message: Any) -> Iterable[Any]:
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        items = value if hasattr(value, "__len__") and not hasattr(value, "ListFields") else [value]
        for item in items:
            if field.message_type.name == "WeightParams":
                yield item
            elif hasattr(item, "ListFields"):
                yield from _all_weights(item)


def _feature_kind(fd: Any) -> str:
    return fd.type.WhichOneof("Type") or "unknown"


def _declared_shape(fd: Any) -> tuple[int, ...]:
    if _feature_kind(fd) == "multiArrayType":
        return tuple(int(d) for d in fd.type.multiArrayType.shape)
    return ()


def _rank5(t: torch.Tensor, declared_rank: int) -> torch.Tensor:
    """A multiArray under the legacy mapping: [C] → [1,1,C,1,1], [C,H,W] → [1,1,C,H,W].

    Leading sequence and batch dimensions given at run time are kept: a rank-1 declaration fed
    ``[S, B, C]`` becomes ``[S, B, C, 1, 1]``.
    """
    if t.dim() >= 5:
        return t
    if declared_rank == 1:
        lead = tuple(t.shape[:-1]) if t.dim() else ()
        c = t.shape[-1] if t.dim() else 1
        lead = (1,) * (2 - len(lead)) + lead if len(lead) < 2 else lead
        return t.reshape(*lead, c, 1, 1)
    return t.reshape((1,) * (5 - t.dim()) + tuple(t.shape))


class NeuralNetworkRunner(Runner):
    """A neuralNetwork / neuralNetworkClassifier / neuralNetworkRegressor model on torch."""

    def __init__(self, spec: Any, device: str | torch.device = "cpu", policy: str = "auto"):
        kind = spec.WhichOneof("Type")
        if kind not in NN_TYPES:
            raise UnsupportedError(f"model type {kind!r} is not a NeuralNetwork")
        self.kind = kind
        self.nn = getattr(spec, kind)
        self.description = spec.description
        self.device = torch.device(device)
        self.dtype = resolve_dtype(policy, self.device, any(is_fp16(w) for w in _all_weights(self.nn)))
        self.rank5 = self.nn.arrayInputShapeMapping == 0
        self.image_rank5 = self.nn.imageInputShapeMapping == 0
        self.inputs = list(spec.description.input)
        self.input_names = tuple(fd.name for fd in self.inputs)
        self.outputs = list(spec.description.output)
        self.output_names = tuple(fd.name for fd in self.outputs)
        self.preprocessing = self._preprocessing()
        self.labels: list[Any] | None = None
        self.probability_blob = ""
        if kind == "neuralNetworkClassifier":
            self._classifier()
        blobs = {fd.name for fd in self.outputs} | ({self.probability_blob} if self.probability_blob else set())
        self.network: Network = plan_network(self.nn.layers, self.input_names, blobs, self.device, self.dtype)
        self._check_outputs()

    # --- set-up --------------------------------------------------------------------------------

    def _preprocessing(self) -> dict[str, Any]:
        images = [fd.name for fd in self.inputs if _feature_kind(fd) == "imageType"]
        found: dict[str, Any] = {}
        for pre in self.nn.preprocessing:
            name = pre.featureName or (images[0] if len(images) == 1 else "")
            if name not in images:
                raise UnsupportedError(f"image preprocessing names {pre.featureName!r}, which is not an image input")
            found[name] = pre
        return found

    def _classifier(self) -> None:
        which = self.nn.WhichOneof("ClassLabels")
        if which is None:
            raise UnsupportedError("the NeuralNetwork classifier has no class labels")
        self.labels = list(getattr(self.nn, which).vector)
        blob = self.nn.labelProbabilityLayerName
        if not blob and len(self.nn.layers):
            blob = self.nn.layers[-1].output[0]
        self.probability_blob = blob

    def _check_outputs(self) -> None:
        made = set(self.input_names) | self.network.writes()
        special = {self.description.predictedFeatureName, self.description.predictedProbabilitiesName}
        for fd in self.outputs:
            if fd.name not in made and not (self.labels is not None and fd.name in special):
                raise UnsupportedError(f"output {fd.name!r} is not produced by any layer of the network")
        if self.labels is not None and self.probability_blob not in made:
            raise UnsupportedError(f"class probabilities blob {self.probability_blob!r} is not produced by any layer")

    # --- running -------------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, Any], outputs: Iterable[str] | None = None) -> dict[str, Any]:
        """Outputs by name (or the blobs named in ``outputs``, for debugging) for one set of inputs."""
        env: dict[str, Any] = {fd.name: self._input(fd, feeds) for fd in self.inputs}
        wanted = list(outputs) if outputs is not None else None
        # fp32 means fp32 on CUDA too: cuDNN's TF32 convolutions (torch's default) are off while we run.
        flags = cudnn_flags() if self.device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), flags:
            self.network.run(env, frozenset(wanted or ()))
        if wanted is not None:
            missing = [n for n in wanted if n not in env]
            if missing:
                raise InputError(f"no blob named {missing[0]!r} was computed")
            return {n: env[n] for n in wanted}
        return self._outputs(env)

    def _input(self, fd: Any, feeds: Mapping[str, Any]) -> torch.Tensor:
        kind = _feature_kind(fd)
        if fd.name not in feeds:
            if fd.type.isOptional and kind == "multiArrayType":
                return self._default(fd)
            raise InputError(f"input {fd.name!r} is missing")
        value = feeds[fd.name]
        try:
            t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"input {fd.name!r} is not numeric ({type(value).__name__})") from None
        if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in _INT_TYPES):
            raise InputError(f"input {fd.name!r} holds {t.dtype} values, the network takes numbers")
        t = t.to(device=self.device, dtype=self.dtype)
        if kind == "imageType":
            return self._image(fd, t)
        if kind != "multiArrayType":
            t = t.reshape(1)
        return _rank5(t, len(_declared_shape(fd))) if self.rank5 else t

    def _default(self, fd: Any) -> torch.Tensor:
        arr = fd.type.multiArrayType
        which = arr.WhichOneof("defaultOptionalValue")
        value = float(getattr(arr, which)) if which else 0.0
        shape = _declared_shape(fd)
        t = torch.full(shape, value, dtype=self.dtype, device=self.device)
        return _rank5(t, len(shape)) if self.rank5 else t

    def _image(self, fd: Any, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4:
            raise InputError(f"image input {fd.name!r} must be [1, C, H, W], got {list(t.shape)}")
        pre = self.preprocessing.get(fd.name)
        if pre is not None:
            t = _preprocess(pre, t, fd.type.imageType.colorSpace, fd.name)
        return t.unsqueeze(0) if self.image_rank5 else t

    def _outputs(self, env: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        desc = self.description
        for fd in self.outputs:
            if self.labels is not None and fd.name in (desc.predictedFeatureName, desc.predictedProbabilitiesName):
                probs = env[self.probability_blob].reshape(-1)
                if probs.numel() != len(self.labels):
                    raise OpError(f"class probabilities blob has {probs.numel()} values for {len(self.labels)} labels",
                                  op="classifier", var=self.probability_blob)
                if fd.name == desc.predictedFeatureName:
                    out[fd.name] = self.labels[int(torch.argmax(probs))]
                    continue
                if _feature_kind(fd) == "dictionaryType":
                    values = probs.double().cpu().tolist()
                    out[fd.name] = dict(zip(self.labels, values))
                    continue
            out[fd.name] = self._output_tensor(fd, env[fd.name])
        return out

    def _output_tensor(self, fd: Any, t: torch.Tensor) -> torch.Tensor:
        kind = _feature_kind(fd)
        shape = _declared_shape(fd)
        if self.rank5 and t.dim() == 5:
            if shape and int(np.prod(shape)) == t.numel():
                t = t.reshape(shape)
        elif kind == "multiArrayType" and shape and t.dim() == len(shape) + 1 and t.shape[0] == 1 \
                and tuple(t.shape[1:]) == shape:
            # A rank-4 image input carries a batch axis of 1 that the declared output leaves out; Core ML
            # returns the declared shape.
            t = t.reshape(shape)
        if kind == "imageType" and t.dim() >= 3:
            t = t.reshape(-1, *t.shape[-3:])
        elif kind == "multiArrayType":
            dt = fd.type.multiArrayType.dataType
            if dt in (_INT32, _INT8):
                t = torch.round(t).to(torch.int32 if dt == _INT32 else torch.int8)
            elif dt == _DOUBLE:
                t = t.to(torch.float64)
            elif dt == _FLOAT16:
                t = t.to(torch.float16)
        elif kind == "doubleType":
            return float(t.reshape(-1)[0])
        elif kind == "int64Type":
            return int(round(float(t.reshape(-1)[0])))
        return t


_INT_TYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _preprocess(pre: Any, x: torch.Tensor, colorspace: int, name: str) -> torch.Tensor:
    """Apply a NeuralNetworkPreprocessing (channel scale and biases, or a mean image) to [B, C, H, W]."""
    which = pre.WhichOneof("preprocessor")
    if which == "scaler":
        s = pre.scaler
        if x.shape[1] == 1:
            bias = [s.grayBias]
        elif colorspace == 30:  # BGR
            bias = [s.blueBias, s.greenBias, s.redBias]
        else:
            bias = [s.redBias, s.greenBias, s.blueBias]
        if len(bias) != x.shape[1]:
            raise InputError(f"image input {name!r} has {x.shape[1]} channels, the preprocessing expects {len(bias)}")
        b = torch.tensor(bias, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        return x * s.channelScale + b
    if which == "meanImage":
        mean = torch.tensor(np.asarray(pre.meanImage.meanImage, np.float32), dtype=x.dtype, device=x.device)
        if mean.numel() != x[0].numel():
            raise InputError(f"image input {name!r} has {x[0].numel()} values, the mean image {mean.numel()}")
        return x - mean.reshape(x.shape[1:])
    return x


def build(model_spec: Any, device: str | torch.device = "cpu", policy: str = "auto") -> NeuralNetworkRunner:
    """A Runner for a neuralNetwork, neuralNetworkClassifier or neuralNetworkRegressor model spec."""
    return NeuralNetworkRunner(model_spec, device, policy)
