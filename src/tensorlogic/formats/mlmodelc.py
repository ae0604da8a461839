"""Compiled Core ML folders (``.mlmodelc``): ``model.mil`` text + ``weights/weight.bin`` + ``metadata.json``.

Apple's compiler writes ``metadata.json`` as a JSON list holding one dict (``inputSchema``,
``outputSchema``, ``stateSchema``, ``userDefinedMetadata``, ``author``, ``license``,
``shortDescription``, ``specificationVersion``, ``modelType``, ``mlProgramOperationTypeHistogram``
...; schema values are strings such as ``"shape": "[1, 3, 224, 224]"``). ``coremldata.bin`` is
Apple's binary description; we only note that it is there. A compiled NeuralNetwork (Espresso files,
no ``model.mil``) is out of scope.

``write_mlmodelc`` builds such a folder from an ``.mlpackage`` (text via ``write_mil``, weights copied,
metadata.json in Apple's shape), so tests and examples can exercise the compiled-model path anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import FormatError, InputError, UnsupportedError
from ..mil.ir import OPSET_OS, BlobLoader, Program, TensorType
from ..model import FeatureSpec

MAX_MIL_BYTES = 1 << 30
MAX_METADATA_BYTES = 64 << 20

# Schema dataType strings <-> MIL dtype names.
_DATA_TYPES = {"Float32": "fp32", "Float16": "fp16", "Double": "fp64", "Float64": "fp64", "Int32": "int32",
               "Int8": "int8", "Int64": "int64", "String": "string"}
_DATA_TYPE_NAMES = {"fp32": "Float32", "fp16": "Float16", "fp64": "Double", "int32": "Int32", "int8": "Int8"}
_KINDS = {"MultiArray": "multiArray", "Image": "image", "Int64": "int64", "Double": "double", "String": "string",
          "Dictionary": "dictionary", "Sequence": "sequence", "State": "state"}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}


def read_compiled(path: Path, loader: BlobLoader) -> tuple[Program, dict[str, Any] | None]:
    """Parse a compiled folder's ``model.mil`` (blobs bound to ``loader``) and its ``metadata.json``."""
    from ..mil.from_text import parse_mil

    mil = path / "model.mil"
    if not mil.is_file():
        if (path / "coremldata.bin").is_file():
            raise UnsupportedError(
                f"{path}: compiled Core ML model without model.mil (a NeuralNetwork compiled to Espresso "
                "files); TensorLogic reads compiled ML Programs only: load the .mlmodel or .mlpackage instead"
            )
        raise FormatError("compiled Core ML folder without model.mil", path)
    size = mil.stat().st_size
    if size > MAX_MIL_BYTES:
        raise FormatError(f"model.mil of {size:,} bytes is too large to be MIL text", mil)
    raw = mil.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError("model.mil is not UTF-8 text", mil, e.start) from None
    program = parse_mil(text, path=str(mil), loader=loader)
    return program, read_metadata_json(path / "metadata.json")


def read_metadata_json(path: Path) -> dict[str, Any] | None:
    """The single dict of a compiled model's ``metadata.json`` (None when the file is absent)."""
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise FormatError(f"metadata.json of {size:,} bytes is too large", path)
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as e:
        raise FormatError("metadata.json is not UTF-8 text", path, e.start) from None
    except json.JSONDecodeError as e:
        raise FormatError(f"metadata.json is not valid JSON: {e.msg}", path, e.pos) from None
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        return doc[0]
    if isinstance(doc, dict):
        return doc
    raise FormatError("metadata.json should hold a list with one object", path, 0)


def _json_list(text: Any) -> Any:
    if isinstance(text, (list, tuple)):
        return text
    try:
        return json.loads(str(text))
    except json.JSONDecodeError:
        return None


def _schema_feature(entry: dict[str, Any]) -> FeatureSpec:
    kind = _KINDS.get(str(entry.get("type", "")), str(entry.get("type", "unknown")))
    spec = FeatureSpec(
        name=str(entry.get("name", "")),
        kind=kind,
        dtype=_DATA_TYPES.get(str(entry.get("dataType", ""))),
        description=str(entry.get("shortDescription", "")),
        optional=str(entry.get("isOptional", "0")) == "1",
    )
    shape = _json_list(entry.get("shape")) if entry.get("shape") not in (None, "") else None
    if isinstance(shape, list) and shape:  # "[]": rank unknown (Core ML has no rank-0 multiArrays)
        spec.shape = tuple(int(d) for d in shape)
    if "shapeRange" in entry:
        ranges = _json_list(entry["shapeRange"])
        if isinstance(ranges, list):
            spec.flexibility = {"ranges": [[int(lo), int(hi)] for lo, hi in ranges]}
    elif "enumeratedShapes" in entry:
        shapes = _json_list(entry["enumeratedShapes"])
        if isinstance(shapes, list):
            spec.flexibility = {"enumerated": [[int(d) for d in s] for s in shapes]}
    if kind == "image":
        spec.image = {
            "colorspace": str(entry.get("colorspace", "RGB")),
            "width": int(entry.get("width", 0) or 0),
            "height": int(entry.get("height", 0) or 0),
        }
        for key in ("sizes", "width_range", "height_range"):
            if key in entry:
                spec.image[key] = _json_list(entry[key])
        spec.dtype = spec.dtype or ("fp16" if spec.image["colorspace"] == "GRAYSCALE_FLOAT16" else "uint8")
        channels = 3 if spec.image["colorspace"] in ("RGB", "BGR") else 1
        spec.shape = (1, channels, spec.image["height"], spec.image["width"])
    if kind == "int64":
        spec.dtype = "int64"
    elif kind == "double":
        spec.dtype = "fp64"
    elif kind == "string":
        spec.dtype = "string"
    elif kind == "dictionary":
        spec.extra["key_type"] = "int64" if str(entry.get("keyType", "")) == "Int64" else "string"
    return spec


