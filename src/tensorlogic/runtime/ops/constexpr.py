"""constexpr_* ops (compressed weights): evaluated once at load by the interpreter, never per run.

The decompression itself is the Core ML reader's numpy code (``mil/constexpr.py``), shared with
``Model.get_tensor``; these registrations give the ops their opset ranges. The interpreter passes
every parameter as numpy — inputs and, for the iOS16 forms that store them so, op attributes — and
casts the results to the declared output dtypes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...mil.constexpr import CONSTEXPR_OPS
from ..registry import op


def _register(name: str, since: str) -> None:
    decompress = CONSTEXPR_OPS[name]

    def fn(**params: Any) -> tuple:
        return tuple(decompress(**params))

    fn.__name__ = name
    fn.__doc__ = f"{name}: numpy decompression from tensorlogic.mil.constexpr, run once at load."
    wrapped: Callable[..., tuple] = op(name, since=since)(fn)
    globals()[name] = wrapped


for _name in ("constexpr_affine_dequantize", "constexpr_cast", "constexpr_lut_to_dense",
              "constexpr_sparse_to_dense"):
    _register(_name, "iOS16")
for _name in ("constexpr_blockwise_shift_scale", "constexpr_lut_to_sparse",
              "constexpr_sparse_blockwise_shift_scale"):
    _register(_name, "iOS18")
