"""``tl.coreml.MLModel``: a drop-in for the common uses of ``coremltools.models.MLModel``, on TensorLogic.

    from tensorlogic.coreml import MLModel
    model = MLModel("model.mlpackage", compute_units="CPU_ONLY")   # or coremltools.ComputeUnit.CPU_ONLY
    out = model.predict({"x": x})                                   # dict of numpy arrays, like coremltools
    state = model.make_state(); model.predict({"x": x}, state)

It loads ``.mlpackage``, ``.mlmodel`` and ``.mlmodelc`` paths, or a protobuf spec (with ``weights_dir``
for an ML Program, as in coremltools). Prediction runs on our executor (CPU, CUDA, MPS), never Core ML.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import InputError, TensorLogicError
from .model import Model, load_model
from .runtime.predictor import compute_units_name


class FeatureDescription(Mapping):
    """Feature name → short description, iterable in declaration order (like coremltools')."""

    def __init__(self, features: list[Any]):
        self._features = list(features)

    def __getitem__(self, key: str) -> str:
        for f in self._features:
            if f.name == key:
                return getattr(f, "shortDescription", None) or getattr(f, "description", "") or ""
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (f.name for f in self._features)

    def __len__(self) -> int:
        return len(self._features)

    def __repr__(self) -> str:
        return "Features(" + ", ".join(self) + ")"


def _write_package(spec: Any, weights_dir: str | os.PathLike | None) -> Path:
    """A temporary ``.mlpackage`` holding ``spec`` and a copy of ``weights_dir``."""
    root = Path(tempfile.mkdtemp(suffix=".mlpackage", prefix="tl-"))
    item = "com.apple.CoreML"
    model_dir = root / "Data" / item
    model_dir.mkdir(parents=True)
    (model_dir / "model.mlmodel").write_bytes(spec.SerializeToString())
    if weights_dir is not None:
        shutil.copytree(weights_dir, model_dir / "weights")
    ident = str(uuid.uuid4()).upper()
    manifest = {
        "fileFormatVersion": "1.0.0",
        "itemInfoEntries": {ident: {"author": "tensorlogic", "description": "CoreML Model Specification",
                                    "name": "model.mlmodel", "path": f"{item}/model.mlmodel"}},
        "rootModelIdentifier": ident,
    }
    (root / "Manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


class MLModel:
    """A Core ML model run by TensorLogic, with ``coremltools.models.MLModel``'s common interface."""

    def __init__(
        self,
        model: str | os.PathLike | Any,
        compute_units: Any = "ALL",
        function_name: str | None = None,
        weights_dir: str | os.PathLike | None = None,
        device: str = "auto",
        skip_model_load: bool = False,
    ):
        self.compute_unit = compute_units
        units = compute_units_name(compute_units)
        self._temp: Path | None = None
        if isinstance(model, (str, os.PathLike)):
            path = Path(os.path.expanduser(os.fspath(model)))
        elif hasattr(model, "SerializeToString") and hasattr(model, "WhichOneof"):
            if model.WhichOneof("Type") == "mlProgram":
                if weights_dir is None:
                    raise InputError(
                        "an ML Program spec needs weights_dir (the package's weights folder) to be loaded"
                    )
                path = self._temp = _write_package(model, weights_dir)
            else:
                fd, name = tempfile.mkstemp(suffix=".mlmodel", prefix="tl-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(model.SerializeToString())
                path = self._temp = Path(name)
        else:
            raise TensorLogicError(
                f"MLModel takes a model path or a Core ML protobuf spec, not {type(model).__name__}"
            )
        if self._temp is not None:
            weakref.finalize(self, _remove, str(self._temp))
        self.package_path = str(path) if path.is_dir() else None
        self.is_package = path.is_dir()
        if skip_model_load:
            from .formats import open_model_file

            self._model = Model(open_model_file(path))
        else:
            self._model = load_model(path, device=device, compute_units=units, function_name=function_name)
        self._spec = getattr(self._model.file, "spec", None)
        runner = self._model._runner
        self.function_name = function_name or (runner.function_name if runner is not None else None)
        self._weights_dir = getattr(self._model.file, "weights_dir", None)

    # --- description ---------------------------------------------------------------------------

    def _description(self) -> Any:
        if self._spec is None:
            return None
        desc = self._spec.description
        if len(desc.functions) and self.function_name:
            for f in desc.functions:
                if f.name == self.function_name:
                    return f
        return desc

    @property
    def input_description(self) -> FeatureDescription:
        desc = self._description()
        return FeatureDescription(list(desc.input) if desc is not None else self._model.metadata.inputs)

    @property
    def output_description(self) -> FeatureDescription:
        desc = self._description()
        return FeatureDescription(list(desc.output) if desc is not None else self._model.metadata.outputs)

    @property
    def short_description(self) -> str:
        return self._model.metadata.description

    @property
    def author(self) -> str:
        return self._model.metadata.author

    @property
    def license(self) -> str:
        return self._model.metadata.license

    @property
    def version(self) -> str:
        return self._model.metadata.version

    @property
    def user_defined_metadata(self) -> dict[str, str]:
        if self._spec is None:
            return {}
        return dict(self._spec.description.metadata.userDefined)

    @property
    def weights_dir(self) -> str | None:
        return str(self._weights_dir) if self._weights_dir is not None and Path(self._weights_dir).is_dir() else None

    @property
    def model(self) -> Model:
        """The underlying ``tensorlogic.Model``."""
        return self._model

    def get_spec(self) -> Any:
        """A deep copy of the protobuf spec (None for a compiled ``.mlmodelc``)."""
        return copy.deepcopy(self._spec)

    def _is_multifunction(self) -> bool:
        return self._spec is not None and len(self._spec.description.functions) > 0

    def _is_stateful(self) -> bool:
        return bool(self._model.metadata.states) or bool(getattr(self._model.runner, "is_stateful", False))

    # --- prediction ----------------------------------------------------------------------------

    def predict(self, data: Any, state: Any = None, **kwargs: Any) -> Any:
        """Outputs by name (numpy, PIL images, class labels) for a dict, or a list of those for a list
        (``batch=True``: one run on the items stacked along the first axis, see Predictor.predict)."""
        return self._model.predict(data, state=state, **kwargs)

    def make_state(self) -> Any:
        """A fresh state object for a stateful model (``read_state`` / ``write_state`` by name)."""
        return self._model.make_state()

    def save(self, path: str | os.PathLike) -> None:
        """Write the model: a package folder is copied, a spec is serialized."""
        target = Path(os.path.expanduser(os.fspath(path)))
        if self.is_package and self.package_path is not None:
            if target.suffix == "":
                target = target.with_suffix(".mlpackage")
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(self.package_path, target)
        elif self._spec is not None:
            target.write_bytes(self._spec.SerializeToString())
        else:
            raise TensorLogicError(f"{self._model.path}: a compiled model cannot be saved as a spec")

    def __repr__(self) -> str:
        md = self._model.metadata
        ins = ", ".join(str(f) for f in md.inputs)
        outs = ", ".join(str(f) for f in md.outputs)
        units = getattr(self.compute_unit, "name", self.compute_unit)
        return f"MLModel({self._model.path.name}: inputs [{ins}] -> outputs [{outs}], compute_units={units})"


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)
