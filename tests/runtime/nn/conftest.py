"""Helpers for the NeuralNetwork layer tests: build a one-layer (or few-layer) spec with coremltools'
NeuralNetworkBuilder, run it through ``tensorlogic.runtime.nn``, and compare with a float64 reference."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from conftest import TOLERANCES


def _builder_cls():
    warnings.filterwarnings("ignore")
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    return datatypes, NeuralNetworkBuilder


def make_builder(inputs: dict[str, tuple[int, ...]], outputs=("out",), rank5: bool = False, mode: str | None = None):
    """A NeuralNetworkBuilder with float inputs of the given shapes and undeclared outputs."""
    datatypes, NeuralNetworkBuilder = _builder_cls()
    return NeuralNetworkBuilder(
        [(n, datatypes.Array(*s)) for n, s in inputs.items()],
        [(n, None) for n in outputs],
        mode=mode,
        disable_rank5_shape_mapping=not rank5,
    )


def run_spec(spec: Any, feeds: dict[str, np.ndarray], device: str = "cpu", policy: str = "auto") -> dict[str, Any]:
    from tensorlogic.runtime.nn import build

    runner = build(spec, device, policy)
    out = runner.run({k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()})
    return {k: v.detach().cpu().double().numpy() if isinstance(v, torch.Tensor) else v for k, v in out.items()}


def assert_close(got: np.ndarray, want: np.ndarray, dtype: str = "float32", squeeze: bool = False,
                 scale: float = 1.0) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if squeeze:
        got, want = np.squeeze(got), np.squeeze(want)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(got, want, atol=atol * scale, rtol=rtol * scale)


class Helpers:
    """The helpers above, for tests (which cannot import this conftest by name)."""

    make_builder = staticmethod(make_builder)
    run_spec = staticmethod(run_spec)
    assert_close = staticmethod(assert_close)


@pytest.fixture
def nnh() -> type[Helpers]:
    return Helpers


@pytest.fixture
def layer_case(device) -> Callable[..., dict[str, Any]]:
    """``layer_case(add_layers, feeds, rank5=False, outputs=("out",))``: build, run on ``device``, return outputs."""

    def run(add_layers: Callable[[Any], None], feeds: dict[str, np.ndarray], rank5: bool = False,
            outputs=("out",), policy: str = "auto") -> dict[str, Any]:
        b = make_builder({k: np.asarray(v).shape for k, v in feeds.items()}, outputs, rank5)
        add_layers(b)
        return run_spec(b.spec, {k: np.asarray(v, np.float32) for k, v in feeds.items()}, device, policy)

    return run
