"""Damaged and hostile Core ML containers: each a one-line FormatError naming the file (and byte offset)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tensorlogic.errors import FormatError, UnsupportedError
from tensorlogic.formats import _proto, open_model_file
from tensorlogic.formats.mlpackage import open_package

SPEC = Path("Data/com.apple.CoreML/model.mlmodel")
WEIGHTS = Path("Data/com.apple.CoreML/weights/weight.bin")


@pytest.fixture
def package(coreml_model, tmp_path) -> Path:
    """A private copy of the conv_fp32 package that a test may damage."""
    dst = tmp_path / "model.mlpackage"
    shutil.copytree(coreml_model("conv_fp32"), dst)
    return dst


def _message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def _edit_manifest(package: Path, edit) -> Path:
    path = package / "Manifest.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


def _root_entry(doc) -> dict:
    return doc["itemInfoEntries"][doc["rootModelIdentifier"]]


def test_missing_manifest(package):
    (package / "Manifest.json").unlink()
    with pytest.raises(FormatError) as e:
        open_model_file(package)
    assert _message(e) == f"{package}: Core ML package folder without Manifest.json (incomplete copy?)"
    with pytest.raises(FormatError) as e:
        open_package(package)
    assert _message(e) == f"{package}: Core ML package without Manifest.json"


def test_manifest_not_json(package):
    (package / "Manifest.json").write_text('{"fileFormatVersion": "1.0.0",\n "itemInfoEntries": {')
    with pytest.raises(FormatError) as e:
        open_model_file(package)
    assert _message(e).startswith(f"{package / 'Manifest.json'} at byte 52: Manifest.json is not valid JSON")


def test_manifest_without_root(package):
    manifest = _edit_manifest(package, lambda d: d.update(rootModelIdentifier="nope"))
    with pytest.raises(FormatError) as e:
        open_model_file(package)
    assert _message(e) == f"{manifest}: rootModelIdentifier 'nope' is not among the manifest's items"


@pytest.mark.parametrize("bad", ["../../../../etc/passwd", "com.apple.CoreML/../../../x", "/etc/passwd",
                                 "C:\\Windows\\x"])
def test_manifest_path_traversal(package, bad):
    manifest = _edit_manifest(package, lambda d: _root_entry(d).update(path=bad))
    with pytest.raises(FormatError) as e:
        open_model_file(package)
    assert _message(e).startswith(f"{manifest}: manifest item ")
    assert f"path {bad!r} escapes the package folder; refusing to follow it" in _message(e)


def test_manifest_symlink_escaping(package, tmp_path):
    outside = tmp_path / "outside.mlmodel"
    shutil.copyfile(package / SPEC, outside)
    (package / SPEC).unlink()
    os.symlink(outside, package / SPEC)
    with pytest.raises(FormatError) as e:
        open_model_file(package)
    assert "path 'com.apple.CoreML/model.mlmodel' resolves outside the package folder (a symlink?)" in _message(e)


def test_manifest_points_to_missing_file(package):
    manifest = _edit_manifest(package, lambda d: _root_entry(d).update(path="com.apple.CoreML/gone.mlmodel"))
    with pytest.raises(FormatError) as e:
        open_model_file(package)
    assert _message(e) == (f"{manifest}: manifest's root model Data/com.apple.CoreML/gone.mlmodel is missing "
                           "(incomplete copy of the package?)")


def test_missing_weight_file(package):
    (package / WEIGHTS).unlink()
    with pytest.raises(FormatError) as e:
        open_model_file(package)
    assert _message(e) == (f"{package / WEIGHTS}: weight file @model_path/weights/weight.bin referenced by the "
                           "ML Program is missing")


def _first_blob(package: Path) -> tuple[str, int]:
    cm = open_model_file(package)
    info = next(i for i in cm.tensor_infos() if i.offset is not None)
    cm.close()
    return info.name, info.offset - 64  # the metadata record precedes the data


def test_blob_sentinel_wrong(package):
    name, meta = _first_blob(package)
    raw = bytearray((package / WEIGHTS).read_bytes())
    raw[meta: meta + 4] = b"\0\0\0\0"
    (package / WEIGHTS).write_bytes(bytes(raw))
    cm = open_model_file(package)  # weights are read lazily: opening and metadata still work
    assert cm.metadata().quantization == "F32"
    with pytest.raises(FormatError) as e:
        cm.read_numpy(name)
    assert _message(e) == (f"{package / WEIGHTS} at byte {meta}: bad blob metadata sentinel 0x00000000 "
                           "(expected 0xDEADBEEF): offset does not point at a blob, or the file is damaged")


def test_blob_past_end_of_file(package):
    name, meta = _first_blob(package)
    with open(package / WEIGHTS, "r+b") as f:
        f.truncate(meta + 64 + 16)
    cm = open_model_file(package)
    with pytest.raises(FormatError) as e:
        cm.read_numpy(name)
    assert _message(e).startswith(f"{package / WEIGHTS} at byte {meta + 16}: blob data (offset {meta + 64},")
    assert "runs past the end of the file" in _message(e)
    with open(package / WEIGHTS, "r+b") as f:
        f.truncate(meta + 10)
    cm = open_model_file(package)
    with pytest.raises(FormatError) as e:
        cm.tensor_infos()
    assert f"at byte {meta}: blob metadata offset {meta} is outside the file" in _message(e)


def test_unknown_blob_dtype(package):
    name, meta = _first_blob(package)
    raw = bytearray((package / WEIGHTS).read_bytes())
    raw[meta + 4: meta + 8] = (1234).to_bytes(4, "little")
    (package / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(FormatError) as e:
        open_model_file(package).read_numpy(name)
    assert _message(e) == f"{package / WEIGHTS} at byte {meta + 4}: unknown blob data type code 1234"


def _rewrite_spec(package: Path, edit) -> None:
    spec = _proto.Model_pb2.Model.FromString((package / SPEC).read_bytes())
    edit(spec)
    (package / SPEC).write_bytes(spec.SerializeToString())


def _blob_values(spec):
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                for value in op.attributes.values():
                    if value.WhichOneof("value") == "blobFileValue":
                        yield value


def test_blob_path_escaping_the_model_folder(package):
    _rewrite_spec(package, lambda s: setattr(next(_blob_values(s)).blobFileValue, "fileName",
                                             "@model_path/../../../../secret.bin"))
    with pytest.raises(FormatError) as e:
        open_model_file(package)
    assert _message(e) == (f"{package / SPEC}: blob file path '../../../../secret.bin' escapes the model folder;"
                           " refusing to follow it")


def test_blob_offset_not_a_blob(package):
    _rewrite_spec(package, lambda s: setattr(next(_blob_values(s)).blobFileValue, "offset", 10**9))
    cm = open_model_file(package)
    with pytest.raises(FormatError) as e:
        cm.tensor_infos()
    assert f"{package / WEIGHTS} at byte 1000000000: blob metadata offset 1000000000 is outside the file" in (
        _message(e))


def test_protobuf_garbage(tmp_path):
    bad = tmp_path / "bad.mlmodel"
    bad.write_bytes(b"\x08\x07\x12\xff\xff\xff\x0f" + bytes(range(40)))
    with pytest.raises(FormatError) as e:
        open_model_file(bad)
    assert _message(e) == f"{bad} at byte 2: damaged Core ML protobuf: field 2 claims more bytes than remain"

    noise = tmp_path / "noise.mlmodel"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(FormatError) as e:
        open_model_file(noise)
    assert "noise.mlmodel" in _message(e)


def test_truncated_mlmodel(package, tmp_path):
    data = (package / SPEC).read_bytes()
    cut = tmp_path / "cut.mlmodel"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError) as e:
        open_model_file(cut)
    text = _message(e)
    assert text.startswith(f"{cut} at byte ") and "damaged Core ML protobuf: " in text
    offset = int(text.split(" at byte ")[1].split(":")[0])
    assert 0 < offset < len(data) // 2


def test_string_field_not_utf8(tmp_path):
    # specificationVersion=7, description { metadata(100) { author(3) = b"\xff" } }
    meta = b"\x1a\x01\xff"
    desc = b"\xa2\x06" + bytes([len(meta)]) + meta
    path = tmp_path / "bad_utf8.mlmodel"
    path.write_bytes(b"\x08\x07\x12" + bytes([len(desc)]) + desc)
    with pytest.raises(FormatError) as e:
        open_model_file(path)
    assert _message(e) == f"{path} at byte 7: damaged Core ML protobuf: string field 'author' is not UTF-8"


def test_valid_protobuf_without_model_type(tmp_path):
    path = tmp_path / "empty.mlmodel"
    path.write_bytes(b"\x08\x05\x12\x00")
    with pytest.raises(FormatError) as e:
        open_model_file(path)
    assert _message(e) == f"{path} at byte 0: not a Core ML model: specificationVersion 5, no model type"


def test_neuralnetwork_mlmodelc_is_out_of_scope(tmp_path):
    folder = tmp_path / "net.mlmodelc"
    folder.mkdir()
    (folder / "coremldata.bin").write_bytes(b"\0" * 16)
    (folder / "model.espresso.net").write_text("{}")
    with pytest.raises(UnsupportedError) as e:
        open_model_file(folder)
    assert _message(e).startswith(f"{folder}: compiled Core ML model without model.mil (a NeuralNetwork compiled")


def test_mlmodelc_damaged_metadata_and_text(coreml_model, tmp_path):
    from tensorlogic.formats.mlmodelc import write_mlmodelc

    out = write_mlmodelc(coreml_model("conv_fp16"), tmp_path / "c.mlmodelc")
    (out / "metadata.json").write_text('[{"inputSchema": [}]')
    with pytest.raises(FormatError) as e:
        open_model_file(out)
    assert _message(e).startswith(f"{out / 'metadata.json'} at byte 18: metadata.json is not valid JSON")
    (out / "metadata.json").unlink()
    (out / "model.mil").write_bytes(b"program(1.3)\n\xff\xfe")
    with pytest.raises(FormatError) as e:
        open_model_file(out)
    assert _message(e) == f"{out / 'model.mil'} at byte 13: model.mil is not UTF-8 text"
    (out / "model.mil").write_text("program(1.3)\n{\n  func main<ios16>(tensor<fp16, [1]> x) {\n  } -> (y);\n}\n")
    with pytest.raises(FormatError) as e:
        open_model_file(out)
    assert "model.mil" in str(e.value) and "'y'" in str(e.value)


def test_write_mlmodelc_refuses_neuralnetwork(coreml_model, tmp_path):
    from tensorlogic.formats.mlmodelc import write_mlmodelc

    with pytest.raises(UnsupportedError, match="write_mlmodelc needs an ML Program Core ML model, not neuralNetwork"):
        write_mlmodelc(coreml_model("neuralnetwork"), tmp_path / "n.mlmodelc")
