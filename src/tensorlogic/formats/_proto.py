"""The Core ML protobuf schema, taken from coremltools' generated ``*_pb2`` modules without importing coremltools.

``import coremltools`` costs seconds and pulls in torch; its generated modules alone import in tens of
milliseconds. We load them as submodules of an alias package whose ``__path__`` is coremltools'
``proto`` folder, so coremltools' ``__init__`` never runs. When coremltools has already been imported
its own modules are reused. Either way the message classes are the ones coremltools uses: protobuf
registers each ``.proto`` file once in the default descriptor pool and hands out one class per
message descriptor, so a spec parsed here can be given to coremltools and vice versa.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from ..errors import UnsupportedError

_ALIAS = "_tensorlogic_coreml_proto"
_MODULES = ("Model_pb2", "MIL_pb2", "FeatureTypes_pb2", "NeuralNetwork_pb2")


def _proto_dir() -> Path:
    spec = importlib.util.find_spec("coremltools")
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedError(
            "reading Core ML protobuf needs the coremltools package (its schema files): pip install coremltools"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "proto"


def _load(name: str) -> Any:
    official = sys.modules.get(f"coremltools.proto.{name}")
    if official is not None:
        return official
    if _ALIAS not in sys.modules:
        package = types.ModuleType(_ALIAS)
        package.__path__ = [str(_proto_dir())]
        package.__package__ = _ALIAS
        sys.modules[_ALIAS] = package
    return importlib.import_module(f"{_ALIAS}.{name}")


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        module = _load(name)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
