"""``tl generate`` and ``tl chat`` drive the same generation as the Python API."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tensorlogic.cli import main
from tensorlogic.llm import load_llm

from .fixtures import Shape, write_llm_gguf


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llm_gguf(tmp_path_factory.mktemp("cli") / "m.gguf", "llama", "Q4_0", Shape(n_layer=1))


def test_generate_prints_the_reply_and_speed(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["generate", str(model), "-p", "Hello world", "-n", "12", "--temperature", "0", "--device", "cpu"])
    out, err = capsys.readouterr()
    expected = load_llm(model, device="cpu").generate("Hello world", 12, temperature=0)
    assert rc == 0
    assert out == expected.text
    assert "tok/s" in err and f"generated {len(expected.tokens)} tokens" in err


def test_chat_session_with_reset(model: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi there\n/reset\nHi there\n/exit\n"))
    rc = main(["chat", str(model), "-n", "6", "--temperature", "0", "--device", "cpu"])
    out, err = capsys.readouterr()
    llm = load_llm(model, device="cpu")
    reply = llm.chat([{"role": "user", "content": "Hi there"}], 6, temperature=0).text
    assert rc == 0
    # After /reset the same question gets the same first reply.
    assert out.count(reply) == 2
    assert "[conversation cleared]" in err


def test_ctrl_c_stops_a_reply_without_leaving(model: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorlogic.llm import LLM

    real_stream = LLM.stream
    calls = {"n": 0}

    def interrupted(self: LLM, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        for i, piece in enumerate(real_stream(self, *args, **kwargs)):
            if calls["n"] == 1 and i == 2:
                raise KeyboardInterrupt
            yield piece

    monkeypatch.setattr(LLM, "stream", interrupted)
    monkeypatch.setattr("sys.stdin", io.StringIO("first\nsecond\n"))
    rc = main(["chat", str(model), "-n", "6", "--temperature", "0", "--device", "cpu"])
    _, err = capsys.readouterr()
    assert rc == 0 and calls["n"] == 2
    assert "interrupted" in err and "length" in err


def test_bad_model_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 8)
    rc = main(["generate", str(bad), "-p", "hi"])
    _, err = capsys.readouterr()
    assert rc == 2 and err.startswith("tl: error:") and err.count("\n") == 1
