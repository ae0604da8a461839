"""Tree ensembles (``treeEnsembleClassifier`` / ``treeEnsembleRegressor``), following TreeEnsemble.proto.

Every tree is walked from its root at once (vectorized over trees); each reached leaf adds its sparse
evaluation values to ``basePredictionValue``; then the post-evaluation transform applies. A NaN feature
follows the child ``missingValueTracksTrueChild`` names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import InputError, UnsupportedError
from .common import ClassicRunner, classifier_outputs, gather_inputs, labels_of, output_value

_LEAF = 6
_NO_TRANSFORM, _SOFTMAX, _LOGISTIC, _SOFTMAX_ZERO_REF = 0, 1, 2, 3


class _Forest:
    """Node tables of a TreeEnsembleParameters message, indexed by position."""

    def __init__(self, params: Any, what: str):
        nodes = list(params.nodes)
        if not nodes:
            raise UnsupportedError(f"the {what} has no tree nodes")
        where = {(int(n.treeId), int(n.nodeId)): i for i, n in enumerate(nodes)}
        if len(where) != len(nodes):
            raise UnsupportedError(f"the {what} repeats a (treeId, nodeId) pair")
        n = len(nodes)
        self.behavior = np.array([int(x.nodeBehavior) for x in nodes], dtype=np.int64)
        self.feature = np.array([int(x.branchFeatureIndex) for x in nodes], dtype=np.int64)
        self.value = np.array([x.branchFeatureValue for x in nodes], dtype=np.float64)
        self.missing_true = np.array([x.missingValueTracksTrueChild for x in nodes], dtype=bool)
        self.true_child = np.zeros(n, dtype=np.int64)
        self.false_child = np.zeros(n, dtype=np.int64)
        children: set[int] = set()
        for i, x in enumerate(nodes):
            if self.behavior[i] == _LEAF:
                self.true_child[i] = self.false_child[i] = i
                continue
            if self.behavior[i] > _LEAF:
                raise UnsupportedError(f"the {what} has node behavior {self.behavior[i]}, which is not defined")
            for attr, table in (("trueChildNodeId", self.true_child), ("falseChildNodeId", self.false_child)):
                key = (int(x.treeId), int(getattr(x, attr)))
                if key not in where:
                    raise UnsupportedError(f"the {what}: tree {key[0]} node {int(x.nodeId)} names a missing child "
                                           f"node {key[1]}")
                table[i] = where[key]
                children.add(where[key])
        self.roots = np.array([i for i in range(n) if i not in children], dtype=np.int64)
        if len(self.roots) != len({int(x.treeId) for x in nodes}):
            raise UnsupportedError(f"the {what} does not have exactly one root node per tree")
        self.dims = int(params.numPredictionDimensions) or 1
        self.base = np.zeros(self.dims)
        base = np.asarray(params.basePredictionValue, dtype=np.float64)
        if base.size not in (0, self.dims):
            raise UnsupportedError(f"the {what} has {base.size} base values for {self.dims} prediction dimensions")
        self.base[: base.size] = base
        self.leaf_values = [[(int(e.evaluationIndex), float(e.evaluationValue)) for e in x.evaluationInfo]
                            for x in nodes]
        for entries in self.leaf_values:
            if any(not 0 <= j < self.dims for j, _ in entries):
                raise UnsupportedError(f"the {what} has a leaf value past its {self.dims} prediction dimensions")
        self.n_features = int(self.feature[self.behavior != _LEAF].max()) + 1 if (self.behavior != _LEAF).any() else 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.size < self.n_features:
            raise InputError(f"the tree ensemble reads feature {self.n_features - 1}, the input has {x.size} values")
        at = self.roots.copy()
        for _ in range(len(self.behavior)):
            branching = self.behavior[at] != _LEAF
            if not branching.any():
                break
            node = at[branching]
            v, t, b = x[self.feature[node]], self.value[node], self.behavior[node]
            test = np.select([b == 0, b == 1, b == 2, b == 3, b == 4, b == 5],
                             [v <= t, v < t, v >= t, v > t, v == t, v != t])
            go_true = np.where(np.isnan(v), self.missing_true[node], test)
            at[branching] = np.where(go_true, self.true_child[node], self.false_child[node])
        else:
            raise UnsupportedError("the tree ensemble has a cycle: a walk did not reach a leaf")
        out = self.base.copy()
        for node in at:
            for j, val in self.leaf_values[node]:
                out[j] += val
        return out


def _transform(scores: np.ndarray, transform: int) -> np.ndarray:
    if transform == _SOFTMAX:
        e = np.exp(scores - scores.max())
        return e / e.sum()
    if transform == _LOGISTIC:
        return 1.0 / (1.0 + np.exp(-scores))
    if transform == _SOFTMAX_ZERO_REF:
        return _transform(np.concatenate([[0.0], scores]), _SOFTMAX)
    return scores


class TreeEnsembleRunner(ClassicRunner):
    """A tree ensemble classifier or regressor."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        self.kind = spec.WhichOneof("Type")
        msg = getattr(spec, self.kind)
        self.forest = _Forest(msg.treeEnsemble, self.kind)
        self.transform = int(msg.postEvaluationTransform)
        if self.transform not in (0, 1, 2, 3):
            raise UnsupportedError(f"{self.kind}: unknown post-evaluation transform {self.transform}")
        self.labels = labels_of(msg, self.kind) if self.kind == "treeEnsembleClassifier" else None
        if self.labels is not None:
            dims = self.forest.dims + (self.transform == _SOFTMAX_ZERO_REF)
            if dims != len(self.labels) and not (dims == 1 and len(self.labels) == 2):
                raise UnsupportedError(f"{self.kind}: {self.forest.dims} prediction dimensions for "
                                       f"{len(self.labels)} class labels")

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        scores = _transform(self.forest.predict(gather_inputs(self.description, feeds)), self.transform)
        if self.labels is None:
            return {fd.name: output_value(fd, scores) for fd in self.description.output}
        if scores.size == 1 and len(self.labels) == 2:
            scores = np.array([1.0 - scores[0], scores[0]])
        return classifier_outputs(self.description, self.labels, scores)
