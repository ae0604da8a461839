"""k-nearest-neighbours classifier (``kNearestNeighborsClassifier``, NearestNeighbors.proto): squared
Euclidean distance over the stored samples (linear search; a kd-tree index gives the same neighbours),
uniform or inverse-distance votes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import InputError, UnsupportedError
from .common import ClassicRunner, classifier_outputs, gather_inputs


class KNearestNeighborsRunner(ClassicRunner):
    """Majority (or inverse-distance weighted) label of the k closest stored samples."""

    def __init__(self, spec: Any, device: Any = "cpu"):
        super().__init__(spec, device)
        msg = spec.kNearestNeighborsClassifier
        index = msg.nearestNeighborsIndex
        self.samples = np.asarray([list(s.vector) for s in index.floatSamples], dtype=np.float64)
        self.dims = int(index.numberOfDimensions)
        which = msg.WhichOneof("ClassLabels")
        self.sample_labels = list(getattr(msg, which).vector) if which else []
        if len(self.sample_labels) != len(self.samples):
            raise UnsupportedError(f"kNearestNeighborsClassifier: {len(self.sample_labels)} labels for "
                                   f"{len(self.samples)} samples")
        self.labels = list(dict.fromkeys(self.sample_labels))
        default = msg.WhichOneof("DefaultClassLabel")
        self.default = getattr(msg, default) if default else None
        self.k = int(msg.numberOfNeighbors.defaultValue) or 1
        self.inverse = msg.WhichOneof("WeightingScheme") == "inverseDistanceWeighting"

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        x = gather_inputs(self.description, feeds)
        if not len(self.samples):
            if self.default is None:
                raise InputError("kNearestNeighborsClassifier has no samples and no default label")
            return classifier_outputs(self.description, [self.default], np.ones(1))
        if x.size != self.samples.shape[1]:
            raise InputError(f"kNearestNeighborsClassifier takes {self.samples.shape[1]} values, got {x.size}")
        d = ((self.samples - x) ** 2).sum(1)
        near = np.argsort(d, kind="stable")[: self.k]
        votes = np.zeros(len(self.labels))
        for i in near:
            w = 1.0 / max(float(np.sqrt(d[i])), 1e-12) if self.inverse else 1.0
            votes[self.labels.index(self.sample_labels[i])] += w
        return classifier_outputs(self.description, self.labels, votes / votes.sum())
