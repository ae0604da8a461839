"""The one error type of the training package."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..errors import TensorLogicError


class TrainError(TensorLogicError):
    """A training run cannot start or cannot go on; the message is one line (the caller adds line/col)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' when a known name is close to ``name``, else ''."""
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""
