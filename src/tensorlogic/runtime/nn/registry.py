"""The NeuralNetwork layer registry: the spec's ``layer`` oneof field name → a builder function.

A layer is registered under the exact name of its field in ``NeuralNetworkLayer.layer``::

    @layer("convolution")
    def convolution(p, ctx):          # p: ConvolutionLayerParams, ctx: executor.LayerContext
        weight = ctx.weight(p.weights, shape, "weights")
        def run(x):
            return ...
        return run

The builder runs once, when the network is planned: it reads the layer's parameters, dequantizes its
weights onto the device and rejects parameters it cannot honour. It returns the function the run loop
calls with the layer's input tensors (positional, in the layer's input order); that function returns
one tensor, or a tuple for layers with several outputs. Control-flow layers (``scoped=True``) also get
the blob environment as their first argument, because their nested networks read and write it.
Registering a name twice fails at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import UnsupportedError


@dataclass(frozen=True)
class LayerDef:
    name: str
    build: Callable[..., Callable[..., Any]]
    family: str
    scoped: bool = False


_LAYERS: dict[str, LayerDef] = {}


def layer(name: str, *, scoped: bool = False) -> Callable:
    """Register ``build`` as the builder of NeuralNetwork layer type ``name``."""

    def register(build: Callable[..., Callable[..., Any]]) -> Callable[..., Callable[..., Any]]:
        family = build.__module__.rsplit(".", 1)[-1]
        if name in _LAYERS:
            raise RuntimeError(f"layer {name!r} registered twice: {_LAYERS[name].family} and {family}")
        _LAYERS[name] = LayerDef(name, build, family, scoped)
        return build

    return register


FAMILIES = (
    "activation", "unary", "elementwise", "conv", "pooling", "normalization", "reshape", "slicing",
    "resize", "reduce", "gather", "constant", "recurrent", "control",
)


def _load_families() -> None:
    # Importing the family modules fills the registry; done once, on first lookup.
    import importlib

    for family in FAMILIES:
        importlib.import_module(f"{__package__}.{family}")


def get(name: str, layer_name: str = "") -> LayerDef:
    """The builder of layer type ``name``, or UnsupportedError naming the type and the layer."""
    _load_families()
    found = _LAYERS.get(name)
    if found is None:
        where = f" (layer {layer_name!r})" if layer_name else ""
        raise UnsupportedError(f"NeuralNetwork layer type {name!r}{where} is not supported by TensorLogic")
    return found


def names() -> list[str]:
    _load_families()
    return sorted(_LAYERS)
