"""The compiled path against the interpreter (the reference), on op programs and converted models.

Every case runs a program through ``Interpreter`` and through ``CompiledProgram`` on the same plan and
checks the outputs agree within the tolerance of the program's dtype; the fusion cases also check that
the pattern really fired (its fused primitive ran), so a test cannot pass by never leaving the
reference path. Converted models are checked against torch float64 too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TOLERANCES
from fixtures_coreml import random_batchnorm
from tensorlogic.errors import InputError, OpError
from tensorlogic.mil.from_text import parse_mil
from tensorlogic.runtime.compiled import CompiledProgram
from tensorlogic.runtime.interpreter import Interpreter, StateValue

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)


# --- MIL text programs -------------------------------------------------------------------------


def lit(a, dt: str = "fp32") -> str:
    """A MIL tensor literal."""
    a = np.asarray(a, dtype=np.float32)
    return f"tensor<{dt}, [{', '.join(map(str, a.shape))}]>({json.dumps(a.tolist())})"


def ints(*v: int) -> str:
    return f"tensor<int32, [{len(v)}]>([{', '.join(map(str, v))}])"


def rnd(*shape: int, scale: float = 0.3) -> np.ndarray:
    return RNG.standard_normal(shape) * scale


def conv(out: str, x: str, cin: int, cout: int, hw: int, k: int = 3, stride: int = 1, groups: int = 1,
         pad: str = "same", dt: str = "fp32", ohw: int | None = None) -> str:
    w, b = rnd(cout, cin // groups, k, k), rnd(cout, scale=0.1)
    ohw = ohw or hw // stride
    return (f"tensor<{dt}, [1, {cout}, {ohw}, {ohw}]> {out} = conv(x = {x}, weight = {lit(w, dt)}, "
            f"bias = {lit(b, dt)}, strides = {ints(stride, stride)}, pad_type = string(\"{pad}\"), "
            f"dilations = {ints(1, 1)}, groups = int32({groups}))[name = string(\"{out}\")];")


def program(inputs: str, body: list[str], outputs: str, opset: str = "ios17") -> str:
    lines = "\n        ".join(body)
    return f"program(1.3)\n{{\n    func main<{opset}>({inputs}) {{\n        {lines}\n    }} -> ({outputs});\n}}\n"


T = "tensor<fp32, [1, 4, 8, 8]>"
T16 = "tensor<fp16, [1, 4, 8, 8]>"

# name -> (MIL text, input shapes, fusion pass expected to fire on CPU, on CUDA)
CASES: dict[str, tuple[str, dict[str, tuple[int, ...]], str | None, str | None]] = {
    "conv_relu": (program("tensor<fp32, [1, 3, 8, 8]> x", [
        conv("c", "x", 3, 4, 8), f"{T} r = relu(x = c)[name = string(\"r\")];"], "r"),
        {"x": (1, 3, 8, 8)}, "conv_act", "conv_act"),
    "conv_add_relu": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8), f"{T} a = add(x = c, y = x)[name = string(\"a\")];",
        f"{T} r = relu(x = a)[name = string(\"r\")];"], "r"), {"x": (1, 4, 8, 8)}, "conv_add_act", "conv_add_act"),
    "two_convs_add_relu": (program(f"{T} x", [
        conv("c1", "x", 4, 4, 8, k=1), conv("c2", "x", 4, 4, 8),
        f"{T} a = add(x = c1, y = c2)[name = string(\"a\")];",
        f"{T} r = relu(x = a)[name = string(\"r\")];"], "r"), {"x": (1, 4, 8, 8)}, "conv_add_act", "conv_add_act"),
    "conv_add": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8, groups=4), f"{T} a = add(x = x, y = c)[name = string(\"a\")];"], "a"),
        {"x": (1, 4, 8, 8)}, "conv_add_act", None),
    "conv_clip_depthwise": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8, groups=4),
        f"{T} r = clip(x = c, alpha = fp32(0.0), beta = fp32(0.5))[name = string(\"r\")];"], "r"),
        {"x": (1, 4, 8, 8)}, "conv_act", None),
    "conv_sigmoid": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8, k=1), f"{T} r = sigmoid(x = c)[name = string(\"r\")];"], "r"),
        {"x": (1, 4, 8, 8)}, "conv_act", None),
    "conv_tanh": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8, k=1), f"{T} r = tanh(x = c)[name = string(\"r\")];"], "r"),
        {"x": (1, 4, 8, 8)}, "conv_act", None),
    "conv_relu6": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8), f"{T} r = relu6(x = c)[name = string(\"r\")];"], "r"),
        {"x": (1, 4, 8, 8)}, "conv_act", None),
    "conv_silu": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8), f"{T} r = silu(x = c)[name = string(\"r\")];"], "r"),
        {"x": (1, 4, 8, 8)}, "conv_act", None),
    "conv_leaky_relu": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8), f"{T} r = leaky_relu(x = c, alpha = fp32(0.1))[name = string(\"r\")];"], "r"),
        {"x": (1, 4, 8, 8)}, "conv_act", None),
    "conv_gelu": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8), f"{T} r = gelu(x = c, mode = string(\"EXACT\"))[name = string(\"r\")];"], "r"),
        {"x": (1, 4, 8, 8)}, "conv_act", None),
    "conv_alone": (program(f"{T} x", [conv("c", "x", 4, 4, 8, k=1)], "c"),
                   {"x": (1, 4, 8, 8)}, "conv_prepack", None),
    "conv_output_also_read": (program(f"{T} x", [
        conv("c", "x", 4, 4, 8), f"{T} r = relu(x = c)[name = string(\"r\")];"], "r, c"),
        {"x": (1, 4, 8, 8)}, "conv_prepack", None),
    "fp16_conv_add_relu": (program(f"{T16} x", [
        conv("c", "x", 4, 4, 8, dt="fp16"), f"{T16} a = add(x = c, y = x)[name = string(\"a\")];",
        f"{T16} r = relu(x = a)[name = string(\"r\")];"], "r"), {"x": (1, 4, 8, 8)}, "conv_add_act", "conv_add_act"),
    "linear_relu": (program("tensor<fp32, [2, 5, 8]> x", [
        f"tensor<fp32, [2, 5, 6]> l = linear(x = x, weight = {lit(rnd(6, 8))}, bias = {lit(rnd(6))})"
        "[name = string(\"l\")];",
        "tensor<fp32, [2, 5, 6]> r = relu(x = l)[name = string(\"r\")];"], "r"), {"x": (2, 5, 8)},
        "linear_act", "linear_act"),
    "linear_gelu_tanh": (program("tensor<fp32, [3, 8]> x", [
        f"tensor<fp32, [3, 6]> l = linear(x = x, weight = {lit(rnd(6, 8))}, bias = {lit(rnd(6))})"
        "[name = string(\"l\")];",
        "tensor<fp32, [3, 6]> r = gelu(x = l, mode = string(\"TANH_APPROXIMATION\"))[name = string(\"r\")];"],
        "r"), {"x": (3, 8)}, None, "linear_act"),
    "linear_gelu_exact": (program("tensor<fp32, [3, 8]> x", [
        f"tensor<fp32, [3, 6]> l = linear(x = x, weight = {lit(rnd(6, 8))}, bias = {lit(rnd(6))})"
        "[name = string(\"l\")];",
        "tensor<fp32, [3, 6]> r = gelu(x = l, mode = string(\"EXACT\"))[name = string(\"r\")];"],
        "r"), {"x": (3, 8)}, "linear_act", None),
    "attention": (program("tensor<fp32, [2, 3, 5, 4]> q, tensor<fp32, [2, 3, 6, 4]> k, "
                          "tensor<fp32, [2, 3, 6, 4]> v, tensor<fp32, [2, 1, 5, 6]> m", [
        "tensor<fp32, [2, 3, 5, 6]> s = matmul(x = q, y = k, transpose_x = bool(false), transpose_y = bool(true))"
        "[name = string(\"s\")];",
        "tensor<fp32, [2, 3, 5, 6]> t = mul(x = s, y = fp32(0.5))[name = string(\"t\")];",
        "tensor<fp32, [2, 3, 5, 6]> u = add(x = t, y = m)[name = string(\"u\")];",
        "tensor<fp32, [2, 3, 5, 6]> p = softmax(x = u, axis = int32(-1))[name = string(\"p\")];",
        "tensor<fp32, [2, 3, 5, 4]> o = matmul(x = p, y = v, transpose_x = bool(false), transpose_y = bool(false))"
        "[name = string(\"o\")];"], "o"),
        {"q": (2, 3, 5, 4), "k": (2, 3, 6, 4), "v": (2, 3, 6, 4), "m": (2, 1, 5, 6)}, "attention", "attention"),
    "bert_attention": (program("tensor<fp32, [1, 6, 8]> x", [
        f"tensor<fp32, [1, 6, 8]> lq = linear(x = x, weight = {lit(rnd(8, 8))}, bias = {lit(rnd(8))})"
        "[name = string(\"lq\")];",
        f"tensor<fp32, [1, 6, 8]> lk = linear(x = x, weight = {lit(rnd(8, 8))}, bias = {lit(rnd(8))})"
        "[name = string(\"lk\")];",
        f"tensor<fp32, [1, 6, 8]> lv = linear(x = x, weight = {lit(rnd(8, 8))}, bias = {lit(rnd(8))})"
        "[name = string(\"lv\")];",
        f"tensor<fp32, [1, 6, 2, 4]> rq = reshape(x = lq, shape = {ints(1, 6, 2, 4)})[name = string(\"rq\")];",
        f"tensor<fp32, [1, 6, 2, 4]> rk = reshape(x = lk, shape = {ints(1, 6, 2, 4)})[name = string(\"rk\")];",
        f"tensor<fp32, [1, 6, 2, 4]> rv = reshape(x = lv, shape = {ints(1, 6, 2, 4)})[name = string(\"rv\")];",
        f"tensor<fp32, [1, 2, 4, 6]> tk = transpose(x = rk, perm = {ints(0, 2, 3, 1)})[name = string(\"tk\")];",
        f"tensor<fp32, [1, 2, 6, 4]> tq = transpose(x = rq, perm = {ints(0, 2, 1, 3)})[name = string(\"tq\")];",
        f"tensor<fp32, [1, 2, 6, 4]> tv = transpose(x = rv, perm = {ints(0, 2, 1, 3)})[name = string(\"tv\")];",
        "tensor<fp32, [1, 2, 6, 6]> s = matmul(x = tq, y = tk, transpose_x = bool(false), "
        "transpose_y = bool(false))[name = string(\"s\")];",
        "tensor<fp32, [1, 2, 6, 6]> d = real_div(x = s, y = fp32(2.0))[name = string(\"d\")];",
        "tensor<fp32, [1, 2, 6, 6]> p = softmax(x = d, axis = int32(3))[name = string(\"p\")];",
        "tensor<fp32, [1, 2, 6, 4]> o = matmul(x = p, y = tv, transpose_x = bool(false), "
        "transpose_y = bool(false))[name = string(\"o\")];",
        f"tensor<fp32, [1, 6, 2, 4]> to = transpose(x = o, perm = {ints(0, 2, 1, 3)})[name = string(\"to\")];",
        f"tensor<fp32, [1, 6, 8]> y = reshape(x = to, shape = {ints(1, 6, 8)})[name = string(\"y\")];"], "y"),
        {"x": (1, 6, 8)}, "attention", "attention"),
    "qkv_merge": (program("tensor<fp32, [4, 8]> x", [
        f"tensor<fp32, [4, 3]> a = linear(x = x, weight = {lit(rnd(3, 8))}, bias = {lit(rnd(3))})"
        "[name = string(\"a\")];",
        f"tensor<fp32, [4, 5]> b = linear(x = x, weight = {lit(rnd(5, 8))}, bias = {lit(rnd(5))})"
        "[name = string(\"b\")];",
        "tensor<fp32, [4, 8]> c = concat(values = (a, b), axis = int32(1), interleave = bool(false))"
        "[name = string(\"c\")];"], "c"), {"x": (4, 8)}, "merge_linear", "merge_linear"),
    "ops_mixed": (program("tensor<fp32, [2, 6]> x", [
        "(tensor<fp32, [2, 2]> s0, tensor<fp32, [2, 4]> s1) = split(x = x, axis = int32(1), "
        f"split_sizes = {ints(2, 4)})[name = string(\"sp\")];",
        "tensor<fp32, [2, 4]> e = exp(x = s1)[name = string(\"e\")];",
        "tensor<fp32, [2]> r = reduce_sum(x = e, axes = tensor<int32, [1]>([1]), keep_dims = bool(false))"
        "[name = string(\"r\")];",
        "tensor<fp32, [2, 2]> t = transpose(x = s0, perm = tensor<int32, [2]>([1, 0]))[name = string(\"t\")];",
        "(tensor<fp32, [2, 1]> tv, tensor<int32, [2, 1]> ti) = topk(x = e, k = int32(1), axis = int32(-1))"
        "[name = string(\"tk\")];"], "r, t, ti"), {"x": (2, 6)}, None, None),
    "control_flow": (program("tensor<fp32, [2]> x, bool p", [
        "int32 zero = const()[name = string(\"zero\"), val = int32(0)];",
        "tensor<fp32, [2]> c = cond(pred = p)[name = string(\"c\")]",
        "    _true_fn() {",
        "        tensor<fp32, [2]> t = relu(x = x)[name = string(\"t\")];",
        "    } -> (t)",
        "    _false_fn() {",
        "        tensor<fp32, [2]> f = abs(x = x)[name = string(\"f\")];",
        "    } -> (f);",
        "(int32 n, tensor<fp32, [2]> acc) = while_loop(loop_vars = (zero, c))[name = string(\"loop\")]",
        "    _cond(int32 i_x = zero, tensor<fp32, [2]> v_x = c) {",
        "        bool more = less(x = i_x, y = int32(3))[name = string(\"more\")];",
        "    } -> (more)",
        "    _body(int32 i_x = zero, tensor<fp32, [2]> v_x = c) {",
        "        int32 i_next = add(x = i_x, y = int32(1))[name = string(\"i_next\")];",
        "        tensor<fp32, [2]> v_next = add(x = v_x, y = x)[name = string(\"v_next\")];",
        "    } -> (i_next, v_next);"], "n, acc"), {"x": (2,), "p": ()}, None, None),
}


def _inputs(plan, shapes: dict, device: str) -> dict:
    gen = torch.Generator().manual_seed(1)
    out = {}
    for slot in plan.inputs:
        shape = shapes[slot.name]
        if slot.dtype == torch.bool:
            out[slot.name] = torch.tensor(True, device=device)
        else:
            out[slot.name] = torch.randn(shape, generator=gen).to(device=device, dtype=slot.dtype)
    return out


@contextlib.contextmanager
def _ieee_fp32():
    # The compiled path computes float32 convs in float32 on CUDA; PyTorch's default lets cuDNN use TF32
    # (~1e-3 relative), so the reference interpreter runs with TF32 off too.
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def _close(ref, got, dtype: torch.dtype) -> None:
    assert type(ref) is type(got)
    if not isinstance(ref, torch.Tensor):
        assert ref == got
        return
    assert ref.shape == got.shape and ref.dtype == got.dtype
    if not ref.is_floating_point():
        assert torch.equal(ref.cpu(), got.cpu())
        return
    atol, rtol = TOLERANCES[str(dtype).replace("torch.", "")]
    scale = max(1.0, float(ref.abs().max()))
    np.testing.assert_allclose(got.double().cpu().numpy(), ref.double().cpu().numpy(), atol=atol * scale, rtol=rtol)


def _plan_and_programs(text: str, device: str, **options):
    fn = parse_mil(text).functions["main"]
    interp = Interpreter(fn, device)
    return interp, CompiledProgram(interp.plan, **options)


@pytest.mark.parametrize("case", list(CASES))
def test_program_matches_interpreter(device, case):
    text, shapes, cpu_pass, cuda_pass = CASES[case]
    interp, compiled = _plan_and_programs(text, device)
    expected_pass = cpu_pass if device == "cpu" else cuda_pass
    for _ in range(2):  # the second run replays a CUDA graph where one was captured
        inputs = _inputs(interp.plan, shapes, device)
        with _ieee_fp32():
            ref = interp.run(inputs)
        got = compiled.run(inputs)
        assert list(got) == list(ref)
        half = any(getattr(s.type, "dtype", None) == "fp16" for s in interp.plan.inputs)
        dtype = torch.float16 if half else torch.float32
        for name in ref:
            _close(ref[name], got[name], dtype)
    stats = compiled.stats
    if expected_pass is not None:
        assert stats["fusions"].get(expected_pass, 0) >= 1, stats
        if expected_pass != "merge_linear":
            assert sum(stats["fused_calls"].values()) >= 1, stats  # the primitive ran, not the fallback
        assert stats["steps"][1] < stats["steps"][0] or expected_pass == "conv_prepack"
    if device == "cuda" and case != "control_flow":
        assert stats["cuda_graphs"] == 1, stats


def test_fused_steps_run_in_the_interpreter_too():
    # Fused steps keep the plan's Step contract, so the interpreter can run a fused plan.
    from tensorlogic.runtime import fusion

    text, shapes, _, _ = CASES["two_convs_add_relu"]
    interp, _ = _plan_and_programs(text, "cpu")
    fused, counts = fusion.fuse(interp.plan.body, interp.plan.device, interp.plan.var_types)
    assert counts == {"conv_add_act": 1, "conv_prepack": 1}
    other = Interpreter.from_plan(type(interp.plan)(**{**interp.plan.__dict__, "body": fused}))
    inputs = _inputs(interp.plan, shapes, "cpu")
    _close(interp.run(inputs)["r"], other.run(inputs)["r"], torch.float32)


def test_conv_with_asymmetric_padding_falls_back():
    # Stride 2 "same" on an even size pads one more after than before: the fused primitives take only
    # symmetric padding, so the original steps run, with the same result.
    text = program("tensor<fp32, [1, 4, 8, 8]> x", [
        conv("c", "x", 4, 4, 8, k=3, stride=2), "tensor<fp32, [1, 4, 4, 4]> r = relu(x = c)[name = string(\"r\")];"],
        "r")
    interp, compiled = _plan_and_programs(text, "cpu")
    inputs = _inputs(interp.plan, {"x": (1, 4, 8, 8)}, "cpu")
    _close(interp.run(inputs)["r"], compiled.run(inputs)["r"], torch.float32)
    assert compiled.stats["fusions"] == {"conv_act": 1}
    assert compiled.stats["fused_calls"] == {"conv+relu": 0}


def test_projection_shortcut_bias_moves_into_the_fused_conv():
    # relu(conv_a(x) + conv_b(x)): conv_b's bias is added by the fused conv; where the fused primitive
    # declines (asymmetric padding here), the original steps still see conv_b's bias.
    for k, fast in ((3, 0), (2, 1)):
        t = "tensor<fp32, [1, 4, 4, 4]>"
        text = program("tensor<fp32, [1, 4, 8, 8]> x", [
            conv("a", "x", 4, 4, 8, k=1, stride=2), conv("b", "x", 4, 4, 8, k=k, stride=2),
            f"{t} s = add(x = a, y = b)[name = string(\"s\")];", f"{t} r = relu(x = s)[name = string(\"r\")];"], "r")
        interp, compiled = _plan_and_programs(text, "cpu")
        inputs = _inputs(interp.plan, {"x": (1, 4, 8, 8)}, "cpu")
        _close(interp.run(inputs)["r"], compiled.run(inputs)["r"], torch.float32)
        fused = [s for s in compiled.body.steps if s.op_type == "conv+add+relu"]
        assert len(fused) == 1 and fused[0].fn.fast_calls == fast
        assert [s.op_type for s in fused[0].fn.steps] == ["conv", "add", "add", "relu"]


def test_attention_mask_that_widens_the_scores_falls_back():
    # A rank-5 mask broadcasts the scores up a rank: SDPA cannot take it, the original steps can.
    text = program("tensor<fp32, [2, 5, 4]> q, tensor<fp32, [2, 6, 4]> k, tensor<fp32, [2, 6, 4]> v, "
                   "tensor<fp32, [3, 1, 1, 1]> m", [
        "tensor<fp32, [2, 5, 6]> s = matmul(x = q, y = k, transpose_x = bool(false), transpose_y = bool(true))"
        "[name = string(\"s\")];",
        "tensor<fp32, [3, 2, 5, 6]> u = add(x = s, y = m)[name = string(\"u\")];",
        "tensor<fp32, [3, 2, 5, 6]> p = softmax(x = u, axis = int32(-1))[name = string(\"p\")];",
        "tensor<fp32, [3, 2, 5, 4]> o = matmul(x = p, y = v, transpose_x = bool(false), transpose_y = bool(false))"
        "[name = string(\"o\")];"], "o")
    interp, compiled = _plan_and_programs(text, "cpu")
    inputs = _inputs(interp.plan, {"q": (2, 5, 4), "k": (2, 6, 4), "v": (2, 6, 4), "m": (3, 1, 1, 1)}, "cpu")
    ref = interp.run(inputs)["o"]
    assert ref.shape == (3, 2, 5, 4)
    _close(ref, compiled.run(inputs)["o"], torch.float32)
    assert compiled.stats["fusions"] == {"attention": 1}
    assert compiled.stats["fused_calls"] == {"attention": 0}


def test_without_fusion_the_plan_is_lowered_as_is():
    text, shapes, _, _ = CASES["conv_add_relu"]
    interp, compiled = _plan_and_programs(text, "cpu", fuse=False)
    inputs = _inputs(interp.plan, shapes, "cpu")
    _close(interp.run(inputs)["r"], compiled.run(inputs)["r"], torch.float32)
    assert compiled.stats["fusions"] == {} and compiled.stats["steps"] == (3, 3)


def test_states_are_read_and_written():
    text = """program(1.3)
{
    func main<ios18>(tensor<fp16, [1, 4]> x, state<tensor<fp16, [1, 4]>> cache) {
        tensor<fp16, [1, 4]> old = read_state(input = cache)[name = string("old")];
        tensor<fp16, [1, 4]> new = add(x = old, y = x)[name = string("new")];
        write_state(data = new, input = cache)[name = string("w")];
        tensor<fp16, [1, 4]> y = mul(x = new, y = fp16(2.0))[name = string("y")];
    } -> (y);
}
"""
    interp, compiled = _plan_and_programs(text, "cpu")
    s1, s2 = StateValue(torch.zeros(1, 4)), StateValue(torch.zeros(1, 4))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    for _ in range(3):
        ref = interp.run({"x": x}, states={"cache": s1})["y"]
        got = compiled.run({"x": x}, states={"cache": s2})["y"]
        assert torch.equal(ref, got)
    assert torch.equal(s1.value, s2.value) and float(s2.value[0, 3]) == 12.0


def test_intermediate_outputs_come_from_the_reference():
    text, shapes, _, _ = CASES["conv_add_relu"]
    interp, compiled = _plan_and_programs(text, "cpu")
    inputs = _inputs(interp.plan, shapes, "cpu")
    got = compiled.run(inputs, outputs=["c", "r"])  # "c" was fused away
    ref = interp.run(inputs, outputs=["c", "r"])
    for name in ("c", "r"):
        _close(ref[name], got[name], torch.float32)


def test_failing_op_is_named():
    text = program("tensor<fp32, [2, 6]> x", [
        f"tensor<fp32, [3, 4]> r = reshape(x = x, shape = {ints(3, 4)})[name = string(\"r\")];",
        "tensor<fp32, [3, 4]> e = exp(x = r)[name = string(\"e\")];"], "e")
    interp, compiled = _plan_and_programs(text, "cpu")
    with pytest.raises(OpError) as err:
        compiled.run({"x": torch.zeros(2, 5)})
    assert str(err.value).startswith("op reshape -> r: ")
    assert "x=float32[2,5]" in str(err.value)
    with pytest.raises(InputError, match="^input 'x' is missing$"):
        compiled.run({})


def test_bad_options_are_refused():
    text, _, _, _ = CASES["conv_relu"]
    fn = parse_mil(text).functions["main"]
    plan = Interpreter(fn, "cpu").plan
    with pytest.raises(InputError, match="^unknown execution mode 'fast' \\(use interp, compiled or compile\\)$"):
        CompiledProgram(plan, "fast")
    with pytest.raises(InputError, match="^unknown fusion pass 'nope' "):
        CompiledProgram(plan, passes=["nope"])
    with pytest.raises(InputError, match="^num_threads must be at least 1, got 0$"):
        CompiledProgram(plan, num_threads=0)


def test_thread_count_is_set():
    text, _, _, _ = CASES["conv_relu"]
    plan = Interpreter(parse_mil(text).functions["main"], "cpu").plan
    before = torch.get_num_threads()
    try:
        CompiledProgram(plan, num_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.cuda
def test_cuda_graph_capture_failure_runs_without_graph():
    # non_zero's output size depends on the data: it needs the host mid-run, so no graph holds it.
    text = program("tensor<fp32, [6]> x", [
        "tensor<int32, [?, 1]> n = non_zero(x = x)[name = string(\"n\")];"], "n")
    interp, compiled = _plan_and_programs(text, "cuda")
    x = torch.tensor([0.0, 1.0, 0.0, 2.0, 3.0, 0.0], device="cuda")
    for _ in range(2):
        assert torch.equal(interp.run({"x": x})["n"], compiled.run({"x": x})["n"])
    assert compiled.stats["cuda_graphs"] == 0 and len(compiled.stats["graph_errors"]) == 1


@pytest.mark.slow
def test_torch_compile_mode_matches_interpreter():
    text, shapes, _, _ = CASES["bert_attention"]
    interp, compiled = _plan_and_programs(text, "cpu", mode="compile")
    inputs = _inputs(interp.plan, shapes, "cpu")
    _close(interp.run(inputs)["y"], compiled.run(inputs)["y"], torch.float32)
    assert compiled.stats["mode"] == "compile" and compiled.stats["fusions"] == {"attention": 1, "merge_linear": 1}


# --- converted models --------------------------------------------------------------------------

ct = pytest.importorskip("coremltools")
warnings.filterwarnings("ignore")


class ResNetStage(nn.Module):
    """Stem conv, a strided bottleneck with a projection shortcut, an identity bottleneck, a classifier."""

    def __init__(self, c: int = 16, mid: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), random_batchnorm(c), nn.ReLU())

        def bottleneck(stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, mid, 1, bias=False), random_batchnorm(mid), nn.ReLU(),
                                 nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False),
                                 random_batchnorm(mid), nn.ReLU(),
                                 nn.Conv2d(mid, c, 1, bias=False), random_batchnorm(c))

        self.b1, self.b2 = bottleneck(2), bottleneck(1)
        self.down = nn.Sequential(nn.Conv2d(c, c, 1, stride=2, bias=False), random_batchnorm(c))
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(self.b1(x) + self.down(x))
        x = F.relu(self.b2(x) + x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class InvertedResidual(nn.Module):
    def __init__(self, c: int = 8, expand: int = 4):
        super().__init__()
        h = c * expand
        self.body = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), random_batchnorm(h), nn.ReLU6(),
                                  nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), random_batchnorm(h), nn.ReLU6(),
                                  nn.Conv2d(h, c, 1, bias=False), random_batchnorm(c))

    def forward(self, x):
        return x + self.body(x)


class Encoder(nn.Module):
    """BERT-style post-LN layer with separate Q/K/V projections (shapes fixed: see test_end_to_end)."""

    def __init__(self, d: int = 32, heads: int = 4, ff: int = 64, seq: int = 8, tanh_gelu: bool = True):
        super().__init__()
        self.heads, self.seq, self.d = heads, seq, d
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.approx = "tanh" if tanh_gelu else "none"

    def forward(self, x):
        h = self.d // self.heads

        def split(t):
            return t.reshape(-1, self.seq, self.heads, h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(h), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(-1, self.seq, self.d)
        x = self.ln1(x + self.o(y))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x), approximate=self.approx)))


MODELS = {
    # name: (module factory, input shape, passes that must fire on CPU, on CUDA)
    "resnet_stage": (ResNetStage, (1, 3, 16, 16), {"conv_act", "conv_add_act"}, {"conv_act", "conv_add_act"}),
    "mobilenet_block": (InvertedResidual, (1, 8, 12, 12), {"conv_act", "conv_add_act"}, set()),
    "encoder_tanh_gelu": (Encoder, (1, 8, 32), {"attention", "merge_linear"},
                          {"attention", "merge_linear", "linear_act"}),
    "encoder_exact_gelu": (functools.partial(Encoder, tanh_gelu=False), (1, 8, 32),
                           {"attention", "merge_linear", "linear_act"}, {"attention", "merge_linear"}),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache: dict = {}
    folder = tmp_path_factory.mktemp("compiled")

    def get(name: str, precision: str):
        key = (name, precision)
        if key not in cache:
            factory, shape, _, _ = MODELS[name]
            torch.manual_seed(0)
            module = factory().eval()
            x = torch.randn(*shape)
            mlmodel = ct.convert(
                torch.jit.trace(module, x), inputs=[ct.TensorType(name="x", shape=shape)],
                outputs=[ct.TensorType(name="y")], convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                minimum_deployment_target=ct.target.iOS16)
            path = folder / f"{name}_{precision}.mlpackage"
            mlmodel.save(str(path))
            cache[key] = (path, module.double(), x.numpy())
        return cache[key]

    return get


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("name", list(MODELS))
def test_model_compiled_matches_interpreter_and_torch(converted, device, name, precision):
    from tensorlogic.formats import open_model_file
    from tensorlogic.runtime.predictor import Predictor

    path, module, x = converted(name, precision)
    file = open_model_file(path)
    interp = Predictor(file, device=device, mode="interp")
    compiled = Predictor(file, device=device, mode="compiled")
    with _ieee_fp32():
        ref = interp.predict({"x": x})["y"]
    got = compiled.predict({"x": x})["y"]
    got = compiled.predict({"x": x})["y"]  # a replay where a CUDA graph was captured
    assert got.dtype == ref.dtype and got.shape == ref.shape
    atol, rtol = TOLERANCES["float16" if precision == "fp16" else "float32"]
    scale = max(1.0, float(np.abs(ref).max()))
    with torch.no_grad():
        expected = module(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(got.astype(np.float64), expected, atol=atol * scale, rtol=rtol)
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), atol=atol * scale, rtol=rtol)
    stats = compiled.engine.stats
    want = MODELS[name][2] if device == "cpu" else MODELS[name][3]
    assert want <= set(stats["fusions"]), stats
    assert all(n > 0 for n in stats["fused_calls"].values() if n is not None) or not want, stats


def test_tl_mode_selects_the_compiled_path(converted, monkeypatch):
    from tensorlogic.formats import open_model_file
    from tensorlogic.runtime.predictor import Predictor

    path, _, x = converted("mobilenet_block", "fp32")
    monkeypatch.setenv("TL_MODE", "compiled")
    pred = Predictor(open_model_file(path), device="cpu")
    assert isinstance(pred.engine, CompiledProgram)
    monkeypatch.setenv("TL_MODE", "turbo")
    with pytest.raises(InputError, match="^unknown execution mode 'turbo'"):
        Predictor(open_model_file(path), device="cpu")


@pytest.fixture(scope="module")
def flexible(tmp_path_factory):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(2, 3, 6, 6)
    shape = ct.Shape(shape=(ct.RangeDim(1, 8, default=2), 3, 6, 6))
    mlmodel = ct.convert(torch.jit.trace(module, x), inputs=[ct.TensorType(name="x", shape=shape)],
                         outputs=[ct.TensorType(name="y")], convert_to="mlprogram",
                         compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16)
    path = tmp_path_factory.mktemp("flex") / "flex.mlpackage"
    mlmodel.save(str(path))
    return path, module


@pytest.mark.parametrize("mode", ["interp", "compiled"])
def test_list_of_inputs_runs_as_one_batch_when_asked(flexible, mode):
    from tensorlogic.formats import open_model_file
    from tensorlogic.runtime.predictor import Predictor

    path, module = flexible
    pred = Predictor(open_model_file(path), device="cpu", mode=mode)
    calls = []
    run = pred.engine.run
    pred.engine.run = lambda *a, **k: calls.append(a[0]["x"].shape) or run(*a, **k)
    items = [{"x": np.random.default_rng(i).standard_normal((n, 3, 6, 6)).astype(np.float32)}
             for i, n in enumerate((1, 2, 1))]
    pred.predict(items)  # item by item unless asked for a batch
    assert calls == [(1, 3, 6, 6), (2, 3, 6, 6), (1, 3, 6, 6)]
    calls.clear()
    results = pred.predict(items, batch=True)
    assert calls == [(4, 3, 6, 6)]
    for item, res in zip(items, results):
        with torch.no_grad():
            expected = module(torch.from_numpy(item["x"])).numpy()
        assert res["y"].shape == expected.shape
        np.testing.assert_allclose(res["y"], expected, atol=1e-5, rtol=1e-4)
    calls.clear()
    too_many = [{"x": np.zeros((1, 3, 6, 6), np.float32)}] * 9  # 9 > the range's 8: one by one
    assert len(pred.predict(too_many, batch=True)) == 9 and calls == [(1, 3, 6, 6)] * 9


@pytest.mark.slow
def test_resnet50_compiled_matches_interpreter(tmp_path):
    sys.path.insert(0, str(ROOT))
    from benchmarks.models import build

    from tensorlogic.formats import open_model_file
    from tensorlogic.runtime.predictor import Predictor

    module, shape = build("resnet50")
    x = torch.rand(shape)
    mlmodel = ct.convert(torch.jit.trace(module, x), inputs=[ct.TensorType(name="x", shape=shape)],
                         convert_to="mlprogram", compute_precision=ct.precision.FLOAT16)
    mlmodel.save(str(tmp_path / "r50.mlpackage"))
    file = open_model_file(tmp_path / "r50.mlpackage")
    ref = Predictor(file, device="cpu", mode="interp").predict({"x": x.numpy()})
    compiled = Predictor(file, device="cpu", mode="compiled")
    got = compiled.predict({"x": x.numpy()})
    (name,) = ref
    scale = max(1.0, float(np.abs(ref[name]).max()))
    np.testing.assert_allclose(got[name].astype(np.float64), ref[name].astype(np.float64), atol=2e-3 * scale,
                               rtol=2e-2)
    assert compiled.engine.stats["fusions"] == {"conv_add_act": 16, "conv_act": 33, "conv_prepack": 4}


@pytest.mark.slow
def test_conformance_cases_run_through_the_compiled_path():
    tests = Path(ct.__file__).parent / "converters/mil/mil/ops/tests"
    env = dict(os.environ, TL_MODE="compiled", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.conformance.plugin", "-p", "no:cacheprovider", "-q",
           "-W", "ignore", "--tl-sample", "20", str(tests / "iOS17/test_conv.py"),
           str(tests / "iOS14/test_activation.py")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout


# --- tl bench ----------------------------------------------------------------------------------

BENCH_MODULE = """
import torch


