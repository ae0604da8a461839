"""Feature transformers: ``oneHotEncoder``, ``imputer``, ``scaler``, ``normalizer``, ``dictVectorizer``,
``featureVectorizer``, ``arrayFeatureExtractor``, ``categoricalMapping``, ``identity``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...errors import InputError, UnsupportedError
from .common import ClassicRunner, as_vector, kind, output_value


def _only_input(runner: ClassicRunner, feeds: Mapping[str, Any]) -> Any:
    name = runner.input_names[0] if runner.input_names else None
    if name is None or name not in feeds:
        raise InputError(f"input {name!r} is missing")
    return feeds[name]


def _scalar(value: Any) -> Any:
    """A categorical value (str or int) from a Python, numpy or tensor scalar."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise InputError(f"expected one categorical value, got an array of shape {list(value.shape)}")
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode()
    if isinstance(value, np.str_):
        return str(value)
    if isinstance(value, (np.integer, np.floating, float)) and float(value).is_integer():
        return int(value)
    return value


def _single_output(runner: ClassicRunner, value: Any) -> dict[str, Any]:
    fd = runner.description.output[0]
    return {fd.name: value}


class OneHotEncoderRunner(ClassicRunner):
    """A categorical value as a one-hot array (or a one-entry ``{index: 1.0}`` dict when ``outputSparse``)."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        msg = spec.oneHotEncoder
        which = msg.WhichOneof("CategoryType")
        if which is None:
            raise UnsupportedError("oneHotEncoder has no categories")
        self.categories = {c: i for i, c in reversed(list(enumerate(getattr(msg, which).vector)))}
        self.n = len(getattr(msg, which).vector)
        self.sparse, self.ignore_unknown = msg.outputSparse, msg.handleUnknown == 1

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        value = _scalar(_only_input(self, feeds))
        index = self.categories.get(value)
        if index is None and not self.ignore_unknown:
            raise InputError(f"oneHotEncoder: {value!r} is not one of its categories")
        fd = self.description.output[0]
        if self.sparse or kind(fd) == "dictionaryType":
            return {fd.name: {} if index is None else {index: 1.0}}
        arr = np.zeros(self.n)
        if index is not None:
            arr[index] = 1.0
        return {fd.name: output_value(fd, arr)}


class ImputerRunner(ClassicRunner):
    """Replace missing values (NaN, or ``replace*Value``) by the imputed value (per position for arrays)."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        msg = spec.imputer
        which = msg.WhichOneof("ImputedValue")
        if which is None:
            raise UnsupportedError("imputer has no imputed value")
        raw = getattr(msg, which)
        self.imputed = list(raw.vector) if which.endswith("Array") else dict(raw.map) \
            if which.endswith("Dictionary") else raw
        replace = msg.WhichOneof("ReplaceValue")
        self.replace = getattr(msg, replace) if replace else math.nan

    def _missing(self, v: Any) -> bool:
        if isinstance(self.replace, float) and math.isnan(self.replace):
            return isinstance(v, float) and math.isnan(v)
        return bool(v == self.replace)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        value = _only_input(self, feeds)
        fd = self.description.output[0]
        if isinstance(value, Mapping):
            return {fd.name: value}
        if isinstance(self.imputed, list):
            arr = as_vector(value, self.input_names[0])
            if arr.size != len(self.imputed):
                raise InputError(f"imputer: {arr.size} values for {len(self.imputed)} imputed positions")
            fill = np.asarray(self.imputed, dtype=np.float64)
            missing = np.isnan(arr) if isinstance(self.replace, float) and math.isnan(self.replace) else \
                arr == self.replace
            return {fd.name: output_value(fd, np.where(missing, fill, arr))}
        scalar = _scalar(value)
        result = self.imputed if self._missing(scalar) else scalar
        if kind(fd) in ("doubleType", "int64Type", "multiArrayType"):
            return {fd.name: output_value(fd, np.array([float(result)]))}
        return {fd.name: result}


class ScalerRunner(ClassicRunner):
    """``(x + shiftValue) * scaleValue``, each a single value or one per element."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        self.shift = np.asarray(spec.scaler.shiftValue, dtype=np.float64)
        self.scale = np.asarray(spec.scaler.scaleValue, dtype=np.float64)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        x = as_vector(_only_input(self, feeds), self.input_names[0])
        for name, arr in (("shiftValue", self.shift), ("scaleValue", self.scale)):
            if arr.size not in (0, 1, x.size):
                raise InputError(f"scaler: {arr.size} {name}s for an input of {x.size} values")
        y = (x + (self.shift if self.shift.size else 0.0)) * (self.scale if self.scale.size else 1.0)
        return {fd.name: output_value(fd, y) for fd in self.description.output}


class NormalizerRunner(ClassicRunner):
    """Divide by the max-abs, L1 or L2 norm (a zero norm leaves the input as it is, as scikit-learn does)."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        self.norm = int(spec.normalizer.normType)
        if self.norm not in (0, 1, 2):
            raise UnsupportedError(f"normalizer: unknown norm type {self.norm}")

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        x = as_vector(_only_input(self, feeds), self.input_names[0])
        z = [np.abs(x).max(initial=0.0), np.abs(x).sum(), np.sqrt((x * x).sum())][self.norm]
        y = x / z if z != 0 else x
        return {fd.name: output_value(fd, y) for fd in self.description.output}


class DictVectorizerRunner(ClassicRunner):
    """A ``{key: value}`` dict as an array: position from the key's index in the mapping, absent keys 0."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        which = spec.dictVectorizer.WhichOneof("Map")
        if which is None:
            raise UnsupportedError("dictVectorizer has no key mapping")
        keys = list(getattr(spec.dictVectorizer, which).vector)
        self.index = {k: i for i, k in reversed(list(enumerate(keys)))}
        self.n = len(keys)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        value = _only_input(self, feeds)
        if not isinstance(value, Mapping):
            raise InputError(f"dictVectorizer takes a dict, got {type(value).__name__}")
        out = np.zeros(self.n)
        for key, v in value.items():
            i = self.index.get(_scalar(key))
            if i is not None:
                out[i] = float(v)
        return {fd.name: output_value(fd, out) for fd in self.description.output}


class FeatureVectorizerRunner(ClassicRunner):
    """Concatenate the listed inputs: scalars, arrays, and sparse ``{index: value}`` dicts of the given size."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        self.columns = [(c.inputColumn, int(c.inputDimensions)) for c in spec.featureVectorizer.inputList]
        big = [name for name, size in self.columns if size > 1 << 24]
        if big:
            raise UnsupportedError(f"featureVectorizer: column {big[0]!r} claims an implausible size")

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        parts = []
        for name, size in self.columns:
            if name not in feeds:
                raise InputError(f"input {name!r} is missing")
            value = feeds[name]
            if isinstance(value, Mapping):
                part = np.zeros(size)
                for key, v in value.items():
                    i = int(_scalar(key))
                    if not 0 <= i < size:
                        raise InputError(f"featureVectorizer: key {i} of {name!r} is outside its {size} dimensions")
                    part[i] = float(v)
            else:
                part = as_vector(value, name)
                if part.size != size:
                    raise InputError(f"featureVectorizer: {name!r} has {part.size} values, the model lists {size}")
            parts.append(part)
        y = np.concatenate(parts) if parts else np.zeros(0)
        return {fd.name: output_value(fd, y) for fd in self.description.output}


class ArrayFeatureExtractorRunner(ClassicRunner):
    """The elements at ``extractIndex`` of the input array (a scalar output for a single index)."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        self.index = [int(i) for i in spec.arrayFeatureExtractor.extractIndex]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        x = as_vector(_only_input(self, feeds), self.input_names[0])
        if self.index and max(self.index) >= x.size:
            raise InputError(f"arrayFeatureExtractor: index {max(self.index)} is past the input's {x.size} values")
        return {fd.name: output_value(fd, x[self.index]) for fd in self.description.output}


class CategoricalMappingRunner(ClassicRunner):
    """String → int64 or int64 → string, with the default for unknown values (else an error)."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        msg = spec.categoricalMapping
        which = msg.WhichOneof("MappingType")
        if which is None:
            raise UnsupportedError("categoricalMapping has no mapping")
        self.mapping = dict(getattr(msg, which).map)
        default = msg.WhichOneof("ValueOnUnknown")
        self.default = getattr(msg, default) if default else None

    def _map(self, value: Any) -> Any:
        key = _scalar(value)
        if key in self.mapping:
            return self.mapping[key]
        if self.default is None:
            raise InputError(f"categoricalMapping: {key!r} is not in the mapping and there is no default")
        return self.default

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        value = _only_input(self, feeds)
        if isinstance(value, (list, tuple)):
            return _single_output(self, [self._map(v) for v in value])
        return _single_output(self, self._map(value))


class IdentityRunner(ClassicRunner):
    """Inputs returned as outputs: by name where names match, else by position."""

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for i, fd in enumerate(self.description.output):
            src = fd.name if fd.name in feeds else self.input_names[i] if i < len(self.input_names) else None
            if src is None or src not in feeds:
                raise InputError(f"identity: no input for output {fd.name!r}")
            out[fd.name] = feeds[src]
        return out
