"""env, input, save and load."""

from __future__ import annotations

import io
import json
import struct

import pytest
import torch

from lang.builtins.support import call, error
from tensorlogic.lang.values import Context


def ctx_for(tmp_path=None, stdin: str = "") -> Context:
    base = tmp_path if tmp_path is not None else Context().base_dir
    return Context(base_dir=base, device="cpu", out=io.StringIO(), err=io.StringIO(), inp=io.StringIO(stdin))


def test_env(monkeypatch):
    monkeypatch.setenv("TL_TEST_VALUE", "forty two")
    assert call("env", "TL_TEST_VALUE") == "forty two"
    monkeypatch.setenv("TL_TEST_EMPTY", "")
    assert call("env", "TL_TEST_EMPTY") == ""
    monkeypatch.delenv("TL_TEST_UNSET", raising=False)
    assert error("env", "TL_TEST_UNSET") == "environment variable 'TL_TEST_UNSET' is not set"
    assert error("env", 3) == "takes the variable's name as a string, got int"


def test_input_reads_lines_from_the_context():
    ctx = ctx_for(stdin="first line  \nsecond\n")
    assert call("input", "Name: ", ctx=ctx) == "first line"  # trailing whitespace removed
    assert call("input", ctx=ctx) == "second"
    assert call("input", ctx=ctx) == ""  # end of input
    assert ctx.out.getvalue() == "Name: "  # the prompt, without a newline
    assert error("input", 5, ctx=ctx) == "the prompt must be a string, got int"


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.int64])
def test_save_then_load(tmp_path, dtype):
    ctx = ctx_for(tmp_path)
    t = torch.arange(6).reshape(2, 3).to(dtype)
    assert call("save", t, "t.safetensors", ctx=ctx) is None
    # The file is plain SafeTensors: an 8-byte header length, a JSON header, then the raw bytes.
    raw = (tmp_path / "t.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert header["tensor"]["shape"] == [2, 3]
    assert list(tmp_path.iterdir()) == [tmp_path / "t.safetensors"]  # no temp file left behind
    back = call("load", "t.safetensors", ctx=ctx)
    assert back.dtype == dtype and torch.equal(back, t)
    # the lines the original prints
    assert ctx.out.getvalue() == (
        "Saved tensor to: t.safetensors\nLoaded tensor from: t.safetensors (shape: [2, 3])\n"
    )


def test_load_a_single_tensor_file_of_another_name(tmp_path):
    from tensorlogic.formats.safetensors import save_safetensors

    save_safetensors({"weights": torch.ones(2, dtype=torch.float16)}, tmp_path / "w.safetensors")
    assert call("load", "w.safetensors", ctx=ctx_for(tmp_path)).tolist() == [1.0, 1.0]


def test_load_errors(tmp_path):
    from tensorlogic.formats.safetensors import save_safetensors

    ctx = ctx_for(tmp_path)
    save_safetensors({"a": torch.ones(1), "b": torch.ones(1)}, tmp_path / "two.safetensors")
    assert error("load", "two.safetensors", ctx=ctx) == (
        f"{tmp_path / 'two.safetensors'} holds 2 tensors, not one; use load_model and get_tensor"
    )
    assert error("load", "missing.safetensors", ctx=ctx) == (
        f"cannot read {tmp_path / 'missing.safetensors'}: no such file or directory"
    )
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + struct.pack("<I", 3) + bytes(16))
    assert error("load", "m.gguf", ctx=ctx) == (
        f"{tmp_path / 'm.gguf'} is a GGUF file; load reads SafeTensors (use load_model)"
    )
    assert error("load", 5, ctx=ctx) == "expected a file path string, got int"


def test_save_errors(tmp_path):
    ctx = ctx_for(tmp_path)
    assert error("save", "text", "x.safetensors", ctx=ctx) == "the first argument must be a tensor, got string"
    target = tmp_path / "no" / "such" / "dir" / "x.safetensors"
    assert error("save", torch.ones(1), str(target), ctx=ctx).startswith(f"cannot write {target}: ")
