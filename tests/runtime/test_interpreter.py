"""The interpreter on hand-built MIL functions: planning, consts, params, errors, control flow, states.

Arithmetic comes from small test-local ops passed through ``resolve`` (the op families are tested on
their own); the expected values are computed with numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorlogic.errors import InputError, OpError, UnsupportedError
from tensorlogic.mil import ir
from tensorlogic.runtime import registry
from tensorlogic.runtime.dtypes import compute_dtype, to_numpy, to_torch, torch_dtype
from tensorlogic.runtime.interpreter import Interpreter, StateValue, convert_param

calls: dict[str, int] = {}


def _add(x, y):
    return x + y


def _mul(x, y):
    return x * y


def _less(x, y):
    return x < y


def _scale(x, *, factor: float, axes: tuple = ()):
    calls["scale"] = calls.get("scale", 0) + 1
    return x * factor + len(axes)


def _concat(values, *, axis: int):
    return torch.cat(values, dim=axis)


def _argmax(x, *, axis: int):
    return torch.argmax(x, dim=axis)  # int64: the interpreter casts to the declared int32


def _boom(x):
    raise RuntimeError("kaboom\nsecond line")


def _constexpr_double(source):
    calls["constexpr"] = calls.get("constexpr", 0) + 1
    return np.asarray(source) * 2


LOCAL = {
    "add": registry.OpDef("add", _add),
    "mul": registry.OpDef("mul", _mul),
    "less": registry.OpDef("less", _less),
    "scale": registry.OpDef("scale", _scale, {"factor": "float", "axes": "ints"}),
    "concat": registry.OpDef("concat", _concat, {"axis": "int"}),
    "reduce_argmax": registry.OpDef("reduce_argmax", _argmax, {"axis": "int"}),
    "boom": registry.OpDef("boom", _boom),
    "constexpr_double": registry.OpDef("constexpr_double", _constexpr_double, {"source": "value"}),
}


def resolve(name: str, opset: str) -> registry.OpDef:
    return LOCAL[name] if name in LOCAL else registry.get(name, opset)


def t(dtype, *shape):
    return ir.TensorType(dtype, tuple(shape))


def const(name, value: ir.Value) -> ir.Op:
    return ir.Op("const", outputs=[ir.Var(name, value.type)], attributes={"val": value})


def mk(op_type, out, out_type, **inputs) -> ir.Op:
    bound = {k: (v if isinstance(v, tuple) else (v,)) for k, v in inputs.items()}
    return ir.Op(op_type, inputs=bound, outputs=[ir.Var(out, out_type)])


def function(inputs, ops, outputs, opset="CoreML7") -> ir.Function:
    return ir.Function("main", inputs, opset, {opset: ir.Block(operations=ops, outputs=outputs)})


def test_chain_with_consts_matches_numpy():
    w = np.array([[1.5, -2.0, 0.25]], dtype=np.float32)
    fn = function(
        [ir.Var("x", t("fp32", 2, 3))],
        [
            const("w", ir.tensor("fp32", w)),
            mk("mul", "m", t("fp32", 2, 3), x="x", y="w"),
            mk("add", "y", t("fp32", 2, 3), x="m", y=ir.scalar("fp32", 1.0)),
        ],
        ["y"],
    )
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = Interpreter(fn, resolve=resolve).run({"x": torch.from_numpy(x)})
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"].numpy(), x * w + 1.0, rtol=1e-6)


def test_fp16_consts_compute_as_float32_on_cpu_and_float16_when_forced():
    fn = function(
        [ir.Var("x", t("fp16", 3))],
        [mk("mul", "y", t("fp16", 3), x="x", y=ir.tensor("fp16", [0.5, 2.0, 3.0]))],
        ["y"],
    )
    auto = Interpreter(fn, resolve=resolve)
    assert auto.input_slots[0].dtype == torch.float32
    y = auto.run({"x": torch.ones(3)})["y"]
    assert y.dtype == torch.float32
    forced = Interpreter(fn, policy="fp16", resolve=resolve)
    y16 = forced.run({"x": torch.ones(3, dtype=torch.float16)})["y"]
    assert y16.dtype == torch.float16
    np.testing.assert_array_equal(y16.float().numpy(), np.array([0.5, 2.0, 3.0], np.float32))


def test_unsupported_op_fails_at_load_naming_op_and_opset():
    fn = function([ir.Var("x", t("fp32", 1))], [mk("no_such_op", "y", t("fp32", 1), x="x")], ["y"])
    with pytest.raises(UnsupportedError) as e:
        Interpreter(fn)
    assert "no_such_op" in str(e.value) and "CoreML7" in str(e.value)


def test_op_failure_is_one_line_op_error_with_inputs():
    fn = function([ir.Var("x", t("fp32", 2, 5))], [mk("boom", "bad_var", t("fp32", 2, 5), x="x")], ["bad_var"])
    with pytest.raises(OpError) as e:
        Interpreter(fn, resolve=resolve).run({"x": torch.zeros(2, 5)})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == "op boom -> bad_var: RuntimeError: kaboom (inputs: x=float32[2,5])"


def test_outputs_cast_to_declared_dtype():
    fn = function(
        [ir.Var("x", t("fp32", 2, 4))],
        [mk("reduce_argmax", "i", t("int32", 2), x="x", axis=ir.scalar("int32", 1))],
        ["i"],
    )
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    i = Interpreter(fn, resolve=resolve).run({"x": torch.from_numpy(x)})["i"]
    assert i.dtype == torch.int32
    np.testing.assert_array_equal(i.numpy(), np.argmax(x, axis=1))


def _three_step():
    return function(
        [ir.Var("x", t("fp32", 3))],
        [
            mk("add", "a", t("fp32", 3), x="x", y="x"),
            mk("mul", "b", t("fp32", 3), x="a", y="x"),
            mk("add", "c", t("fp32", 3), x="b", y=ir.scalar("fp32", 1.0)),
        ],
        ["c"],
    )


def test_intermediates_freed_after_last_use_and_returned_on_request():
    interp = Interpreter(_three_step(), resolve=resolve)
    frees = [step.free for step in interp.plan.body.steps]
    assert [set(f) for f in frees] == [set(), {"x", "a"}, {"b"}]
    x = np.array([1.0, 2.0, 3.0], np.float32)
    out = interp.run({"x": torch.from_numpy(x)}, outputs=["a", "b", "c"])
    np.testing.assert_allclose(out["a"].numpy(), 2 * x)
    np.testing.assert_allclose(out["b"].numpy(), 2 * x * x)
    np.testing.assert_allclose(out["c"].numpy(), 2 * x * x + 1)


def test_unknown_output_name_and_missing_input_are_input_errors():
    interp = Interpreter(_three_step(), resolve=resolve)
    with pytest.raises(InputError, match="no variable named 'nope'"):
        interp.run({"x": torch.zeros(3)}, outputs=["nope"])
    with pytest.raises(InputError, match="input 'x' is missing"):
        interp.run({})


def test_params_from_consts_are_converted_once_at_load_and_runtime_params_per_run():
    fn = function(
        [ir.Var("x", t("fp32", 2)), ir.Var("f", t("fp32", ()))],
        [
            const("axes", ir.tensor("int32", [0, 1, 2])),
            mk("scale", "y", t("fp32", 2), x="x", factor=ir.scalar("fp32", 3.0), axes="axes"),
            mk("scale", "z", t("fp32", 2), x="y", factor="f"),
        ],
        ["z"],
    )
    interp = Interpreter(fn, resolve=resolve)
    first, second = interp.plan.body.steps
    assert first.fixed["factor"] == 3.0 and first.fixed["axes"] == (0, 1, 2) and not first.params
    assert second.params == {"factor": "float"}
    out = interp.run({"x": torch.tensor([1.0, 2.0]), "f": torch.tensor(0.5)})
    np.testing.assert_allclose(out["z"].numpy(), (np.array([1.0, 2.0]) * 3 + 3) * 0.5)


def test_variadic_input_is_a_tuple_even_with_one_argument():
    fn = function(
        [ir.Var("x", t("fp32", 2))],
        [mk("concat", "y", t("fp32", 2), values=("x",), axis=ir.scalar("int32", 0))],
        ["y"],
    )
    y = Interpreter(fn, resolve=resolve).run({"x": torch.tensor([1.0, 2.0])})["y"]
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0])


def test_constexpr_ops_are_evaluated_once_at_load():
    calls.clear()
    fn = function(
        [ir.Var("x", t("fp32", 2))],
        [
            ir.Op("constexpr_double", inputs={"source": (ir.tensor("fp32", [1.0, 2.0]),)},
                  outputs=[ir.Var("w", t("fp32", 2))]),
            mk("mul", "y", t("fp32", 2), x="x", y="w"),
        ],
        ["y"],
    )
    interp = Interpreter(fn, resolve=resolve)
    for _ in range(3):
        y = interp.run({"x": torch.tensor([3.0, 4.0])})["y"]
    assert calls["constexpr"] == 1
    np.testing.assert_array_equal(y.numpy(), [6.0, 16.0])


def _counting_loop(limit: int) -> ir.Function:
    # while i < limit: i += 1; acc = acc * 2 ; cond and body are nested blocks with inputs.
    i_t, acc_t = t("int32", ()), t("fp32", 3)
    cond_block = ir.Block(
        inputs=[ir.Var("ci", i_t), ir.Var("cacc", acc_t)],
        operations=[mk("less", "go", t("bool", ()), x="ci", y="limit")],
        outputs=["go"],
    )
    body_block = ir.Block(
        inputs=[ir.Var("bi", i_t), ir.Var("bacc", acc_t)],
        operations=[
            mk("add", "ni", i_t, x="bi", y=ir.scalar("int32", 1)),
            mk("mul", "nacc", acc_t, x="bacc", y="two"),
        ],
        outputs=["ni", "nacc"],
    )
    loop = ir.Op(
        "while_loop",
        inputs={"loop_vars": (ir.scalar("int32", 0), "x")},
        outputs=[ir.Var("i_out", i_t), ir.Var("acc_out", acc_t)],
        blocks=[cond_block, body_block],
    )
    return function(
        [ir.Var("x", acc_t)],
        [
            const("limit", ir.scalar("int32", limit)),
            const("two", ir.scalar("fp32", 2.0)),
            loop,
        ],
        ["i_out", "acc_out"],
    )


def test_while_loop_runs_nested_blocks():
    out = Interpreter(_counting_loop(5), resolve=resolve).run({"x": torch.tensor([1.0, -1.0, 0.5])})
    assert int(out["i_out"]) == 5
    np.testing.assert_allclose(out["acc_out"].numpy(), np.array([1.0, -1.0, 0.5]) * 2**5)


def test_cond_picks_a_branch_reading_outer_variables():
    f = t("fp32", 2)
    true_block = ir.Block(operations=[mk("add", "tb", f, x="x", y="x")], outputs=["tb"])
    false_block = ir.Block(operations=[mk("mul", "fb", f, x="x", y="x")], outputs=["fb"])
    fn = function(
        [ir.Var("x", f), ir.Var("p", t("bool", ()))],
        [ir.Op("cond", inputs={"pred": ("p",)}, outputs=[ir.Var("y", f)], blocks=[true_block, false_block])],
        ["y"],
    )
    interp = Interpreter(fn, resolve=resolve)
    x = torch.tensor([3.0, -2.0])
    np.testing.assert_array_equal(interp.run({"x": x, "p": torch.tensor(True)})["y"].numpy(), [6.0, -4.0])
    np.testing.assert_array_equal(interp.run({"x": x, "p": torch.tensor(False)})["y"].numpy(), [9.0, 4.0])


def test_error_inside_a_nested_block_names_the_inner_op():
    f = t("fp32", 2)
    true_block = ir.Block(operations=[mk("boom", "inner", f, x="x")], outputs=["inner"])
    false_block = ir.Block(operations=[], outputs=["x"])
    fn = function(
        [ir.Var("x", f), ir.Var("p", t("bool", ()))],
        [ir.Op("cond", inputs={"pred": ("p",)}, outputs=[ir.Var("y", f)], blocks=[true_block, false_block])],
        ["y"],
    )
    interp = Interpreter(fn, resolve=resolve)
    np.testing.assert_array_equal(interp.run({"x": torch.ones(2), "p": torch.tensor(False)})["y"].numpy(), [1, 1])
    with pytest.raises(OpError, match=r"^op boom -> inner: RuntimeError: kaboom"):
        interp.run({"x": torch.ones(2), "p": torch.tensor(True)})


def test_lists_in_a_loop_match_numpy():
    # for i in 0..3: ls[i] = x * (i + 1); then gather [2, 0] and read 1.
    i_t, x_t = t("int32", ()), t("fp32", 2)
    ls_t = ir.ListType(x_t)
    cond_block = ir.Block(
        inputs=[ir.Var("ci", i_t), ir.Var("cls", ls_t)],
        operations=[mk("less", "go", t("bool", ()), x="ci", y=ir.scalar("int32", 3))],
        outputs=["go"],
    )
    body_block = ir.Block(
        inputs=[ir.Var("bi", i_t), ir.Var("bls", ls_t)],
        operations=[
            mk("add", "ni", i_t, x="bi", y=ir.scalar("int32", 1)),
            mk("cast_like", "nf", t("fp32", ()), x="ni"),
            mk("mul", "v", x_t, x="x", y="nf"),
            mk("list_write", "nls", ls_t, ls="bls", index="bi", value="v"),
        ],
        outputs=["ni", "nls"],
    )
    fn = function(
        [ir.Var("x", x_t)],
        [
            ir.Op("make_list", inputs={
                "init_length": (ir.scalar("int32", 3),),
                "dynamic_length": (ir.scalar("bool", False),),
                "elem_shape": (ir.scalar("int32", 2),),
                "dtype": (ir.scalar("string", "fp32"),),
            }, outputs=[ir.Var("ls0", ls_t)]),
            ir.Op("while_loop", inputs={"loop_vars": (ir.scalar("int32", 0), "ls0")},
                  outputs=[ir.Var("n", i_t), ir.Var("ls", ls_t)], blocks=[cond_block, body_block]),
            mk("list_gather", "g", t("fp32", 2, 2), ls="ls", indices=ir.tensor("int32", [2, 0])),
            mk("list_read", "r", x_t, ls="ls", index=ir.scalar("int32", 1)),
            mk("list_length", "len", i_t, ls="ls"),
        ],
        ["g", "r", "len"],
    )
    local = dict(LOCAL, cast_like=registry.OpDef("cast_like", lambda x: x.float()))
    interp = Interpreter(fn, resolve=lambda n, o: local[n] if n in local else registry.get(n, o))
    x = np.array([1.5, -2.0], np.float32)
    out = interp.run({"x": torch.from_numpy(x)})
    np.testing.assert_allclose(out["g"].numpy(), np.stack([x * 3, x * 1]))
    np.testing.assert_allclose(out["r"].numpy(), x * 2)
    assert int(out["len"]) == 3 and out["len"].dtype == torch.int32


def test_select_and_identity():
    f = t("fp32", 2, 2)
    fn = function(
        [ir.Var("c", t("bool", 2, 1)), ir.Var("a", f), ir.Var("b", f)],
        [mk("select", "s", f, cond="c", a="a", b="b"), mk("identity", "y", f, x="s")],
        ["y"],
    )
    c = np.array([[True], [False]])
    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    b = -a
    y = Interpreter(fn).run({"c": torch.from_numpy(c), "a": torch.from_numpy(a), "b": torch.from_numpy(b)})["y"]
    np.testing.assert_array_equal(y.numpy(), np.where(c, a, b))


def test_states_read_and_update_through_state_values():
    st = ir.StateType(t("fp16", 2))
    f16 = t("fp16", 2)
    fn = function(
        [ir.Var("s", st), ir.Var("x", f16)],
        [
            mk("read_state", "old", f16, input="s"),
            mk("add", "new", f16, x="old", y="x"),
            mk("coreml_update_state", "upd", f16, state="s", value="new"),
            mk("read_state", "after", f16, input="s"),
        ],
        ["old", "after"],
        opset="CoreML8",
    )
    interp = Interpreter(fn, resolve=resolve)
    state = StateValue(torch.zeros(2))
    for k in range(3):
        out = interp.run({"x": torch.tensor([1.0, 2.0])}, states={"s": state})
        np.testing.assert_array_equal(out["old"].numpy(), [k * 1.0, k * 2.0])
        np.testing.assert_array_equal(out["after"].numpy(), [(k + 1) * 1.0, (k + 1) * 2.0])
    with pytest.raises(InputError, match="state 's' is missing"):
        interp.run({"x": torch.zeros(2)})


def test_state_ops_need_ios18_opset():
    st = ir.StateType(t("fp16", 2))
    fn = function([ir.Var("s", st)], [mk("read_state", "v", t("fp16", 2), input="s")], ["v"], opset="CoreML7")
    with pytest.raises(UnsupportedError, match="read_state"):
        Interpreter(fn)


@pytest.mark.parametrize("level", ["1", "2"])
def test_tl_debug_traces_ops_to_stderr(level, monkeypatch, capsys):
    monkeypatch.setenv("TL_DEBUG", level)
    Interpreter(_three_step(), resolve=resolve).run({"x": torch.tensor([1.0, float("nan"), 3.0])})
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "[tl] add a -> a: float32[3]" + (" min=2 max=6 nan=1 inf=0" if level == "2" else "")
    assert len(err) == 3 and err[2].startswith("[tl] add c -> c: float32[3]")


def test_compute_dtype_policy_table():
    assert compute_dtype("fp16", "auto", "cpu") == torch.float32
    assert compute_dtype("fp16", "auto", "cuda") == torch.float16
    assert compute_dtype("bf16", "auto", "cuda") == torch.bfloat16
    assert compute_dtype("fp16", "fp32", "cuda") == torch.float32
    assert compute_dtype("fp16", "fp16", "cpu") == torch.float16
    assert compute_dtype("fp32", "fp16", "cpu") == torch.float32
    assert compute_dtype("int32", "auto", "cuda") == torch.int32
    assert torch_dtype("uint16") == torch.int32 and torch_dtype("uint32") == torch.int64
    assert torch_dtype("uint4") == torch.uint8 and torch_dtype("int4") == torch.int8


def test_numpy_torch_round_trip_keeps_values_and_boundary_dtype():
    a = np.array([[0, 65535]], dtype=np.uint16)
    ta = to_torch(a, torch.int32)
    assert ta.dtype == torch.int32 and ta.tolist() == [[0, 65535]]
    assert to_numpy(ta, "uint16").dtype == np.uint16
    ro = np.arange(4, dtype=np.float32)[::-1]
    ro.flags.writeable = False
    np.testing.assert_array_equal(to_torch(ro, torch.float16).float().numpy(), ro)
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16), "fp32").dtype == np.float32


def test_convert_param_kinds():
    dev = torch.device("cpu")
    assert convert_param("ints", np.array([[1, 2], [3, 4]], np.int32), "auto", dev) == (1, 2, 3, 4)
    assert convert_param("int", torch.tensor([7]), "auto", dev) == 7
    assert convert_param("dtype", "fp16", "auto", dev) == torch.float32
    assert convert_param("mil_dtype", np.array("fp16"), "auto", dev) == "fp16"
    assert convert_param("bools", (np.bool_(True), np.array([False, True])), "auto", dev) == (True, False, True)
    assert convert_param("int", (np.int32(2), torch.tensor(3)), "auto", dev) == (2, 3)
    with pytest.raises(ValueError, match="expected a scalar"):
        convert_param("int", np.zeros(2), "auto", dev)


def test_fp16_storage_policy_rounds_fp16_values_on_cpu_and_auto_does_not():
    fn = function(
        [ir.Var("x", t("fp16", 3))],
        [mk("mul", "y", t("fp16", 3), x="x", y=ir.scalar("fp16", 3.0))],
        ["y"],
    )
    x = np.array([0.1, 1.1, 1000.7], np.float16)
    exact = x.astype(np.float64) * 3
    stored = Interpreter(fn, policy="fp16-storage", resolve=resolve).run({"x": torch.from_numpy(x).float()})["y"]
    assert stored.dtype == torch.float32
    np.testing.assert_array_equal(stored.numpy(), exact.astype(np.float16).astype(np.float32))
    for policy in ("auto", "fp32"):
        wide = Interpreter(fn, policy=policy, resolve=resolve).run({"x": torch.from_numpy(x).float()})["y"]
        assert wide.dtype == torch.float32
        np.testing.assert_allclose(wide.numpy(), exact, rtol=1e-7)
        assert not np.array_equal(wide.numpy(), stored.numpy())


def test_explicit_cast_to_fp16_rounds_under_auto_but_not_under_fp32():
    fn = function(
        [ir.Var("x", t("fp32", 3))],
        [mk("cast", "y", t("fp16", 3), x="x", dtype=ir.scalar("string", "fp16"))],
        ["y"],
    )
    x = np.array([0.1, 1.1, 1000.7], np.float32)
    auto = Interpreter(fn, resolve=resolve).run({"x": torch.from_numpy(x)})["y"]
    np.testing.assert_array_equal(auto.numpy(), x.astype(np.float16).astype(np.float32))
    wide = Interpreter(fn, policy="fp32", resolve=resolve).run({"x": torch.from_numpy(x)})["y"]
    np.testing.assert_array_equal(wide.numpy(), x)


def test_ios16_constexpr_with_attribute_params_is_decompressed_at_load():
    q = np.array([[0, 255], [128, 3]], np.uint8)
    attrs = {
        "quantized_data": ir.tensor("uint8", q),
        "zero_point": ir.tensor("uint8", [128, 0]),
        "scale": ir.tensor("fp32", [0.5, 2.0]),
        "axis": ir.scalar("int32", 0),
    }
    fn = function(
        [ir.Var("x", t("fp32", 2, 2))],
        [
            ir.Op("constexpr_affine_dequantize", outputs=[ir.Var("w", t("fp32", 2, 2))], attributes=attrs),
            mk("mul", "y", t("fp32", 2, 2), x="x", y="w"),
        ],
        ["y"],
        opset="CoreML6",
    )
    interp = Interpreter(fn, resolve=resolve)
    assert [s.op_type for s in interp.plan.body.steps] == ["mul"]
    expected_w = (q.astype(np.float64) - np.array([[128], [0]])) * np.array([[0.5], [2.0]])
    y = interp.run({"x": torch.ones(2, 2)})["y"]
    np.testing.assert_allclose(y.numpy(), expected_w)
    with pytest.raises(UnsupportedError, match="constexpr_affine_dequantize"):
        Interpreter(function(fn.inputs, fn.block.operations, ["y"], opset="CoreML5"), resolve=resolve)
