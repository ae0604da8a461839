"""The classify op: label and probability dict from a probabilities tensor and a classes literal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorlogic.mil import ir
from tensorlogic.runtime import registry

classify = registry.get("classify").fn


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_string_labels(device, dtype):
    probs = np.array([[0.1, 0.6, 0.3]])
    label, table = classify(torch.tensor(probs, dtype=getattr(torch, dtype), device=device),
                            classes=("cat", "dog", "bird"))
    assert label == "dog"
    assert list(table) == ["cat", "dog", "bird"]
    np.testing.assert_allclose(list(table.values()), probs[0], rtol=1e-3)
    assert all(isinstance(v, float) for v in table.values())


def test_int64_labels_from_literals(device):
    """As the interpreter passes a list literal: a tuple of 0-d int64 arrays (or ir.Value items)."""
    classes = (np.array(10, np.int64), np.array(20, np.int64), ir.scalar("int64", 30))
    label, table = classify(torch.tensor([0.2, 0.3, 0.5], device=device), classes=classes)
    assert label == 30 and type(label) is int
    assert table == pytest.approx({10: 0.2, 20: 0.3, 30: 0.5})


def test_ties_pick_first_label():
    label, _ = classify(torch.tensor([0.4, 0.4, 0.2]), classes=("a", "b", "c"))
    assert label == "a"


def test_count_mismatch():
    with pytest.raises(ValueError, match="3 probabilities for 2 class labels"):
        classify(torch.tensor([0.2, 0.3, 0.5]), classes=("a", "b"))
