"""Classic Core ML models on the host: pipelines, tree ensembles, GLMs, SVMs, k-NN and feature transformers.

``build(model_spec, device, policy, loader)`` returns a ``Runner`` for any model type TensorLogic runs,
classic or not: NeuralNetwork specs go to ``runtime.nn``, ML Programs to the ML Program interpreter
(``loader`` reads their weight blobs), and pipelines chain any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...errors import UnsupportedError
from ..nn import NN_TYPES
from ..nn import build as build_nn
from ..nn.runner import Runner
from .glm import GLMClassifierRunner, GLMRegressorRunner
from .knn import KNearestNeighborsRunner
from .pipeline import PIPELINE_TYPES, MLProgramRunner, PipelineRunner
from .preprocessors import (
    ArrayFeatureExtractorRunner,
    CategoricalMappingRunner,
    DictVectorizerRunner,
    FeatureVectorizerRunner,
    IdentityRunner,
    ImputerRunner,
    NormalizerRunner,
    OneHotEncoderRunner,
    ScalerRunner,
)
from .svm import SupportVectorClassifierRunner, SupportVectorRegressorRunner
from .trees import TreeEnsembleRunner

RUNNERS: dict[str, Callable[..., Runner]] = {
    "treeEnsembleClassifier": TreeEnsembleRunner,
    "treeEnsembleRegressor": TreeEnsembleRunner,
    "glmClassifier": GLMClassifierRunner,
    "glmRegressor": GLMRegressorRunner,
    "supportVectorClassifier": SupportVectorClassifierRunner,
    "supportVectorRegressor": SupportVectorRegressorRunner,
    "kNearestNeighborsClassifier": KNearestNeighborsRunner,
    "oneHotEncoder": OneHotEncoderRunner,
    "imputer": ImputerRunner,
    "scaler": ScalerRunner,
    "normalizer": NormalizerRunner,
    "dictVectorizer": DictVectorizerRunner,
    "featureVectorizer": FeatureVectorizerRunner,
    "arrayFeatureExtractor": ArrayFeatureExtractorRunner,
    "categoricalMapping": CategoricalMappingRunner,
    "identity": IdentityRunner,
}

# Model types whose work happens in Apple frameworks (Vision, Sound Analysis, Natural Language, ...).
APPLE_ONLY = {
    "visionFeaturePrint": "Vision's feature-print network",
    "audioFeaturePrint": "Sound Analysis' audio feature print",
    "soundAnalysisPreprocessing": "Sound Analysis' preprocessing",
    "textClassifier": "Natural Language's text classifier",
    "wordTagger": "Natural Language's word tagger",
    "gazetteer": "Natural Language's gazetteer",
    "wordEmbedding": "Natural Language's word embedding",
    "itemSimilarityRecommender": "Core ML's item-similarity recommender (out of scope)",
    "customModel": "a custom model class compiled into the app",
    "bayesianProbitRegressor": "Core ML's Bayesian probit regressor (out of scope)",
    "nonMaximumSuppression": "Vision's non-maximum suppression model (out of scope)",
    "classConfidenceThresholding": "Core ML's class-confidence thresholding (out of scope)",
    "serializedModel": "an opaque serialized model",
}


def build(model_spec: Any, device: str | torch.device = "cpu", policy: str = "auto",
          loader: Callable[..., np.ndarray] | None = None) -> Runner:
    """A Runner for a model spec of any supported type (pipelines chain their sub-models)."""
    kind = model_spec.WhichOneof("Type")
    if kind in NN_TYPES:
        return build_nn(model_spec, device, policy)
    if kind == "mlProgram":
        return MLProgramRunner(model_spec, device, policy, loader)
    if kind in PIPELINE_TYPES:
        return PipelineRunner(model_spec, lambda sub: build(sub, device, policy, loader))
    if kind in RUNNERS:
        return RUNNERS[kind](model_spec, device)
    if kind == "linkedModel":
        target = model_spec.linkedModel.linkedModelFile.linkedModelFileName.defaultValue or "unnamed"
        raise UnsupportedError(f"Core ML model type 'linkedModel' needs the separately compiled model {target!r}, "
                               "which TensorLogic does not load")
    if kind in APPLE_ONLY:
        raise UnsupportedError(f"Core ML model type {kind!r} needs {APPLE_ONLY[kind]}, which TensorLogic cannot run")
    raise UnsupportedError(f"Core ML model type {kind or 'unknown'!r} is not supported by TensorLogic")


__all__ = ["APPLE_ONLY", "RUNNERS", "Runner", "build"]