def make():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5))


def not_a_module():
    return 42
"""


def test_tl_bench_compares_paths_and_alternatives(flexible, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from tensorlogic.cli import main

    path, _ = flexible
    (tmp_path / "benchmod.py").write_text(BENCH_MODULE)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        assert main(["bench", str(path), "--device", "cpu", "--batch", "3", "--compare", "--torch-module",
                     "benchmod:make", "--runs", "5", "--warmup", "1", "--threads", "1", "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    doc = json.loads(capsys.readouterr().out)
    names = [t["name"] for t in doc["timings"]]
    assert names == ["tensorlogic compiled", "tensorlogic interp", "tensorlogic compiled predict()",
                     "pytorch eager", "onnxruntime cpu"]
    assert all(t["runs"] == 5 and t["batch"] == 3 and t["median_ms"] > 0 for t in doc["timings"])
    assert doc["timings"][0]["ours_over_this"] == 1.0
    assert doc["engine"]["fusions"] == {"conv_act": 1}


def test_tl_bench_prints_a_table(converted, capsys):
    from tensorlogic.cli import main

    path, _, _ = converted("mobilenet_block", "fp32")
    assert main(["bench", str(path), "--device", "cpu", "--runs", "3", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "median ms" in out and "tensorlogic compiled" in out and "first prediction" in out


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "tl: error: --batch and --runs must be at least 1, --warmup at least 0"),
    (["--threads", "0"], "tl: error: --threads must be at least 1, got 0"),
    (["--batch", "9"], "tl: error: input 'x' takes [1..8, 3, 6, 6]: batch 9 does not fit (convert the model "
                       "with a flexible first dimension)"),
    (["--compare", "--torch-module", "benchmod"], "tl: error: --torch-module 'benchmod': expected "
                                                  "MODULE:FACTORY, e.g. benchmarks.models:resnet50"),
    (["--compare", "--torch-module", "nomodule_here:make"], "tl: error: --torch-module 'nomodule_here:make': No "
                                                            "module named 'nomodule_here'"),
    (["--compare", "--torch-module", "benchmod:not_a_module"], "tl: error: --torch-module 'benchmod:not_a_module': "
                                                               "not_a_module() returned int, not a torch module"),
])
def test_tl_bench_errors(flexible, tmp_path, monkeypatch, capsys, args, message):
    from tensorlogic.cli import main

    path, _ = flexible
    (tmp_path / "benchmod.py").write_text(BENCH_MODULE)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", str(path), "--device", "cpu", "--runs", "1", "--warmup", "0", *args])
    finally:
        torch.set_num_threads(threads)
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_tl_bench_refuses_files_it_cannot_run(tmp_path, capsys):
    from safetensors.numpy import save_file

    from tensorlogic.cli import main

    path = tmp_path / "w.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    assert main(["bench", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tl: error: {path}: tl bench runs Core ML ML Programs; this is SafeTensors"


@pytest.mark.slow
def test_end_to_end_architectures_pass_through_the_compiled_path():
    # The executor's end-to-end architectures (checked against torch float64) with TL_MODE=compiled.
    env = dict(os.environ, TL_MODE="compiled")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
           str(ROOT / "tests/runtime/test_end_to_end.py")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout
