"""Shared pieces of the classic model runners: feature values in and out, class labels, classifier outputs.

Classic models compute on the host in float64 (Core ML evaluates them in double precision too); their
multiArray outputs come back as CPU tensors in the declared data type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...errors import InputError, UnsupportedError
from ..nn.runner import Runner

# ArrayFeatureType.ArrayDataType values.
_DTYPES = {65568: torch.float32, 65600: torch.float64, 131104: torch.int32, 131080: torch.int8,
           65552: torch.float16}


def kind(fd: Any) -> str:
    """The FeatureType oneof of a feature description (``multiArrayType``, ``doubleType``, ...)."""
    return fd.type.WhichOneof("Type") or "unknown"


def labels_of(message: Any, what: str) -> list[Any]:
    """The class labels a message holds in its ``ClassLabels`` oneof."""
    which = message.WhichOneof("ClassLabels")
    if which is None:
        raise UnsupportedError(f"the {what} has no class labels")
    return list(getattr(message, which).vector)


def as_vector(value: Any, name: str) -> np.ndarray:
    """A numeric feature value (tensor, array, list or scalar) as a flat float64 vector."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"input {name!r} is not numeric ({type(value).__name__})") from None
    return arr.reshape(-1)


def gather_inputs(description: Any, feeds: Mapping[str, Any]) -> np.ndarray:
    """All numeric inputs, in description order, concatenated into one float64 vector."""
    parts = []
    for fd in description.input:
        if fd.name not in feeds:
            raise InputError(f"input {fd.name!r} is missing")
        parts.append(as_vector(feeds[fd.name], fd.name))
    return np.concatenate(parts) if parts else np.zeros(0)


def output_value(fd: Any, values: np.ndarray) -> Any:
    """A computed float64 result in the form the output description declares."""
    k = kind(fd)
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if k == "doubleType":
        return float(flat[0])
    if k == "int64Type":
        return int(round(float(flat[0])))
    if k == "multiArrayType":
        arr = fd.type.multiArrayType
        dtype = _DTYPES.get(arr.dataType, torch.float64)
        shape = tuple(int(d) for d in arr.shape)
        t = torch.from_numpy(np.asarray(values, dtype=np.float64).copy())
        if shape and int(np.prod(shape)) == t.numel():
            t = t.reshape(shape)
        return (torch.round(t) if not dtype.is_floating_point else t).to(dtype)
    return torch.from_numpy(flat.copy())


def classifier_outputs(description: Any, labels: list[Any], probs: np.ndarray,
                       label_index: int | None = None) -> dict[str, Any]:
    """The predicted label (argmax, first on ties, unless given) and the ``{label: probability}`` dict."""
    if len(probs) != len(labels):
        raise UnsupportedError(f"the classifier computes {len(probs)} scores for {len(labels)} class labels")
    best = int(np.argmax(probs)) if label_index is None else label_index
    out: dict[str, Any] = {}
    for fd in description.output:
        if fd.name == description.predictedFeatureName:
            out[fd.name] = labels[best]
        elif fd.name == description.predictedProbabilitiesName or kind(fd) == "dictionaryType":
            out[fd.name] = {lab: float(p) for lab, p in zip(labels, probs)}
        else:
            out[fd.name] = output_value(fd, probs)
    return out


class ClassicRunner(Runner):
    """A classic model: feature description plus a host-side computation."""

    def __init__(self, spec: Any, device: str | torch.device = "cpu"):
        self.description = spec.description
        self.input_names = tuple(fd.name for fd in spec.description.input)
        self.output_names = tuple(fd.name for fd in spec.description.output)
        self.device = torch.device(device)