def _program_features(program: Program, function_name: str | None, path: Path) -> tuple[list[FeatureSpec], ...]:
    """Inputs, outputs and states read off the IR when there is no metadata.json."""
    names = list(program.functions)
    want = function_name or ("main" if "main" in program.functions else names[0])
    if want not in program.functions:
        raise InputError(f"{path}: no function {want!r}; the model has {', '.join(names)}")
    fn = program.functions[want]
    types: dict[str, Any] = {v.name: v.type for v in fn.inputs}
    for op in fn.block.walk():
        for out in op.outputs:
            types[out.name] = out.type
    inputs, states = [], []
    for v in fn.inputs:
        t = v.type
        if isinstance(t, TensorType):
            inputs.append(FeatureSpec(v.name, "multiArray", t.dtype, None if t.shape is None else tuple(t.shape)))
        elif hasattr(t, "wrapped"):
            w = t.wrapped
            states.append(FeatureSpec(v.name, "state", w.dtype, None if w.shape is None else tuple(w.shape)))
    outputs = []
    for name in fn.block.outputs:
        t = types.get(name)
        if isinstance(t, TensorType):
            kind = "string" if t.dtype == "string" else "multiArray"
            outputs.append(FeatureSpec(name, kind, t.dtype, None if t.shape is None else tuple(t.shape)))
        else:
            outputs.append(FeatureSpec(name, "dictionary" if t.__class__.__name__ == "DictType" else "unknown"))
    return inputs, outputs, states


def compiled_features(compiled: dict[str, Any] | None, program: Program | None, function_name: str | None,
                      path: Path) -> tuple[list[FeatureSpec], ...]:
    """Inputs, outputs and states of a compiled model: from metadata.json, else from the program."""
    if compiled is not None:
        functions = compiled.get("functions")
        source = compiled
        if isinstance(functions, list) and functions:
            names = [str(f.get("name")) for f in functions if isinstance(f, dict)]
            want = function_name or compiled.get("defaultFunctionName") or names[0]
            if want not in names:
                raise InputError(f"{path}: no function {want!r}; the model has {', '.join(names)}")
            source = functions[names.index(want)]
        elif function_name not in (None, "main"):
            raise InputError(f"{path}: no function {function_name!r}; the model has a single function (main)")
        if "inputSchema" in source or "outputSchema" in source:
            return tuple(
                [_schema_feature(e) for e in source.get(key) or [] if isinstance(e, dict)]
                for key in ("inputSchema", "outputSchema", "stateSchema")
            )
    if program is None:
        return [], [], []
    return _program_features(program, function_name, path)


# --- writing -----------------------------------------------------------------------------------


def _schema_entry(f: FeatureSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f.name,
        "type": _KIND_NAMES.get(f.kind, f.kind),
        "isOptional": "1" if f.optional else "0",
        "shortDescription": f.description,
    }
    if f.kind in ("multiArray", "state"):
        entry["dataType"] = _DATA_TYPE_NAMES.get(f.dtype or "", f.dtype or "")
        dims = [int(d) for d in f.shape or () if isinstance(d, int)]
        entry["shape"] = json.dumps(dims)
        entry["formattedType"] = f"MultiArray ({entry['dataType']}{' ' if dims else ''}{' × '.join(map(str, dims))})"
        entry["hasShapeFlexibility"] = "1" if f.flexibility else "0"
        if f.flexibility and "ranges" in f.flexibility:
            entry["shapeRange"] = json.dumps(f.flexibility["ranges"])
            entry["shapeFlexibility"] = " × ".join(
                str(lo) if lo == hi else f"{lo}...{'' if hi < 0 else hi}" for lo, hi in f.flexibility["ranges"])
        elif f.flexibility and "enumerated" in f.flexibility:
            entry["enumeratedShapes"] = json.dumps(f.flexibility["enumerated"])
            entry["shapeFlexibility"] = " | ".join(" × ".join(map(str, s)) for s in f.flexibility["enumerated"])
    elif f.kind == "image" and f.image:
        im = f.image
        color = im.get("colorspace", "RGB")
        entry.update({"colorspace": color, "width": str(im.get("width", 0)), "height": str(im.get("height", 0)),
                      "isColor": "1" if color in ("RGB", "BGR") else "0",
                      "formattedType": f"Image ({'Color' if color in ('RGB', 'BGR') else 'Grayscale'} "
                                       f"{im.get('width', 0)} × {im.get('height', 0)})",
                      "hasSizeFlexibility": "1" if any(k in im for k in ("sizes", "width_range")) else "0"})
        for key in ("sizes", "width_range", "height_range"):
            if key in im:
                entry[key] = json.dumps(im[key])
    elif f.kind == "dictionary":
        entry["keyType"] = "Int64" if f.extra.get("key_type") == "int64" else "String"
        entry["formattedType"] = f"Dictionary ({entry['keyType']} → Double)"
    else:
        entry["formattedType"] = entry["type"]
    return entry


