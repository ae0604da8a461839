"""Support vector machines (``supportVectorClassifier`` / ``supportVectorRegressor``), following SVM.proto
and libsvm, whose model layout the spec keeps: one-vs-one decision values ``sum(coef * K(sv, x)) - rho``,
votes for the label (libsvm's ``svm_predict``, which scikit-learn's ``predict`` also uses), and, when
``probA``/``probB`` are present, Platt-scaled pairwise probabilities coupled by libsvm's multiclass method
(Wu, Lin and Weng). For two classes the pairwise probability is used directly, as libsvm does; scikit-learn
couples even then, so its binary ``predict_proba`` differs by up to a few tenths of a percent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...errors import InputError, UnsupportedError
from .common import ClassicRunner, classifier_outputs, gather_inputs, labels_of, output_value

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Sparse vectors name their width only through their largest index: refuse absurd ones before allocating.
MAX_FEATURES = 1 << 24


def _kernel(msg: Any, what: str) -> Kernel:
    k = msg.kernel
    which = k.WhichOneof("kernel")
    if which == "linearKernel":
        return lambda sv, x: sv @ x
    if which == "rbfKernel":
        gamma = k.rbfKernel.gamma
        return lambda sv, x: np.exp(-gamma * ((sv - x) ** 2).sum(-1))
    if which == "polyKernel":
        p = k.polyKernel
        return lambda sv, x: (p.gamma * (sv @ x) + p.c) ** p.degree
    if which == "sigmoidKernel":
        s = k.sigmoidKernel
        return lambda sv, x: np.tanh(s.gamma * (sv @ x) + s.c)
    raise UnsupportedError(f"the {what} has no kernel")


def _support_vectors(msg: Any, what: str) -> np.ndarray:
    which = msg.WhichOneof("supportVectors")
    if which == "denseSupportVectors":
        rows = [list(v.values) for v in msg.denseSupportVectors.vectors]
        if len({len(r) for r in rows}) > 1:
            raise UnsupportedError(f"the {what} support vectors differ in length")
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    if which == "sparseSupportVectors":
        vectors = list(msg.sparseSupportVectors.vectors)
        width = max((n.index for v in vectors for n in v.nodes), default=0)
        if width > MAX_FEATURES:
            raise UnsupportedError(f"the {what} has a sparse support vector index of {width}, past {MAX_FEATURES}")
        if any(n.index < 1 for v in vectors for n in v.nodes):
            raise UnsupportedError(f"the {what} has a sparse support vector index below 1 (they are 1-based)")
        out = np.zeros((len(vectors), width))
        for i, v in enumerate(vectors):
            for n in v.nodes:
                out[i, n.index - 1] = n.value
        return out
    raise UnsupportedError(f"the {what} has no support vectors")


def _kernel_values(kernel: Kernel, sv: np.ndarray, x: np.ndarray) -> np.ndarray:
    """K(sv_i, x) for every support vector; sparse vectors end at their last non-zero, so pad them with zeros."""
    if not sv.shape[0]:
        return np.zeros(0)
    if x.size < sv.shape[1]:
        raise InputError(f"the support vector model takes {sv.shape[1]} features, the input has {x.size}")
    if x.size > sv.shape[1]:
        sv = np.pad(sv, ((0, 0), (0, x.size - sv.shape[1])))
    return kernel(sv, x)


class SupportVectorRegressorRunner(ClassicRunner):
    """``sum(alpha * K(sv, x)) - rho``."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        msg = spec.supportVectorRegressor
        self.kernel = _kernel(msg, "supportVectorRegressor")
        self.sv = _support_vectors(msg, "supportVectorRegressor")
        self.alpha = np.asarray(msg.coefficients.alpha, dtype=np.float64)
        if self.alpha.size != self.sv.shape[0]:
            raise UnsupportedError(f"supportVectorRegressor: {self.alpha.size} coefficients for "
                                   f"{self.sv.shape[0]} support vectors")
        self.rho = msg.rho

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        x = gather_inputs(self.description, feeds)
        k = _kernel_values(self.kernel, self.sv, x)
        y = np.array([self.alpha @ k - self.rho])
        return {fd.name: output_value(fd, y) for fd in self.description.output}


def _sigmoid_predict(dec: float, a: float, b: float) -> float:
    f = dec * a + b
    return float(np.exp(-f) / (1.0 + np.exp(-f))) if f >= 0 else float(1.0 / (1.0 + np.exp(f)))


