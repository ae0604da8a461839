"""The ``classify`` op that ends classifier ML Programs (coremltools ``defs/iOS15/classify.py``).

coremltools appends it with ``classes`` bound as a literal list of strings or int64s; its two
outputs are the predicted label and a ``{label: probability}`` dict, which the predictor returns
as ``classLabel`` and the probabilities output, exactly as ``MLModel.predict`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..registry import op


def _plain(item: Any) -> str | int:
    """One class label as a Python ``str`` or ``int``, from a literal ``Value``, numpy scalar or plain value."""
    if hasattr(item, "numpy") and hasattr(item, "type"):  # a mil.ir.Value
        item = item.numpy()
    if isinstance(item, np.ndarray):
        item = item.item() if item.dtype != object else item.reshape(-1)[0]
    if isinstance(item, (bytes, np.bytes_)):
        return item.decode()
    if isinstance(item, (np.integer, int)) and not isinstance(item, bool):
        return int(item)
    return str(item)


def class_labels(classes: Any) -> list[str | int]:
    """The labels of a ``classes`` literal: list/tuple of values, or a 1-d array."""
    if hasattr(classes, "numpy") and hasattr(classes, "type"):
        classes = classes.numpy()
    if isinstance(classes, np.ndarray):
        classes = list(classes.reshape(-1))
    return [_plain(c) for c in classes]


@op("classify", params={"classes": "value"}, since="iOS15")
def classify(probabilities: torch.Tensor, *, classes: Any) -> tuple[str | int, dict[str | int, float]]:
    """``(label of the largest probability, {label: probability})``; ties go to the first label."""
    labels = class_labels(classes)
    probs = probabilities.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    if probs.numel() != len(labels):
        raise ValueError(f"{probs.numel()} probabilities for {len(labels)} class labels")
    values = probs.tolist()
    best = max(range(len(values)), key=values.__getitem__)
    return labels[best], dict(zip(labels, values))