def _availability(spec_version: int | None) -> dict[str, str]:
    from .coreml import SPEC_VERSION_OS

    ios = SPEC_VERSION_OS.get(spec_version or 0, "")[3:]
    if not ios:
        return {}
    major = ios.split(".")[0]
    macos = {"11": "10.13", "12": "10.14", "13": "10.15", "14": "11.0", "15": "12.0", "16": "13.0", "17": "14.0",
             "18": "15.0", "26": "26.0"}.get(major, "")
    return {"iOS": ios if "." in ios else f"{ios}.0", "macOS": macos}


def compiled_metadata(cm: Any) -> dict[str, Any]:
    """The ``metadata.json`` dict for an opened ``.mlpackage``/``.mlmodel`` (Apple's field names)."""
    md = cm.metadata()
    program: Program = cm.program
    doc: dict[str, Any] = {
        "metadataOutputVersion": "3.0",
        "shortDescription": md.description,
        "author": md.author,
        "license": md.license,
        "version": md.version,
        "specificationVersion": md.spec_version,
        "isUpdatable": "1" if md.extra.get("isUpdatable") else "0",
        "availability": _availability(md.spec_version),
        "modelType": {"name": f"MLModelType_{cm.model_type}"},
        "computePrecision": {"FLOAT16": "Float16", "FLOAT32": "Float32"}.get(md.extra.get("compute_precision", ""),
                                                                            "Mixed"),
        "userDefinedMetadata": md.extra.get("userDefined", {}),
        "generatedClassName": (md.name or "model").replace("-", "_").replace(" ", "_"),
        "method": "predict",
        "inputSchema": [_schema_entry(f) for f in md.inputs],
        "outputSchema": [_schema_entry(f) for f in md.outputs],
    }
    if md.states:
        doc["stateSchema"] = [_schema_entry(f) for f in md.states]
    for key in ("classLabels", "predictedFeatureName", "predictedProbabilitiesName"):
        if key in md.extra:
            doc[key] = md.extra[key]
    if len(program.functions) > 1 or md.extra.get("default_function"):
        doc["defaultFunctionName"] = md.extra.get("default_function") or next(iter(program.functions))
        doc["functions"] = []
        for name in program.functions:
            ins, outs, sts = cm.feature_specs(name)
            doc["functions"].append({
                "name": name,
                "inputSchema": [_schema_entry(f) for f in ins],
                "outputSchema": [_schema_entry(f) for f in outs],
                "stateSchema": [_schema_entry(f) for f in sts],
            })
    hist: dict[str, int] = {}
    for fn in program.functions.values():
        prefix = OPSET_OS.get(fn.opset, fn.opset).replace("iOS", "Ios")
        for op in fn.block.walk():
            key = f"{prefix}.{op.type}"
            hist[key] = hist.get(key, 0) + 1
    doc["mlProgramOperationTypeHistogram"] = hist
    return doc


def write_mlmodelc(mlpackage_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Build an ``.mlmodelc``-style folder (model.mil, weights/, metadata.json) from an ML Program model."""
    from ..mil.to_text import write_mil
    from . import open_model_file
    from .coreml import CoreMLFile

    src = open_model_file(mlpackage_path)
    try:
        if not isinstance(src, CoreMLFile) or src.program is None:
            raise UnsupportedError(
                f"{mlpackage_path}: write_mlmodelc needs an ML Program Core ML model, "
                f"not {getattr(src, 'model_type', src.format)}"
            )
        out = Path(out_dir)
        if out.exists():
            raise FormatError("output folder already exists; refusing to overwrite it", out)
        tmp = out.with_name(out.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "weights").mkdir(parents=True)
        (tmp / "model.mil").write_text(write_mil(src.program), encoding="utf-8")
        if src.weights_dir.is_dir():
            for item in sorted(src.weights_dir.iterdir()):
                if item.is_file():
                    _link_or_copy(item, tmp / "weights" / item.name)
        doc = compiled_metadata(src)
        (tmp / "metadata.json").write_text(json.dumps([doc], indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, out)
        return out
    finally:
        src.close()


def _link_or_copy(src: Path, dst: Path) -> None:
    # A hard link shares the (possibly large) weight file; fall back to copying across file systems.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
