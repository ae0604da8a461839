"""Programs from models converted by coremltools: protobuf IR → MIL text → IR is the identity."""

from __future__ import annotations

import pytest

from fixtures_coreml import ML_PROGRAM_FIXTURES
from tensorlogic.mil.from_text import parse_mil
from tensorlogic.mil.to_text import write_mil


def _program(path):
    ct = pytest.importorskip("coremltools")
    from tensorlogic.mil.from_proto import program_from_proto

    spec = ct.utils.load_spec(str(path))
    program, _ = program_from_proto(spec.mlProgram, path=str(path))
    return program


# Every ML Program fixture (session-scoped, shared with the format tests): about 0.5 s each.
@pytest.mark.parametrize("name", ML_PROGRAM_FIXTURES)
def test_converted_model_round_trips(coreml_model, name):
    program = _program(coreml_model(name))
    text = write_mil(program)
    assert parse_mil(text, path=f"{name}.mil") == program
    if name == "stateful":
        assert "state<tensor<fp16" in text
    if name == "multifunction":
        assert len(program.functions) > 1


def test_blob_references_survive_with_the_loader(coreml_model):
    program = _program(coreml_model("conv_fp16"))
    blobs = [v for op in program.walk() for v in op.attributes.values() if v.is_blob]
    assert blobs
    seen = []
    again = parse_mil(write_mil(program), loader=lambda ref, t: seen.append(ref) or ref)
    reparsed = [v for op in again.walk() for v in op.attributes.values() if v.is_blob]
    assert [v.data for v in reparsed] == [v.data for v in blobs]
    assert [v.numpy() for v in reparsed] == [v.data for v in blobs]
    assert seen == [v.data for v in blobs]
