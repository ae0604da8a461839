"""Core ML models (``.mlmodel``, ``.mlpackage``, ``.mlmodelc``) as one ``CoreMLFile``: spec, MIL IR, weights.

The executor reads ``spec`` (the protobuf ``Model``, None for ``.mlmodelc``), ``program`` (the IR, None
for non-ML-Program models), ``weights_dir``, ``model_type`` and ``metadata()``. Metadata never imports
torch and reads no weight bytes; ``tensor_infos()`` reads only the 64-byte blob records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import FormatError, InputError, UnsupportedError
from ..mil.ir import SUB_BYTE_BITS, BlobRef, Op, Program, TensorType, Value
from ..model import FeatureSpec, Metadata, ModelFile, TensorInfo, dominant_type
from .detect import Detected
from .milblob import BlobFile
from .mlpackage import inside, open_package

MODEL_PATH_PREFIX = "@model_path/"
# A Core ML spec is at most a few MB once weights live in weight.bin; refuse absurd files before reading.
MAX_SPEC_BYTES = 2 << 30


class CoreMLFile(ModelFile):
    """An opened Core ML model. ``variant`` is ``mlmodel``, ``mlpackage`` or ``mlmodelc``."""

    format = "CoreML"

    def __init__(self, path: str | os.PathLike, variant: str):
        super().__init__(path)
        self.variant = variant
        self.spec: Any = None
        self.program: Program | None = None
        self.compiled: dict[str, Any] | None = None  # .mlmodelc's metadata.json entry, when present
        self._blobs: dict[Path, BlobFile] = {}
        self._consts: dict[str, _Const] | None = None
        self._types: dict[str, TensorType] | None = None
        if variant == "mlpackage":
            layout = open_package(self.path)
            self.model_file = layout.model
            self.model_dir = layout.model_dir
        elif variant == "mlmodelc":
            self.model_file = self.path / "model.mil"
            self.model_dir = self.path
        else:
            self.model_file = self.path
            self.model_dir = self.path.parent
        self.weights_dir = self.model_dir / "weights"
        if variant == "mlmodelc":
            from .mlmodelc import read_compiled

            self.program, self.compiled = read_compiled(self.path, self._load_blob)
            self.model_type = "mlProgram"
            blob_paths = {ref.path for ref in _blob_refs(self.program)}
        else:
            self.spec = parse_spec(self.model_file)
            self.model_type = self.spec.WhichOneof("Type") or "unknown"
            blob_paths = set()
            if self.model_type == "mlProgram":
                from ..mil.from_proto import program_from_proto

                self.program, blob_paths = program_from_proto(
                    self.spec.mlProgram, path=str(self.model_file), loader=self._load_blob
                )
        for ref in sorted(blob_paths):
            target = self.blob_path(ref)
            if not target.is_file():
                raise FormatError(f"weight file {ref} referenced by the ML Program is missing", target)

    # --- weights -----------------------------------------------------------------------------

    def blob_path(self, ref_path: str) -> Path:
        """The file a blob path (``@model_path/weights/weight.bin``) names, kept inside the model folder."""
        rel = ref_path[len(MODEL_PATH_PREFIX) :] if ref_path.startswith(MODEL_PATH_PREFIX) else ref_path
        return inside(self.model_dir, rel, "blob file", self.model_file, where="model folder")

    def blob_file(self, ref_path: str) -> BlobFile:
        target = self.blob_path(ref_path)
        blob = self._blobs.get(target)
        if blob is None:
            blob = self._blobs[target] = BlobFile(target)
        return blob

    def _load_blob(self, ref: BlobRef, ttype: TensorType) -> np.ndarray:
        shape = tuple(int(d) for d in ttype.shape) if ttype.is_static and ttype.shape is not None else None
        return self.blob_file(ref.path).read(ref.offset, ttype.dtype, shape)

    # --- tensors -----------------------------------------------------------------------------

    def _const_table(self) -> dict[str, _Const]:
        """Every numeric const and constexpr output, by name (``function:name`` where names clash)."""
        if self._consts is None:
            table: dict[str, _Const] = {}
            if self.program is not None:
                for fname, fn in self.program.functions.items():
                    for block in fn.blocks.values():
                        for op in block.walk():
                            for entry in _const_entries(fname, op):
                                name = entry.var
                                if name in table and not table[name].same(entry):
                                    name = f"{fname}:{name}"
                                table.setdefault(name, entry)
            self._consts = table
        return self._consts

    def tensor_infos(self) -> list[TensorInfo]:
        if self.program is None:
            if self.spec is not None:
                return [info for info, _ in nn_weights(self.spec)]
            return []
        infos = []
        for name, c in self._const_table().items():
            ttype = cast(TensorType, c.op.outputs[c.index].type)  # _const_entries keeps tensors only
            shape = _static(ttype)
            if c.value is None:
                # Compressed: the kind of compression, and the bytes its stored parameters take.
                stored = _literals(c.op)
                blobs = [v.data for v in stored if isinstance(v.data, BlobRef)]
                nbytes = sum(self._stored_bytes(v) for v in stored)
                first = self.blob_file(blobs[0].path).info(blobs[0].offset) if blobs else None
                kind = _constexpr_kind(c.op, self._var_types())
                infos.append(TensorInfo(name, shape, kind, nbytes, first.data_offset if first else None,
                                        str(self.blob_path(blobs[0].path)) if blobs else None))
            elif isinstance(c.value.data, BlobRef):
                blob = self.blob_file(c.value.data.path)
                info = blob.info(c.value.data.offset)
                infos.append(TensorInfo(name, shape, ttype.dtype, info.size, info.data_offset, str(blob.path)))
            else:
                infos.append(TensorInfo(name, shape, ttype.dtype, _nbytes(ttype.dtype, shape)))
        return infos

    def read_torch(self, name: str, device: Any = None, dtype: Any = None) -> Any:
        """The tensor as torch, in memory of its own (blob arrays are read-only views of the file)."""
        import torch

        arr = self.read_numpy(name)
        if not arr.flags.writeable:
            arr = arr.copy()
        return torch.from_numpy(arr).to(device or "cpu")

    def _var_types(self) -> dict[str, TensorType]:
        if self._types is None:
            self._types = {}
            if self.program is not None:
                for op in self.program.walk():
                    for out in op.outputs:
                        if isinstance(out.type, TensorType):
                            self._types[out.name] = out.type
        return self._types

    def _stored_bytes(self, v: Value) -> int:
        if isinstance(v.data, BlobRef):
            return self.blob_file(v.data.path).info(v.data.offset).size
        if isinstance(v.type, TensorType) and isinstance(v.data, np.ndarray):
            return _nbytes(v.type.dtype, _static(v.type))
        return 0

    def read_numpy(self, name: str) -> np.ndarray:
        if self.program is None:
            if self.spec is not None:
                return nn_weight_numpy(self.spec, name, self.path)
            raise FormatError(f"no tensor named {name!r}", self.path)
        c = self._const_table().get(name)
        if c is None:
            raise FormatError(f"no const named {name!r} in the ML Program", self.path)
        if c.value is not None:
            return np.asarray(c.value.numpy())
        from ..mil.constexpr import evaluate_constexpr

        def resolve(var: str) -> np.ndarray:
            # A clashing name from this function was stored as "function:var"; shared ones under "var".
            table = self._const_table()
            key = f"{c.function}:{var}" if f"{c.function}:{var}" in table else var
            if key not in table:
                raise FormatError(f"{c.op.type} -> {c.var}: input {var!r} is not a const", self.path)
            return self.read_numpy(key)

        return evaluate_constexpr(c.op, resolve)[c.index]

    # --- metadata ----------------------------------------------------------------------------

    def feature_specs(self, function_name: str | None = None) -> tuple[list[FeatureSpec], ...]:
        """Inputs, outputs and states of one function (the default one when ``function_name`` is None)."""
        if self.spec is not None:
            return spec_features(self.spec, function_name, self.path)
        from .mlmodelc import compiled_features

        return compiled_features(self.compiled, self.program, function_name, self.path)

    def metadata(self) -> Metadata:
        return build_metadata(self)

    def runner(self, device: str, compute_units: str, function_name: str | None) -> Any:
        from ..runtime.predictor import Predictor

        return Predictor(self, device=device, compute_units=compute_units, function_name=function_name)

    def close(self) -> None:
        for blob in self._blobs.values():
            blob.close()
        self._blobs.clear()


def open_coreml(found: Detected) -> CoreMLFile:
    """Open a detected Core ML model (spec and IR parsed, weights only mapped on demand)."""
    if found.variant not in ("mlmodel", "mlpackage", "mlmodelc"):
        raise UnsupportedError(f"{found.path}: unknown Core ML variant {found.variant!r}")
    return CoreMLFile(found.path, found.variant)


class _Const:
    """A const (``value`` set) or one output of a constexpr op (``value`` None), in ``function``."""

    __slots__ = ("function", "op", "index", "value")

    def __init__(self, function: str, op: Op, index: int, value: Value | None):
        self.function, self.op, self.index, self.value = function, op, index, value

    @property
    def var(self) -> str:
        return self.op.outputs[self.index].name

    def same(self, other: _Const) -> bool:
        """Equal content (multifunction models share weights between functions)."""
        if (self.value is None) != (other.value is None):
            return False
        if self.value is None or other.value is None:
            return self.op == other.op and self.index == other.index
        a, b = self.value, other.value
        if isinstance(a.data, BlobRef) or isinstance(b.data, BlobRef):
            return a.type == b.type and a.data == b.data
        return a == b


def _const_entries(function: str, op: Op) -> list[_Const]:
    if op.type == "const":
        val = op.attributes.get("val")
        if (val is None or not isinstance(val.type, TensorType) or val.type.dtype == "string"
                or not op.outputs or not isinstance(op.outputs[0].type, TensorType)):
            return []
        return [_Const(function, op, 0, val)]
    if op.type.startswith("constexpr_"):
        return [_Const(function, op, i, None) for i, o in enumerate(op.outputs) if isinstance(o.type, TensorType)]
    return []


def _literals(op: Op) -> list[Value]:
    vals = [v for k, v in op.attributes.items() if k != "name"]
    vals += [a for args in op.inputs.values() for a in args if isinstance(a, Value)]
    return vals


def _static(ttype: TensorType) -> tuple[int, ...]:
    if ttype.shape is None:
        return ()
    return tuple(d if isinstance(d, int) else -1 for d in ttype.shape)


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= max(d, 0)
    bits = SUB_BYTE_BITS.get(dtype)
    if bits is not None:
        return (n * bits + 7) // 8
    if dtype == "string":
        return 0
    return n * DTYPE_BYTES.get(dtype, 4)


def _blob_refs(program: Program) -> list[BlobRef]:
    refs = []
    for op in program.walk():
        for v in op.attributes.values():
            if isinstance(v.data, BlobRef):
                refs.append(v.data)
        for args in op.inputs.values():
            for a in args:
                if isinstance(a, Value) and isinstance(a.data, BlobRef):
                    refs.append(a.data)
    return refs


# --- the protobuf spec -----------------------------------------------------------------------

# Core ML specification version -> the first OS release that reads it.
SPEC_VERSION_OS = {
    1: "iOS11", 2: "iOS11.2", 3: "iOS12", 4: "iOS13", 5: "iOS14", 6: "iOS15", 7: "iOS16", 8: "iOS17",
    9: "iOS18", 10: "iOS26",
}

# Every member of Model's ``Type`` oneof, with what it is.
MODEL_TYPES = {
    "pipelineClassifier": "pipeline ending in a classifier",
    "pipelineRegressor": "pipeline ending in a regressor",
    "pipeline": "pipeline of models",
    "glmRegressor": "generalized linear regressor",
    "supportVectorRegressor": "support vector regressor",
    "treeEnsembleRegressor": "tree ensemble regressor",
    "neuralNetworkRegressor": "neural network regressor",
    "bayesianProbitRegressor": "Bayesian probit regressor",
    "glmClassifier": "generalized linear classifier",
    "supportVectorClassifier": "support vector classifier",
    "treeEnsembleClassifier": "tree ensemble classifier",
    "neuralNetworkClassifier": "neural network classifier",
    "kNearestNeighborsClassifier": "k-nearest-neighbors classifier",
    "neuralNetwork": "neural network (layer graph)",
    "itemSimilarityRecommender": "item similarity recommender",
    "mlProgram": "ML Program (MIL)",
    "customModel": "custom model (app-provided class)",
    "linkedModel": "linked model (loads another compiled model)",
    "classConfidenceThresholding": "class confidence thresholding",
    "oneHotEncoder": "one-hot encoder",
    "imputer": "imputer",
    "featureVectorizer": "feature vectorizer",
    "dictVectorizer": "dictionary vectorizer",
    "scaler": "scaler",
    "categoricalMapping": "categorical mapping",
    "normalizer": "normalizer",
    "arrayFeatureExtractor": "array feature extractor",
    "nonMaximumSuppression": "non-maximum suppression",
    "identity": "identity",
    "textClassifier": "text classifier (Apple NL model)",
    "wordTagger": "word tagger (Apple NL model)",
    "visionFeaturePrint": "Vision feature print (Apple model)",
    "soundAnalysisPreprocessing": "sound analysis preprocessing (Apple model)",
    "gazetteer": "gazetteer (Apple NL model)",
    "wordEmbedding": "word embedding (Apple NL model)",
    "audioFeaturePrint": "audio feature print (Apple model)",
    "serializedModel": "serialized model (opaque bytes)",
}

# ArrayFeatureType.ArrayDataType -> MIL dtype names.
ARRAY_DTYPES = {65568: "fp32", 65600: "fp64", 131104: "int32", 131080: "int8", 65552: "fp16"}
COLOR_SPACES = {10: "GRAYSCALE", 20: "RGB", 30: "BGR", 40: "GRAYSCALE_FLOAT16"}
DTYPE_BYTES = {
    "fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8, "fp8e4m3fn": 1, "fp8e5m2": 1, "int8": 1, "uint8": 1,
    "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "int64": 8, "uint64": 8, "bool": 1,
}


def parse_spec(path: Path) -> Any:
    """Parse a ``.mlmodel`` protobuf; damage is a FormatError naming the first bad byte where it can."""
    from google.protobuf.message import DecodeError

    from . import _proto

    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise FormatError(f"Core ML spec of {size:,} bytes is larger than any real model spec", path)
    data = path.read_bytes()
    Model = _proto.Model_pb2.Model
    try:
        spec = Model.FromString(data)
    except (DecodeError, RuntimeError, ValueError):  # upb and the pure-Python parser differ in what they raise
        offset, why = _wire_error(data, Model.DESCRIPTOR)
        raise FormatError(f"damaged Core ML protobuf: {why}", path, offset) from None
    if spec.specificationVersion <= 0 or spec.WhichOneof("Type") is None:
        raise FormatError(
            f"not a Core ML model: specificationVersion {spec.specificationVersion}, no model type", path, 0
        )
    return spec


def _varint_at(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < end and shift < 64:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    return None


def _wire_error(data: bytes, descriptor: Any) -> tuple[int | None, str]:
    """Walk the protobuf wire format along the schema to find where it breaks: (offset, reason)."""
    stack = [(0, len(data), descriptor, 0)]
    while stack:
        pos, end, desc, depth = stack.pop()
        while pos < end:
            start = pos
            tag = _varint_at(data, pos, end)
            if tag is None:
                return start, "truncated field tag"
            key, pos = tag
            number, wire = key >> 3, key & 7
            if number == 0:
                return start, "field number 0"
            field = desc.fields_by_number.get(number) if desc is not None else None
            if wire == 0:
                got = _varint_at(data, pos, end)
                if got is None:
                    return start, f"truncated varint in field {number}"
                pos = got[1]
            elif wire == 1 or wire == 5:
                pos += 8 if wire == 1 else 4
                if pos > end:
                    return start, f"truncated fixed-size field {number}"
            elif wire == 2:
                got = _varint_at(data, pos, end)
                if got is None or got[1] + got[0] > end:
                    return start, f"field {number} claims more bytes than remain"
                length, pos = got
                if field is not None and field.message_type is not None and depth < 100:
                    stack.append((pos, pos + length, field.message_type, depth + 1))
                elif field is not None and field.type == field.TYPE_STRING:
                    try:
                        data[pos : pos + length].decode("utf-8")
                    except UnicodeDecodeError:
                        return start, f"string field {field.name!r} is not UTF-8"
                pos += length
            else:
                return start, f"unsupported wire type {wire} in field {number}"
    return None, "the protobuf library rejected it"


def _shape_flexibility(arr: Any) -> dict[str, Any] | None:
    kind = arr.WhichOneof("ShapeFlexibility")
    if kind == "enumeratedShapes":
        return {"enumerated": [list(s.shape) for s in arr.enumeratedShapes.shapes]}
    if kind == "shapeRange":
        return {"ranges": [[int(r.lowerBound), int(r.upperBound)] for r in arr.shapeRange.sizeRanges]}
    return None


def _image_info(img: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "colorspace": COLOR_SPACES.get(img.colorSpace, "INVALID"),
        "width": int(img.width),
        "height": int(img.height),
    }
    kind = img.WhichOneof("SizeFlexibility")
    if kind == "enumeratedSizes":
        info["sizes"] = [[int(s.width), int(s.height)] for s in img.enumeratedSizes.sizes]
    elif kind == "imageSizeRange":
        r = img.imageSizeRange
        info["width_range"] = [int(r.widthRange.lowerBound), int(r.widthRange.upperBound)]
        info["height_range"] = [int(r.heightRange.lowerBound), int(r.heightRange.upperBound)]
    return info


def feature_spec(fd: Any) -> FeatureSpec:
    """A FeatureSpec from a protobuf ``FeatureDescription``."""
    ft = fd.type
    kind = ft.WhichOneof("Type")
    spec = FeatureSpec(name=fd.name, kind=kind or "unknown", description=fd.shortDescription,
                       optional=bool(ft.isOptional))
    if kind == "multiArrayType" or kind == "stateType":
        arr = ft.multiArrayType if kind == "multiArrayType" else ft.stateType.arrayType
        spec.kind = "state" if kind == "stateType" else "multiArray"
        spec.dtype = ARRAY_DTYPES.get(arr.dataType, "unknown")
        spec.shape = tuple(int(d) for d in arr.shape) if len(arr.shape) else None
        spec.flexibility = _shape_flexibility(arr)
        default = arr.WhichOneof("defaultOptionalValue")
        if default:
            spec.extra["default"] = getattr(arr, default)
    elif kind == "imageType":
        spec.kind = "image"
        spec.image = _image_info(ft.imageType)
        spec.dtype = "fp16" if ft.imageType.colorSpace == 40 else "uint8"
        channels = 3 if spec.image["colorspace"] in ("RGB", "BGR") else 1
        spec.shape = (1, channels, spec.image["height"], spec.image["width"])
    elif kind == "int64Type":
        spec.kind, spec.dtype = "int64", "int64"
    elif kind == "doubleType":
        spec.kind, spec.dtype = "double", "fp64"
    elif kind == "stringType":
        spec.kind, spec.dtype = "string", "string"
    elif kind == "dictionaryType":
        spec.kind = "dictionary"
        key = ft.dictionaryType.WhichOneof("KeyType")
        spec.extra["key_type"] = "int64" if key == "int64KeyType" else "string"
    elif kind == "sequenceType":
        spec.kind = "sequence"
        seq = ft.sequenceType
        spec.extra["element_type"] = "int64" if seq.WhichOneof("Type") == "int64Type" else "string"
        if seq.HasField("sizeRange"):
            spec.extra["size_range"] = [int(seq.sizeRange.lowerBound), int(seq.sizeRange.upperBound)]
    return spec


def spec_features(spec: Any, function_name: str | None, path: Path) -> tuple[list[FeatureSpec], ...]:
    """Inputs, outputs and states of ``function_name`` (default function, or the only one)."""
    desc = spec.description
    if len(desc.functions):
        names = [f.name for f in desc.functions]
        want = function_name or desc.defaultFunctionName or names[0]
        if want not in names:
            raise InputError(f"{path}: no function {want!r}; the model has {', '.join(names)}")
        src = desc.functions[names.index(want)]
    else:
        if function_name not in (None, "main"):
            raise InputError(f"{path}: no function {function_name!r}; the model has a single function (main)")
        src = desc
    return (
        [feature_spec(x) for x in src.input],
        [feature_spec(x) for x in src.output],
        [feature_spec(x) for x in src.state],
    )


# --- weights of NeuralNetwork specs -----------------------------------------------------------

_NN_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")


def _nn_layers(spec: Any) -> list[Any]:
    kind = spec.WhichOneof("Type")
    if kind in _NN_TYPES:
        return list(getattr(spec, kind).layers)
    if kind in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
        pipe = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        return [layer for model in pipe.models for layer in _nn_layers(model)]
    return []


def _is_repeated(field: Any) -> bool:
    # protobuf 6+ dropped FieldDescriptor.label for is_repeated; older versions only have label.
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _weight_params(msg: Any, prefix: str, out: list[tuple[str, Any, Any]], layer: Any) -> None:
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        repeated = _is_repeated(field)
        items = value if repeated else [value]
        for i, item in enumerate(items):
            name = f"{prefix}.{field.name}" + (f".{i}" if repeated else "")
            if field.message_type.name == "WeightParams":
                out.append((name, item, layer))
            elif field.message_type.name == "NeuralNetworkLayer":
                _weight_params(item, item.name, out, item)
            else:
                _weight_params(item, name, out, layer)


def _nn_weight_kind(w: Any) -> tuple[str, str, int]:
    """(quantization kind, stored dtype, element count) of a WeightParams."""
    if len(w.floatValue):
        return "F32", "fp32", len(w.floatValue)
    if w.float16Value:
        return "F16", "fp16", len(w.float16Value) // 2
    if w.HasField("quantization"):
        q = w.quantization
        nbits = int(q.numberOfBits) or 8
        raw = w.int8RawValue or w.rawValue
        count = len(raw) * 8 // nbits
        if q.WhichOneof("QuantizationType") == "lookupTableQuantization":
            return f"PALETTIZED_{nbits}BIT", f"uint{nbits}", count
        return ("INT8" if nbits == 8 else f"INT{nbits}"), ("int8" if w.int8RawValue else f"uint{nbits}"), count
    if w.int8RawValue:
        return "INT8", "int8", len(w.int8RawValue)
    if w.rawValue:
        return "RAW", "uint8", len(w.rawValue)
    return "EMPTY", "fp32", 0


def _nn_shape_hint(name: str, layer: Any) -> tuple[int, ...] | None:
    """The shape a layer's parameters imply for one of its weights (None when unknown)."""
    kind = layer.WhichOneof("layer") if layer is not None else None
    field = name.rsplit(".", 1)[-1]
    params = getattr(layer, kind) if kind else None
    if kind == "convolution":
        c = params
        groups = int(c.nGroups) or 1
        kernel = tuple(int(k) for k in c.kernelSize)
        if field == "bias":
            return (int(c.outputChannels),)
        if c.isDeconvolution:
            return (int(c.kernelChannels), int(c.outputChannels) // groups, *kernel)
        return (int(c.outputChannels), int(c.kernelChannels), *kernel)
    if kind in ("innerProduct", "embedding"):
        inputs = int(params.inputChannels if kind == "innerProduct" else params.inputDim)
        return (int(params.outputChannels),) if field == "bias" else (int(params.outputChannels), inputs)
    if kind == "batchnorm":
        return (int(params.channels),)
    if kind in ("loadConstant", "loadConstantND"):
        return tuple(int(d) for d in params.shape)
    if kind == "scale":
        return tuple(int(d) for d in (params.shapeScale if field == "scale" else params.shapeBias))
    if kind == "bias":
        return tuple(int(d) for d in params.shape)
    return None


def nn_weights(spec: Any) -> list[tuple[TensorInfo, Any]]:
    """TensorInfos of every WeightParams in a NeuralNetwork spec (layers, nested networks, pipelines)."""
    found: list[tuple[str, Any, Any]] = []
    for layer in _nn_layers(spec):
        _weight_params(layer, layer.name, found, layer)
    out = []
    for name, w, layer in found:
        _, dtype, capacity = _nn_weight_kind(w)
        if capacity == 0:
            continue
        # Stored data may be padded (fp16 and packed sub-byte codes); the layer says the true size.
        hint = _nn_shape_hint(name, layer)
        shape = hint if hint and 0 < int(np.prod(hint)) <= capacity else (capacity,)
        out.append((TensorInfo(name, shape, dtype, w.ByteSize()), w))
    return out


def nn_weight_numpy(spec: Any, name: str, path: Path | None = None) -> np.ndarray:
    """One NeuralNetwork weight as numpy, dequantized to float32 when stored quantized."""
    for info, w in nn_weights(spec):
        if info.name != name:
            continue
        count = info.numel
        if len(w.floatValue):
            return np.asarray(w.floatValue, np.float32)[:count].reshape(info.shape)
        if w.float16Value:
            return np.frombuffer(w.float16Value, "<f2")[:count].astype(np.float16).reshape(info.shape)
        raw = np.frombuffer(w.int8RawValue or w.rawValue, np.uint8)
        if not w.HasField("quantization"):
            return (raw.view(np.int8) if w.int8RawValue else raw)[:count].reshape(info.shape).copy()
        q = w.quantization
        nbits = int(q.numberOfBits) or 8
        if w.int8RawValue:
            codes = raw.view(np.int8).astype(np.float32)[:count]
        elif nbits == 8:
            codes = raw.astype(np.float32)[:count]
        else:
            # NeuralNetwork specs pack sub-byte codes most significant bit first.
            bits = np.unpackbits(raw)[: count * nbits].reshape(count, nbits)
            weights = np.left_shift(1, np.arange(nbits - 1, -1, -1)).astype(np.float32)
            codes = bits.astype(np.float32) @ weights
        if q.WhichOneof("QuantizationType") == "lookupTableQuantization":
            lut = np.asarray(q.lookupTableQuantization.floatValue, np.float32)
            if codes.size and int(codes.max()) >= lut.size:
                raise FormatError(f"weight {name!r}: palette index past the {lut.size}-entry table", path)
            return lut[codes.astype(np.int64)].reshape(info.shape)
        lin = q.linearQuantization
        scale = np.asarray(lin.scale, np.float32)
        bias = np.asarray(lin.bias, np.float32) if len(lin.bias) else np.zeros(1, np.float32)
        rows = scale.size if scale.size > 1 else 1
        if count % rows:
            raise FormatError(f"weight {name!r}: {scale.size} scales do not divide {count} elements", path)
        per_row = codes.reshape(rows, -1)
        return (per_row * scale.reshape(-1, 1) + bias.reshape(-1, 1)).reshape(info.shape)
    raise FormatError(f"no weight named {name!r} in the NeuralNetwork spec", path)


# --- metadata ----------------------------------------------------------------------------------


def _constexpr_kind(op: Op, types_of: dict[str, TensorType]) -> str:
    """The quantization kind a constexpr op's stored data implies."""

    def arg_type(name: str) -> TensorType | None:
        args = op.inputs.get(name)
        arg: Any = args[0] if args else op.attributes.get(name)
        if isinstance(arg, Value):
            return arg.type if isinstance(arg.type, TensorType) else None
        return types_of.get(arg) if isinstance(arg, str) else None

    t = op.type
    if t.startswith("constexpr_lut_to_"):
        idx = arg_type("indices") or arg_type("indices_nonzero_data")
        lut = arg_type("lut")
        if lut is not None and lut.shape is not None and len(lut.shape) == 1 and isinstance(lut.shape[0], int):
            # iOS16 form: indices are packed bytes and the palette size gives the bit width.
            bits = max(1, int(np.log2(max(lut.shape[0], 2))))
        else:
            bits = SUB_BYTE_BITS.get(idx.dtype, 8) if idx is not None else 8
        return f"PALETTIZED_{bits}BIT"
    if "shift_scale" in t or t == "constexpr_affine_dequantize":
        src = arg_type("quantized_data") or arg_type("data") or arg_type("nonzero_data")
        dtype = src.dtype if src is not None else ""
        if dtype in ("int4", "uint4"):
            return "INT4"
        if dtype in ("fp8e4m3fn", "fp8e5m2"):
            return "FP8"
        return "INT8"
    if "sparse" in t:
        return "SPARSE"
    if t == "constexpr_cast":
        return "F16"
    return "UNKNOWN"


_FLOAT_KINDS = {"fp16": "F16", "fp32": "F32", "bf16": "BF16", "fp64": "F64",
                "int8": "INT8", "uint8": "INT8", "int4": "INT4", "uint4": "INT4",
                "fp8e4m3fn": "FP8", "fp8e5m2": "FP8"}


def _weight_summary(program: Program) -> tuple[dict[str, int], int, str]:
    """(elements per quantization kind, parameter count, compute precision) of an ML Program."""
    types_of: dict[str, TensorType] = {}
    consumed: set[str] = set()
    weights: list[Op] = []
    compute: set[str] = set()
    for op in program.walk():
        for out in op.outputs:
            if isinstance(out.type, TensorType):
                types_of[out.name] = out.type
        if op.type == "const" or op.type.startswith("constexpr_"):
            weights.append(op)
            if op.type != "const":
                consumed.update(a for args in op.inputs.values() for a in args if isinstance(a, str))
        else:
            compute.update(
                o.type.dtype for o in op.outputs
                if isinstance(o.type, TensorType) and o.type.dtype in ("fp16", "fp32", "bf16")
            )
    counts: dict[str, int] = {}
    for op in weights:
        # Data feeding a constexpr op (or another one, in joint compression) counts once, at the outermost op.
        if any(o.name in consumed for o in op.outputs):
            continue
        outs = [o.type for o in op.outputs if isinstance(o.type, TensorType)]
        if op.type == "const":
            kind = _FLOAT_KINDS.get(outs[0].dtype) if outs else None
        else:
            kind = _constexpr_kind(op, types_of)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + sum(_numel(t) for t in outs)
    if len(compute) == 1:
        precision = {"fp16": "FLOAT16", "fp32": "FLOAT32", "bf16": "BFLOAT16"}[compute.pop()]
    else:
        precision = "MIXED" if compute else "UNKNOWN"
    return counts, sum(counts.values()), precision


def _numel(t: TensorType) -> int:
    if t.shape is None:
        return 0
    n = 1
    for d in t.shape:
        if not isinstance(d, int):
            return 0
        n *= d
    return n


def _py(value: Value) -> Any:
    """A literal as plain Python (for metadata)."""
    data = value.data
    if isinstance(data, dict):
        return {_py(k): _py(v) for k, v in data.items()}
    if isinstance(data, tuple):
        return [_py(v) for v in data]
    if isinstance(data, np.ndarray):
        return data.tolist()
    if isinstance(data, BlobRef):
        return f"{data.path}@{data.offset}"
    return data


def _class_labels(spec: Any, program: Program | None, function: str | None) -> list[Any] | None:
    if spec is not None:
        kind = spec.WhichOneof("Type")
        model = getattr(spec, kind) if kind else None
        if kind == "pipelineClassifier":
            # The labels live in the classifier inside, usually the last model.
            for sub in reversed(spec.pipelineClassifier.pipeline.models):
                labels = _class_labels(sub, None, None)
                if labels is not None:
                    return labels
            return None
        if model is not None and "ClassLabels" in model.DESCRIPTOR.oneofs_by_name:
            which = model.WhichOneof("ClassLabels")
            if which:
                return list(getattr(model, which).vector)
    if program is not None and program.functions:
        fn = program.functions.get(function or "") or next(iter(program.functions.values()))
        for op in fn.block.walk():
            if op.type == "classify":
                classes = op.inputs.get("classes", ())
                if classes and isinstance(classes[0], Value):
                    labels = _py(classes[0])
                    return labels if isinstance(labels, list) else [labels]
    return None


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def build_metadata(cm: CoreMLFile) -> Metadata:
    """Everything ``tl inspect`` shows, from the spec (or compiled metadata) and the IR; no weight bytes."""
    spec, program = cm.spec, cm.program
    inputs, outputs, states = cm.feature_specs(None)
    md = Metadata(format="CoreML", name=cm.path.name.rsplit(".", 1)[0] or cm.path.name,
                  inputs=inputs, outputs=outputs, states=states, model_type=cm.model_type,
                  file_size=_folder_size(cm.path))
    extra: dict[str, Any] = {"variant": cm.variant, "model_type_description": MODEL_TYPES.get(cm.model_type, "")}
    default_fn: str | None = None
    if spec is not None:
        desc = spec.description
        md.spec_version = int(spec.specificationVersion)
        m = desc.metadata
        md.description, md.author, md.license, md.version = (
            m.shortDescription, m.author, m.license, m.versionString)
        extra["userDefined"] = dict(m.userDefined)
        default_fn = desc.defaultFunctionName or None
        if desc.predictedFeatureName:
            extra["predictedFeatureName"] = desc.predictedFeatureName
        if desc.predictedProbabilitiesName:
            extra["predictedProbabilitiesName"] = desc.predictedProbabilitiesName
        if spec.isUpdatable:
            extra["isUpdatable"] = True
        if cm.model_type in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
            pipe = spec.pipeline if cm.model_type == "pipeline" else getattr(spec, cm.model_type).pipeline
            extra["pipeline_models"] = [sub.WhichOneof("Type") for sub in pipe.models]
    elif cm.compiled is not None:
        c = cm.compiled
        version = str(c.get("specificationVersion", ""))
        md.spec_version = int(version) if version.isdigit() else None
        md.description = str(c.get("shortDescription", ""))
        md.author, md.license = str(c.get("author", "")), str(c.get("license", ""))
        md.version = str(c.get("version", ""))
        extra["userDefined"] = dict(c.get("userDefinedMetadata") or {})
        for key in ("predictedFeatureName", "predictedProbabilitiesName", "classLabels"):
            if key in c:
                extra[key] = c[key]
        default_fn = c.get("defaultFunctionName") or None
        extra["compiled_metadata"] = True
    if cm.variant == "mlmodelc":
        extra["coremldata.bin"] = (cm.path / "coremldata.bin").is_file()
    md.min_os = SPEC_VERSION_OS.get(md.spec_version or 0)
    labels = extra.get("classLabels") or _class_labels(spec, program, default_fn)
    if labels is not None:
        extra["classLabels"] = labels
    if program is not None:
        fn = program.functions.get(default_fn or "") or program.functions.get("main") or next(
            iter(program.functions.values()), None)
        md.opset = fn.opset if fn is not None else None
        extra["functions"] = list(program.functions)
        if default_fn:
            extra["default_function"] = default_fn
        build = program.attributes.get("buildInfo")
        if build is not None:
            extra["buildInfo"] = _py(build)
        counts, params, precision = _weight_summary(program)
        extra["compute_precision"] = precision
        extra["weight_elements"] = counts
        md.parameter_count = params
        md.tensor_count = len(cm._const_table())
        md.quantization = dominant_type(counts)
        extra["op_histogram"] = program.op_histogram()
    elif spec is not None:
        counts = {}
        weights = nn_weights(spec)
        for info, w in weights:
            kind = _nn_weight_kind(w)[0]
            counts[kind] = counts.get(kind, 0) + info.numel
        md.quantization = dominant_type(counts)
        md.parameter_count = sum(counts.values())
        md.tensor_count = len(weights)
        if counts:
            extra["weight_elements"] = counts
        layers = _nn_layers(spec)
        if layers:
            hist: dict[str, int] = {}
            for layer in layers:
                kind = layer.WhichOneof("layer") or "unknown"
                hist[kind] = hist.get(kind, 0) + 1
            extra["layer_histogram"] = dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))
    md.extra = extra
    return md