def _clip_probability(p: float) -> float:
    """libsvm's ``min(max(p, 1e-7), 1 - 1e-7)`` with its C comparisons ``(x > y) ? x : y``, which turn a NaN
    (a degenerate Platt fit gives one) into 1e-7."""
    p = p if p > 1e-7 else 1e-7
    return p if p < 1 - 1e-7 else 1 - 1e-7


def couple(r: np.ndarray) -> np.ndarray:
    """libsvm's multiclass_probability: class probabilities from pairwise ones r[i, j] = P(i | i or j)."""
    k = r.shape[0]
    q = -r.T * r
    np.fill_diagonal(q, 0.0)
    np.fill_diagonal(q, (r.T ** 2).sum(1) - np.diag(r) ** 2)
    p = np.full(k, 1.0 / k)
    eps = 0.005 / k
    for _ in range(max(100, k)):
        qp = q @ p
        pqp = p @ qp
        if np.abs(qp - pqp).max() < eps:
            break
        for t in range(k):
            diff = (-qp[t] + pqp) / q[t, t]
            p[t] += diff
            pqp = (pqp + diff * (diff * q[t, t] + 2 * qp[t])) / (1 + diff) / (1 + diff)
            qp = (qp + diff * q[t]) / (1 + diff)
            p /= 1 + diff
    return p


class SupportVectorClassifierRunner(ClassicRunner):
    """One-vs-one SVM classifier with optional Platt probabilities; without them a declared probability
    output holds each class's share of the votes."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        msg = spec.supportVectorClassifier
        what = "supportVectorClassifier"
        self.labels = labels_of(msg, what)
        self.kernel = _kernel(msg, what)
        self.sv = _support_vectors(msg, what)
        k = len(self.labels)
        self.counts = [int(n) for n in msg.numberOfSupportVectorsPerClass]
        if len(self.counts) != k or sum(self.counts) != self.sv.shape[0]:
            raise UnsupportedError(f"{what}: support vector counts {self.counts} do not fit {k} classes and "
                                   f"{self.sv.shape[0]} support vectors")
        self.coef = np.asarray([list(c.alpha) for c in msg.coefficients], dtype=np.float64)
        if self.coef.shape != (k - 1, self.sv.shape[0]):
            raise UnsupportedError(f"{what}: coefficients must be {k - 1} rows of {self.sv.shape[0]} values")
        pairs = k * (k - 1) // 2
        self.rho = np.asarray(msg.rho, dtype=np.float64)
        if self.rho.size != pairs:
            raise UnsupportedError(f"{what}: {self.rho.size} rho values for {pairs} class pairs")
        self.prob_a = np.asarray(msg.probA, dtype=np.float64)
        self.prob_b = np.asarray(msg.probB, dtype=np.float64)
        self.probabilistic = self.prob_a.size == pairs and self.prob_b.size == pairs
        self.start = np.concatenate([[0], np.cumsum(self.counts)]).astype(int)

    def _decisions(self, kv: np.ndarray) -> list[tuple[int, int, float]]:
        out = []
        k, s = len(self.labels), self.start
        p = 0
        for i in range(k):
            for j in range(i + 1, k):
                a, b = slice(s[i], s[i + 1]), slice(s[j], s[j + 1])
                total = self.coef[j - 1, a] @ kv[a] + self.coef[i, b] @ kv[b]
                out.append((i, j, float(total - self.rho[p])))
                p += 1
        return out

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        x = gather_inputs(self.description, feeds)
        kv = _kernel_values(self.kernel, self.sv, x)
        decisions = self._decisions(kv)
        k = len(self.labels)
        votes = np.zeros(k, dtype=np.int64)
        for i, j, d in decisions:
            votes[i if d > 0 else j] += 1
        if not self.probabilistic:
            # Without probabilities the "probabilities" are the vote shares; the label is the vote winner.
            return classifier_outputs(self.description, self.labels, votes / max(1, votes.sum()),
                                      int(np.argmax(votes)))
        r = np.zeros((k, k))
        for p, (i, j, d) in enumerate(decisions):
            r[i, j] = _clip_probability(_sigmoid_predict(d, self.prob_a[p], self.prob_b[p]))
            r[j, i] = 1.0 - r[i, j]
        probs = np.array([r[0, 1], r[1, 0]]) if k == 2 else couple(r)
        return classifier_outputs(self.description, self.labels, probs, int(np.argmax(votes)))
