"""``Predictor``: coremltools-compatible prediction for a Core ML model on PyTorch.

ML Programs run on the interpreter (or its compiled path); every other model type (NeuralNetwork,
pipelines, trees, GLM, SVM, preprocessors, ...) runs on ``runtime.classic.build``'s runner through
``SpecPredictor``, with the same features at the boundary. ``predict(data, state=None, outputs=None)``
takes a dict (or a list of dicts) of inputs and returns a dict of outputs the way
``coremltools.models.MLModel.predict`` does: numpy arrays, PIL images for image outputs, and for
classifiers the class label plus a ``{label: probability}`` dict. A predictor is safe to share between
threads: each run has its own environment, and states live in the ``ModelState`` objects the caller passes.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import InputError, UnsupportedError
from ..mil import ir
from .dtypes import compute_dtype, numpy_dtype, to_numpy, to_torch
from .features import (
    Feature,
    Signature,
    array_input,
    build_signature,
    check_shape,
    image_input,
    image_output,
    label_value,
    probabilities_value,
)
from .interpreter import Interpreter, StateValue

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


def compute_units_name(compute_units: Any) -> str:
    """``ALL``/``CPU_ONLY``/``CPU_AND_GPU``/``CPU_AND_NE`` from a string or coremltools' ``ComputeUnit``."""
    name = getattr(compute_units, "name", compute_units)
    name = str(name).upper()
    if name not in COMPUTE_UNITS:
        raise InputError(f"unknown compute units {compute_units!r} (use one of {', '.join(COMPUTE_UNITS)})")
    return name


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto", compute_units: Any = "ALL") -> torch.device:
    """The torch device to run on: ``auto`` picks cuda > mps > cpu, or cpu for ``CPU_ONLY``."""
    units = compute_units_name(compute_units)
    if device is None or str(device) == "auto":
        if units == "CPU_ONLY":
            return torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    name = "cuda" if str(device) == "gpu" else str(device)
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {device!r} (use cpu, cuda, mps or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnsupportedError(f"device {device!r} asked for, but torch sees no CUDA device here")
    if dev.type == "mps" and not _mps_available():
        raise UnsupportedError(f"device {device!r} asked for, but torch has no MPS device here")
    return dev


class ModelState:
    """The states of one stateful model (``make_state()``), readable and writable by name."""

    def __init__(self, owner: Predictor, features: list[Feature], values: dict[str, StateValue]):
        self._owner = owner
        self._features = {f.name: f for f in features}
        self._values = values

    def _feature(self, name: str) -> Feature:
        if name not in self._features:
            known = ", ".join(self._features) or "none"
            raise InputError(f"no state named {name!r} (states: {known})")
        return self._features[name]

    def read_state(self, name: str) -> np.ndarray:
        """A copy of the state's value, in its declared dtype."""
        feat = self._feature(name)
        return to_numpy(self._values[name].value, feat.dtype).copy()

    def write_state(self, name: str, value: Any) -> None:
        """Replace the state's value (same shape; cast to the declared dtype)."""
        feat = self._feature(name)
        arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
        current = self._values[name].value
        if tuple(arr.shape) != tuple(current.shape):
            raise InputError(
                f"state {name!r} has shape {list(current.shape)}, the value written has shape {list(arr.shape)}"
            )
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise InputError(f"state {name!r} holds {feat.dtype} numbers, not {arr.dtype} data")
        self._values[name].value = to_torch(arr.astype(numpy_dtype(feat.dtype or "fp32")), current.dtype,
                                            current.device)

    def __repr__(self) -> str:
        return f"<ModelState {', '.join(self._features)}>"


class Predictor:
    """Runs one function of a Core ML ML Program with coremltools' ``predict`` conventions.

    ``Predictor(file)`` of a model that is not an ML Program makes a ``SpecPredictor`` instead."""

    def __new__(cls, file: Any, *args: Any, **kwargs: Any) -> Predictor:
        if cls is Predictor and getattr(file, "program", None) is None:
            cls = SpecPredictor
        return super().__new__(cls)

    def __init__(
        self,
        file: Any,
        device: str | torch.device | None = "auto",
        compute_units: Any = "ALL",
        function_name: str | None = None,
        policy: str | None = None,
        mode: str | None = None,
        compile_options: Mapping[str, Any] | None = None,
    ):
        self.file = file
        self.compute_units = compute_units_name(compute_units)
        program: ir.Program = file.program
        spec = getattr(file, "spec", None)
        self.program = program
        self.function_name = self._pick_function(program, spec, function_name)
        function = program.functions[self.function_name]
        self.device = resolve_device(device, self.compute_units)
        # The precision policy (see dtypes.py); TL_PRECISION sets it for every model of a process.
        self.policy = policy or os.environ.get("TL_PRECISION", "auto")
        self.interpreter = Interpreter(function, self.device, self.policy)
        self.signature = self._signature(spec, function)
        self._slots = {s.name: s for s in self.interpreter.input_slots}
        # The execution mode (compiled.py): interp (the reference), compiled, or compile
        # (torch.compile); TL_MODE sets it for every model of a process.
        self.mode = mode or os.environ.get("TL_MODE", "interp")
        self.engine: Any = self.interpreter
        if self.mode != "interp":
            from .compiled import CompiledProgram

            self.engine = CompiledProgram(self.interpreter.plan, self.mode, **dict(compile_options or {}))

    # --- set-up --------------------------------------------------------------------------------

    def _pick_function(self, program: ir.Program, spec: Any, function_name: str | None) -> str:
        names = list(program.functions)
        default = spec.description.defaultFunctionName if spec is not None else ""
        name = function_name or default or ("main" if "main" in names else names[0] if names else None)
        if name not in program.functions:
            raise InputError(f"{self.file.path}: no function named {name!r} (functions: {', '.join(names)})")
        return name

    def _signature(self, spec: Any, function: ir.Function) -> Signature:
        types: dict[str, ir.ValueType] = {v.name: v.type for v in function.inputs}
        block = function.block
        produced = {v.name: v.type for op in block.operations for v in op.outputs}
        for name in block.outputs:
            if name in produced:
                types.setdefault(name, produced[name])
        inputs, outputs, states = self.file.feature_specs(self.function_name)
        predicted = probabilities = None
        if spec is not None:
            desc = spec.description
            found = [f for f in desc.functions if f.name == self.function_name]
            src = found[0] if found else desc
            predicted, probabilities = src.predictedFeatureName, src.predictedProbabilitiesName
        else:
            extra = self.file.metadata().extra
            predicted, probabilities = extra.get("predictedFeatureName"), extra.get("predictedProbabilitiesName")
        return build_signature(inputs, outputs, states, types, predicted, probabilities)

    # --- public API ----------------------------------------------------------------------------

    @property
    def is_stateful(self) -> bool:
        return bool(self.signature.states)

    def make_state(self) -> ModelState:
        """Fresh states for this model, zero-filled like Core ML's."""
        values = {}
        for feat in self.signature.states:
            slot = self._slots.get(feat.name)
            if feat.shape is None or not all(isinstance(d, int) for d in feat.shape):
                raise UnsupportedError(f"state {feat.name!r} has no static shape ({feat.describe_shape()})")
            dtype = slot.dtype if slot is not None and slot.dtype is not None else \
                compute_dtype(feat.dtype or "fp32", self.policy, self.device)
            values[feat.name] = StateValue(torch.zeros(tuple(feat.shape), dtype=dtype, device=self.device))
        return ModelState(self, self.signature.states, values)

    def predict(self, data: Any, state: ModelState | None = None, outputs: Iterable[str] | None = None,
                batch: bool = False) -> Any:
        """Outputs by name for one input dict, or a list of those for a list of input dicts.

        A list runs item by item, like coremltools. ``batch=True`` runs it as one batch along the
        first axis where the shapes allow: only for models whose first axis is a batch axis (the
        items must not interact there, which no declared shape can prove)."""
        if isinstance(data, (list, tuple)):
            if state is not None:
                raise InputError("a state can only be used with a single prediction, not a batch")
            batched = self._predict_batch(data, outputs) if batch and len(data) > 1 else None
            if batched is not None:
                return batched
            return [self._predict_one(d, None, outputs) for d in data]
        return self._predict_one(data, state, outputs)

    # --- one prediction ------------------------------------------------------------------------

    def _predict_one(self, data: Any, state: ModelState | None, outputs: Iterable[str] | None) -> dict:
        if not isinstance(data, Mapping):
            raise InputError(f"predict takes a dict of inputs (or a list of dicts), not {type(data).__name__}")
        tensors = self._inputs(data)
        states = self._states(state)
        wanted = list(outputs) if outputs is not None else None
        with torch.inference_mode():
            result = self.engine.run(tensors, states=states, outputs=wanted)
        if wanted is not None:
            types = self.interpreter.plan.var_types
            return {n: _plain_output(v, types.get(n)) for n, v in result.items()}
        return self._outputs(result)

    # --- a list of predictions as one batch --------------------------------------------------

    def _predict_batch(self, items: list | tuple, outputs: Iterable[str] | None) -> list[dict] | None:
        """The predictions of ``items`` from one run on their inputs concatenated along the first
        axis, or None when the model's shapes do not allow it (then each item runs alone)."""
        sig = self.signature
        if (sig.states or sig.predicted_feature or sig.predicted_probabilities
                or any(f.kind != "multiArray" for f in sig.inputs + sig.outputs)
                or not all(isinstance(d, Mapping) and set(d) == set(items[0]) for d in items)):
            return None
        per_item = [self._inputs(d) for d in items]
        sizes: list[int] = []
        tensors: dict[str, torch.Tensor] = {}
        for name in per_item[0]:
            parts = [t[name] for t in per_item]
            if any(p.dim() == 0 or p.shape[1:] != parts[0].shape[1:] for p in parts):
                return None
            counts = [int(p.shape[0]) for p in parts]
            if sizes and counts != sizes:
                return None
            sizes = counts
            try:
                check_shape(sig.input(name), (sum(counts), *parts[0].shape[1:]))
            except InputError:
                return None
            tensors[name] = torch.cat(parts)
        if not sizes:
            return None
        wanted = list(outputs) if outputs is not None else None
        with torch.inference_mode():
            result = self.engine.run(tensors, outputs=wanted)
        total = sum(sizes)
        if not all(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == total for v in result.values()):
            return None  # an output that does not follow the batch axis: run the items one by one
        split = {n: v.split(sizes) for n, v in result.items()}
        types = self.interpreter.plan.var_types
        out = []
        for i in range(len(items)):
            one = {n: parts[i] for n, parts in split.items()}
            out.append({n: _plain_output(v, types.get(n)) for n, v in one.items()} if wanted is not None
                       else self._outputs(one))
        return out

    def _inputs(self, data: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        names = [f.name for f in self.signature.inputs]
        for key in data:
            if key not in names:
                raise InputError(f"unknown input {key!r} (model inputs: {', '.join(names) or 'none'})")
        tensors: dict[str, torch.Tensor] = {}
        for feat in self.signature.inputs:
            slot = self._slots.get(feat.name)
            if feat.name in data:
                value = data[feat.name]
                arr = image_input(feat, value) if feat.kind == "image" else array_input(feat, value)
            elif feat.optional and feat.default_array() is not None:
                arr = feat.default_array()
            else:
                raise InputError(f"input {feat.name!r} is missing (model inputs: {', '.join(names)})")
            dtype = slot.dtype if slot is not None and slot.dtype is not None else torch.float32
            tensors[feat.name] = to_torch(arr, dtype, self.device)
        return tensors

    def _states(self, state: ModelState | None) -> dict[str, StateValue] | None:
        if not self.signature.states:
            return None
        if state is None:
            names = ", ".join(f.name for f in self.signature.states)
            raise InputError(f"the model is stateful (states: {names}): pass state=model.make_state()")
        if not isinstance(state, ModelState) or state._owner is not self:
            raise InputError("the state passed was not made by this model's make_state()")
        return state._values

    def _outputs(self, result: dict[str, Any]) -> dict[str, Any]:
        sig = self.signature
        out: dict[str, Any] = {}
        for feat in sig.outputs:
            if feat.name not in result:
                raise UnsupportedError(f"the program does not produce the declared output {feat.name!r}")
            value = result[feat.name]
            if feat.name == sig.predicted_probabilities or feat.kind == "dictionary":
                out[feat.name] = probabilities_value(value)
            elif feat.name == sig.predicted_feature or feat.kind == "string":
                out[feat.name] = label_value(value)
            elif feat.kind == "image":
                out[feat.name] = image_output(feat, to_numpy(value))
            elif isinstance(value, torch.Tensor):
                out[feat.name] = to_numpy(value, feat.dtype)
            elif feat.kind in ("int64", "double", "sequence"):
                out[feat.name] = value  # Python int / float / list, as coremltools returns them
            else:
                out[feat.name] = np.asarray(value)
        return out

    def check_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        """Raise InputError unless input ``name`` accepts ``shape``."""
        feat = self.signature.input(name)
        if feat is None:
            raise InputError(f"unknown input {name!r}")
        check_shape(feat, shape)

    def __repr__(self) -> str:
        return f"<Predictor {self.function_name} on {self.device}>"


class SpecPredictor(Predictor):
    """Runs a Core ML model that is not an ML Program (NeuralNetwork, pipeline, tree ensemble, GLM, SVM,
    preprocessor, ...) on ``runtime.classic.build``'s runner, with the ML Program predictor's features."""

    def __init__(
        self,
        file: Any,
        device: str | torch.device | None = "auto",
        compute_units: Any = "ALL",
        function_name: str | None = None,
        policy: str | None = None,
        mode: str | None = None,
        compile_options: Mapping[str, Any] | None = None,
    ):
        from .classic import build

        self.file = file
        self.compute_units = compute_units_name(compute_units)
        spec = getattr(file, "spec", None)
        if spec is None:
            raise UnsupportedError(f"{file.path}: the Core ML model has neither an ML Program nor a model spec")
        if function_name not in (None, "", "main"):
            raise InputError(f"{file.path}: no function {function_name!r}; the model has a single function (main)")
        self.program = None
        self.function_name = "main"
        self.model_type = spec.WhichOneof("Type")
        self.device = resolve_device(device, self.compute_units)
        self.policy = policy or os.environ.get("TL_PRECISION", "auto")
        # These models run layer by layer (or on the host); the compiled ML Program path does not apply.
        self.mode = "interp"
        self.runner = build(spec, self.device, self.policy, loader=getattr(file, "_load_blob", None))
        self.engine = self.runner
        self.interpreter = None
        self._slots = {}
        inputs, outputs, states = file.feature_specs(None)
        desc = spec.description
        self.signature = build_signature(inputs, outputs, states, {}, desc.predictedFeatureName,
                                         desc.predictedProbabilitiesName)
        for feat in self.signature.inputs + self.signature.outputs:
            if feat.dtype == "unknown" or (feat.kind == "image" and feat.dtype == "uint8"):
                feat.dtype = "fp32" if feat.kind in ("image", "multiArray") else None
        # NeuralNetworks with the legacy rank-5 mapping also take inputs with leading [Seq, Batch] axes.
        self._leading = 2 if getattr(self.runner, "rank5", False) else 0

    def _predict_one(self, data: Any, state: ModelState | None, outputs: Iterable[str] | None) -> dict:
        if not isinstance(data, Mapping):
            raise InputError(f"predict takes a dict of inputs (or a list of dicts), not {type(data).__name__}")
        if state is not None:
            raise InputError(f"the {self.model_type} model is not stateful: predict it without a state")
        feeds = self._inputs(data)
        if outputs is None:
            with torch.inference_mode():
                return self._outputs(self.runner.run(feeds))
        wanted = list(outputs)
        if hasattr(self.runner, "network"):  # a NeuralNetwork: any blob, intermediates included
            with torch.inference_mode():
                result = self.runner.run(feeds, outputs=wanted)
            return {n: _plain_output(v, None) for n, v in result.items()}
        unknown = [n for n in wanted if n not in self.runner.output_names]
        if unknown:
            raise InputError(f"no output named {unknown[0]!r} (a {self.model_type} model has only its outputs: "
                             f"{', '.join(self.runner.output_names)})")
        with torch.inference_mode():
            full = self._outputs(self.runner.run(feeds))
        return {n: full[n] for n in wanted}

    def _predict_batch(self, items: list | tuple, outputs: Iterable[str] | None) -> list[dict] | None:
        return None  # item by item: these runners take one example at a time

    def _inputs(self, data: Mapping[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        names = [f.name for f in self.signature.inputs]
        for key in data:
            if key not in names:
                raise InputError(f"unknown input {key!r} (model inputs: {', '.join(names) or 'none'})")
        feeds: dict[str, Any] = {}
        for feat in self.signature.inputs:
            if feat.name in data:
                feeds[feat.name] = self._feed(feat, data[feat.name])
            elif not feat.optional:
                raise InputError(f"input {feat.name!r} is missing (model inputs: {', '.join(names)})")
        return feeds

    def _feed(self, feat: Feature, value: Any) -> Any:
        """One input as the runner takes it: tensors for arrays and images, Python values otherwise."""
        if feat.kind == "image":
            return torch.from_numpy(image_input(feat, value).astype(np.float32))
        if feat.kind == "multiArray":
            arr = array_input(feat, value, leading=self._leading, flat=not hasattr(self.runner, "network"))
            return torch.from_numpy(np.ascontiguousarray(arr))
        if feat.kind in ("int64", "double"):
            arr = array_input(feat, value)
            if arr.size != 1:
                raise InputError(f"input {feat.name!r} is one {feat.kind} value, not {arr.size} values")
            return int(arr.reshape(-1)[0]) if feat.kind == "int64" else float(arr.reshape(-1)[0])
        if feat.kind == "string":
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            if not isinstance(value, str):
                raise InputError(f"input {feat.name!r} is a string input, not {type(value).__name__}")
            return value
        if feat.kind == "dictionary":
            if not isinstance(value, Mapping):
                raise InputError(f"input {feat.name!r} is a dictionary input, not {type(value).__name__}")
            return dict(value)
        if feat.kind == "sequence":
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
                raise InputError(f"input {feat.name!r} is a sequence input, not {type(value).__name__}")
            return list(value)
        return value


def _plain_output(value: Any, vtype: ir.ValueType | None) -> Any:
    if isinstance(vtype, ir.StateType):
        vtype = vtype.wrapped
    dtype = vtype.dtype if isinstance(vtype, ir.TensorType) and vtype.dtype != "string" else None
    if isinstance(value, StateValue):
        value = value.value
    if isinstance(value, torch.Tensor):
        return to_numpy(value, dtype)
    return value
