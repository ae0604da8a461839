"""Format detection by content, and the one-line diagnoses of what users point us at by mistake."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import zipfile

import pytest

from tensorlogic.errors import FormatError
from tensorlogic.formats.detect import detect


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_safetensors_by_content(tmp_path):
    path = _write(tmp_path, "x.bin", struct.pack("<Q", 2) + b"{}")
    found = detect(path)
    assert (found.format, found.variant) == ("SafeTensors", "file")


@pytest.mark.parametrize("endian", ["<", ">"])
def test_gguf_by_content_either_endianness(tmp_path, endian):
    path = _write(tmp_path, "model.weights", b"GGUF" + struct.pack(endian + "I", 3) + b"\0" * 16)
    assert detect(path).format == "GGUF"


def test_gguf_split_part(tmp_path):
    path = _write(tmp_path, "llama-00001-of-00003.gguf", b"GGUF" + struct.pack("<I", 3) + b"\0" * 16)
    assert detect(path).variant == "split"


def test_gguf_unknown_version(tmp_path):
    path = _write(tmp_path, "m.gguf", b"GGUF" + struct.pack("<I", 9) + b"\0" * 16)
    with pytest.raises(FormatError, match=r"m.gguf at byte 4: GGUF version 9 is not supported"):
        detect(path)


def test_gguf_truncated_magic_only(tmp_path):
    path = _write(tmp_path, "m.gguf", b"GGUF\x03")
    with pytest.raises(FormatError, match=r"at byte 4: truncated GGUF file: 5 bytes"):
        detect(path)


def test_coreml_protobuf_by_content(tmp_path):
    from tensorlogic.formats.detect import _looks_like_coreml_proto

    # specificationVersion = 4 (field 1, varint), then description (field 2, length-delimited)
    head = b"\x08\x04\x12\x00"
    assert _looks_like_coreml_proto(head)
    path = _write(tmp_path, "weights.dat", head)
    assert (detect(path).format, detect(path).variant) == ("CoreML", "mlmodel")


def test_coreml_folders(tmp_path):
    pkg = tmp_path / "a.mlpackage"
    pkg.mkdir()
    (pkg / "Manifest.json").write_text("{}")
    assert detect(pkg).variant == "mlpackage"
    compiled = tmp_path / "b.mlmodelc"
    compiled.mkdir()
    (compiled / "model.mil").write_text("program(1.0)")
    assert detect(compiled).variant == "mlmodelc"
    # extension is only a hint: a folder named .mlmodelc with a Manifest is a package
    odd = tmp_path / "c.mlmodelc"
    odd.mkdir()
    (odd / "Manifest.json").write_text("{}")
    assert detect(odd).variant == "mlpackage"


def test_incomplete_mlpackage_folder(tmp_path):
    pkg = tmp_path / "a.mlpackage"
    pkg.mkdir()
    with pytest.raises(FormatError, match=r"a.mlpackage: Core ML package folder without Manifest.json"):
        detect(pkg)


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FormatError, match=r"directory is not a model: .* it holds: notes.txt"):
        detect(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(FormatError, match=r"nope.gguf: no such file or directory"):
        detect(tmp_path / "nope.gguf")


def test_empty_file(tmp_path):
    path = _write(tmp_path, "m.safetensors", b"")
    with pytest.raises(FormatError, match=r"m.safetensors: empty file \(named .safetensors as if SafeTensors\)"):
        detect(path)


def test_git_lfs_pointer(tmp_path):
    text = (
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 5368709120\n"
    )
    path = _write(tmp_path, "model.gguf", text.encode())
    with pytest.raises(FormatError, match=r"Git LFS pointer for a 5,368,709,120-byte file \(sha256 4d7a214614ab…\), "
                                          r"not the model itself: run `git lfs pull`"):
        detect(path)


def test_html_error_page(tmp_path):
    path = _write(tmp_path, "model.safetensors", b"\n<!DOCTYPE html><html><body>404</body></html>")
    with pytest.raises(FormatError, match=r"HTML page, not a model"):
        detect(path)


def test_pytorch_zip_checkpoint(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"x")
    with pytest.raises(FormatError, match=r"ZIP archive .* never unpickles"):
        detect(path)


def test_zipped_mlpackage(tmp_path):
    path = tmp_path / "model.mlpackage.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model.mlpackage/Manifest.json", b"{}")
    with pytest.raises(FormatError, match=r"ZIP archive of a Core ML package: unzip it"):
        detect(path)


def test_pickle_file(tmp_path):
    path = _write(tmp_path, "model.pt", pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(FormatError, match=r"Python pickle .* never unpickles"):
        detect(path)


def test_index_of_pickle_shards(tmp_path):
    path = _write(tmp_path, "pytorch_model.bin.index.json",
                  b'{"metadata": {}, "weight_map": {"w": "pytorch_model-00001-of-00002.bin"}}')
    with pytest.raises(FormatError, match=r"sharded checkpoint index whose shards are not SafeTensors "
                                          r"\(e.g. pytorch_model-00001-of-00002.bin\)"):
        detect(path)


def test_index_of_safetensors_shards_is_safetensors(tmp_path):
    path = _write(tmp_path, "model.safetensors.index.json", b'{"weight_map": {"w": "a.safetensors"}}')
    assert (detect(path).format, detect(path).variant) == ("SafeTensors", "sharded")


def test_config_json(tmp_path):
    path = _write(tmp_path, "config.json", b'{"hidden_size": 768}')
    with pytest.raises(FormatError, match=r"config.json: JSON file \(a config or tokenizer\?\), not a model"):
        detect(path)


def test_manifest_json_itself(tmp_path):
    path = _write(tmp_path, "Manifest.json", b'{"rootModelIdentifier": "x", "itemInfoEntries": {}}')
    with pytest.raises(FormatError, match=r"Core ML package manifest: load the .mlpackage folder"):
        detect(path)


def test_unknown_bytes(tmp_path):
    path = _write(tmp_path, "model.gguf", b"\x7fELF\x02\x01\x01\x00" + b"\0" * 64)
    with pytest.raises(FormatError, match=r"model.gguf at byte 0: unknown format \(named .gguf as if GGUF\): "
                                          r"first bytes 7f 45 4c 46 02 01 01 00"):
        detect(path)


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = _write(tmp_path, "model.gguf", b"<html>oops</html>")
    proc = subprocess.run([sys.executable, "-m", "tensorlogic", "inspect", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tl: error: ") and "HTML page" in lines[0]


def test_cli_traceback_with_tl_debug(tmp_path):
    path = _write(tmp_path, "model.gguf", b"<html>oops</html>")
    env = {"TL_DEBUG": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "tensorlogic", "inspect", str(path)], capture_output=True,
                          text=True, env=env)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "FormatError" in proc.stderr
