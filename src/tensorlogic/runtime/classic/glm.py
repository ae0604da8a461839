"""Generalized linear models (``glmClassifier`` / ``glmRegressor``), following GLMClassifier.proto and
GLMRegressor.proto: ``scores = W x + offset``, then the logit or probit link.

Classifier probabilities: one score row for two classes gives ``[1 - f(s), f(s)]``; one-vs-rest rows are
normalized to sum to 1 (as scikit-learn's one-vs-rest ``predict_proba``); reference-class encoding with
K-1 rows is the multinomial logit, class 0 scoring 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import erf, sqrt
from typing import Any

import numpy as np

from ...errors import InputError, UnsupportedError
from .common import ClassicRunner, classifier_outputs, gather_inputs, labels_of, output_value


def _logit(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-s))


def _probit(s: np.ndarray) -> np.ndarray:
    return np.array([0.5 * (1.0 + erf(v / sqrt(2.0))) for v in s.reshape(-1)]).reshape(s.shape)


def _weights(msg: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [list(r.value) for r in msg.weights]
    if not rows or len({len(r) for r in rows}) != 1:
        raise UnsupportedError(f"the {what} weights must be rows of equal length")
    w = np.asarray(rows, dtype=np.float64)
    offset = np.asarray(msg.offset, dtype=np.float64)
    if offset.size not in (0, w.shape[0]):
        raise UnsupportedError(f"the {what} has {offset.size} offsets for {w.shape[0]} weight rows")
    return w, offset if offset.size else np.zeros(w.shape[0])


def _scores(w: np.ndarray, offset: np.ndarray, x: np.ndarray) -> np.ndarray:
    if x.size != w.shape[1]:
        raise InputError(f"the linear model takes {w.shape[1]} features, the input has {x.size}")
    return w @ x + offset


class GLMRegressorRunner(ClassicRunner):
    """``f(W x + offset)`` with f the identity, logistic or normal CDF."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        self.w, self.offset = _weights(spec.glmRegressor, "glmRegressor")
        self.link = {0: lambda s: s, 1: _logit, 2: _probit}.get(int(spec.glmRegressor.postEvaluationTransform))
        if self.link is None:
            raise UnsupportedError(f"glmRegressor: unknown transform {spec.glmRegressor.postEvaluationTransform}")

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        y = self.link(_scores(self.w, self.offset, gather_inputs(self.description, feeds)))
        return {fd.name: output_value(fd, y) for fd in self.description.output}


_LOGIT, _PROBIT = 0, 1
_REFERENCE, _ONE_VS_REST = 0, 1


class GLMClassifierRunner(ClassicRunner):
    """Logistic or probit classifier, binary, one-vs-rest or reference-class multinomial."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        msg = spec.glmClassifier
        self.w, self.offset = _weights(msg, "glmClassifier")
        self.labels = labels_of(msg, "glmClassifier")
        self.link = int(msg.postEvaluationTransform)
        self.encoding = int(msg.classEncoding)
        rows, k = self.w.shape[0], len(self.labels)
        binary = rows == 1 and k == 2
        if self.link not in (_LOGIT, _PROBIT) or (self.link == _PROBIT and not binary):
            raise UnsupportedError("glmClassifier: probit is defined for binary classification only")
        if not binary and not (self.encoding == _ONE_VS_REST and rows == k) and \
                not (self.encoding == _REFERENCE and rows == k - 1):
            raise UnsupportedError(f"glmClassifier: {rows} weight rows do not fit {k} classes with class "
                                   f"encoding {self.encoding}")

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        s = _scores(self.w, self.offset, gather_inputs(self.description, feeds))
        if s.size == 1:
            p = (_logit if self.link == _LOGIT else _probit)(s)[0]
            probs = np.array([1.0 - p, p])
        elif self.encoding == _ONE_VS_REST:
            p = _logit(s)
            probs = p / p.sum()
        else:
            z = np.concatenate([[0.0], s])
            e = np.exp(z - z.max())
            probs = e / e.sum()
        return classifier_outputs(self.description, self.labels, probs)
