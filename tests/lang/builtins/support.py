"""Helpers shared by the builtin tests: call a builtin directly, expect its error, compare with float64 references.

Imported as ``lang.builtins.support`` (``tests/`` is on pytest's pythonpath; ``lang`` is a namespace package).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.lang.builtins import BUILTINS
from tensorlogic.lang.values import BuiltinError, Context


def call(name: str, *args: Any, ctx: Context | None = None, **kwargs: Any) -> Any:
    """BUILTINS[name] called the way the evaluator calls it; builtins that take a Context get ctx or a fresh CPU one."""
    b = BUILTINS[name]
    if not b.needs_ctx:
        return b.fn(*args, **kwargs)
    return b.fn(ctx if ctx is not None else Context(device="cpu"), *args, **kwargs)


def error(name: str, *args: Any, match: str | None = None, **kwargs: Any) -> str:
    """The message of the BuiltinError that call(name, ...) raises; it must also match the regex match if given."""
    with pytest.raises(BuiltinError, match=match) as e:
        call(name, *args, **kwargs)
    return str(e.value)


def rnd(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal values from a seeded numpy generator, as a tensor of dtype."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).to(dtype)


def f64(t: torch.Tensor) -> np.ndarray:
    """t as a float64 numpy array (the values the reference is compared with)."""
    return t.detach().cpu().double().numpy()


def close(got: Any, want: Any, dtype: torch.dtype | None = torch.float16) -> None:
    """got is a tensor of dtype (any dtype when None) with want's shape and values, within its dtype's tolerance."""
    assert isinstance(got, torch.Tensor) and (dtype is None or got.dtype == dtype), got
    want = np.asarray(want, dtype=np.float64)
    assert tuple(got.shape) == want.shape, (tuple(got.shape), want.shape)
    atol, rtol = TOLERANCES[str(got.dtype).removeprefix("torch.")]
    np.testing.assert_allclose(f64(got), want, atol=atol, rtol=rtol)
