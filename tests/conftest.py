"""Shared test set-up: devices to run on, and per-dtype tolerances kept in one place."""

from __future__ import annotations

import importlib.util

import pytest

# Absolute/relative tolerances by compute dtype, for comparing against a float64 reference.
TOLERANCES = {
    "float64": (1e-10, 1e-10),
    "float32": (1e-5, 1e-4),
    "float16": (2e-3, 2e-2),
    "bfloat16": (2e-2, 5e-2),
}


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    """Run a test on the CPU, and again on CUDA where a GPU exists."""
    return request.param

# Session fixtures that convert small PyTorch models to Core ML with coremltools (shared by the
# format, runtime and language tests).
pytest_plugins = ["fixtures_coreml"]
