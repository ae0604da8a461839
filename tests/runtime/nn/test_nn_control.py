"""Control flow (branch, loop, break, continue, copy) and the random layers."""

from __future__ import annotations

import numpy as np
import pytest


def _sub(nn_spec):
    from coremltools.models.neural_network import NeuralNetworkBuilder

    return NeuralNetworkBuilder(nn_spec=nn_spec, disable_rank5_shape_mapping=True)


@pytest.mark.parametrize("cond,want", [(1.0, lambda x: x * 10), (0.0, lambda x: x + 10), (1e-7, lambda x: x + 10)])
def test_branch(nnh, device, cond, want):
    b = nnh.make_builder({"x": (3,), "cond": (1,)}, ("out",))
    layer = b.add_branch("br", "cond")
    _sub(layer.branch.ifBranch).add_elementwise("mul", ["x"], "out", "MULTIPLY", alpha=10)
    _sub(layer.branch.elseBranch).add_elementwise("add", ["x"], "out", "ADD", alpha=10)
    x = np.array([1.0, 2.0, 3.0], np.float32)
    out = nnh.run_spec(b.spec, {"x": x, "cond": np.array([cond], np.float32)}, device)
    np.testing.assert_allclose(out["out"], want(x))


def test_loop_fixed_count_and_continue(nnh, device):
    """Five iterations add 2 each; a continue before the add skips iterations where the counter is odd."""
    b = nnh.make_builder({"x": (1,)}, ("out", "count"))
    b.add_copy("c0", "x", "out")
    b.add_load_constant_nd("k", "count", np.zeros(1), (1,))
    loop = b.add_loop("loop", max_iterations=5)
    body = _sub(loop.loop.bodyNetwork)
    body.add_elementwise("inc", ["count"], "count1", "ADD", alpha=1)
    body.add_copy("c1", "count1", "count")
    body.add_mod_broadcastable_constant = None
    body.add_load_constant_nd("two", "two", np.array([2.0]), (1,))
    body.add_mod_broadcastable("odd", ["count", "two"], "odd")
    branch = body.add_branch("skip", "odd")
    _sub(branch.branch.ifBranch).add_loop_continue("cont")
    body.add_elementwise("add", ["out"], "sum", "ADD", alpha=2)
    body.add_copy("c2", "sum", "out")
    out = nnh.run_spec(b.spec, {"x": np.array([1.0], np.float32)}, device)
    assert out["count"].tolist() == [5.0]
    assert out["out"].tolist() == [1.0 + 2 * 2]  # counters 2 and 4 are even


def test_while_loop_power_iteration_with_break(nnh, device):
    """Power iteration: a loop bounded by its input, broken out of by a branch once converged."""
    a = np.array([[2, -6, 8], [-6, 4, 5], [8, 5, 3]], dtype=np.float32)
    b = nnh.make_builder({"a": (3, 3), "v": (3,), "n": (1,)}, ("vec", "steps"))
    b.add_expand_dims("e", "v", "x", axes=[-1])
    b.add_load_constant_nd("k", "steps", np.zeros(1), (1,))
    loop = b.add_loop("loop", input_name="n")
    body = _sub(loop.loop.bodyNetwork)
    body.add_batched_mat_mul("mm", ["a", "x"], "y")
    body.add_reduce_l2("norm", "y", "norm", axes=[0])
    body.add_divide_broadcastable("div", ["y", "norm"], "yn")
    body.add_batched_mat_mul("dot", ["yn", "x"], "cos", transpose_a=True)
    body.add_squeeze("sq", "cos", "cos1", squeeze_all=True)
    body.add_unary("abs", "cos1", "acos", mode="abs")
    body.add_activation("diff", "LINEAR", "acos", "diff", params=[-1, 1])
    body.add_elementwise("inc", ["steps"], "steps1", "ADD", alpha=1)
    body.add_copy("c1", "steps1", "steps")
    body.add_copy("c2", "yn", "x")
    body.add_less_than("done", ["diff"], "done", alpha=1e-6)
    branch = body.add_branch("br", "done")
    _sub(branch.branch.ifBranch).add_loop_break("stop")
    b.add_squeeze("out", "x", "vec", squeeze_all=True)
    v0 = np.array([0.3, 0.9, 0.1], np.float32)
    out = nnh.run_spec(b.spec, {"a": a, "v": v0, "n": np.array([500], np.float32)}, device, policy="fp32")
    values, vectors = np.linalg.eigh(a.astype(np.float64))
    top = vectors[:, np.argmax(np.abs(values))]
    assert abs(abs(float(out["vec"] @ top)) - 1) < 1e-4
    assert 1 < out["steps"][0] < 500  # stopped by the break, not by the count


def test_while_loop_condition_network(nnh, device):
    """A while loop: double x while x < 100 (the condition network recomputes the flag each turn)."""
    b = nnh.make_builder({"x": (1,)}, ("out",))
    b.add_copy("c0", "x", "out")
    loop = b.add_loop("loop", condition="go")
    cond = _sub(loop.loop.conditionNetwork)
    cond.add_less_than("lt", ["out"], "go", alpha=100.0)
    body = _sub(loop.loop.bodyNetwork)
    body.add_elementwise("dbl", ["out"], "d", "MULTIPLY", alpha=2)
    body.add_copy("c1", "d", "out")
    out = nnh.run_spec(b.spec, {"x": np.array([3.0], np.float32)}, device)
    assert out["out"].tolist() == [192.0]


def test_random_layers_are_seeded_and_distributed(nnh, device):
    from tensorlogic.runtime.nn import build

    b = nnh.make_builder({"x": (4000,)}, ("n", "u", "bern", "cat"))
    b.add_random_normal_like("n", "x", "n", mean=1.5, stddev=0.5, seed=7)
    b.add_random_uniform_static("u", "u", (4000,), minval=-2.0, maxval=1.0, seed=3)
    b.add_random_bernoulli_like("bern", "x", "bern", prob=0.25, seed=5)
    b.add_load_constant_nd("logits", "logits", np.log(np.array([[0.1, 0.6, 0.3]])), (1, 3))
    b.add_categorical_distribution("cat", "logits", "cat", num_samples=4000, is_logits=True, seed=9)
    import torch

    runner = build(b.spec, device)
    feeds = {"x": torch.zeros(4000)}
    first, second = runner.run(feeds), runner.run(feeds)
    for name in ("n", "u", "bern", "cat"):
        assert torch.equal(first[name], second[name])  # the seed makes every run the same
    n, u, bern = (first[k].double().cpu().numpy() for k in ("n", "u", "bern"))
    assert abs(n.mean() - 1.5) < 0.05 and abs(n.std() - 0.5) < 0.05
    assert u.min() >= -2.0 and u.max() <= 1.0 and abs(u.mean() + 0.5) < 0.05
    assert set(np.unique(bern)) <= {0.0, 1.0} and abs(bern.mean() - 0.25) < 0.03
    counts = np.bincount(first["cat"].cpu().numpy().astype(int).reshape(-1), minlength=3) / 4000
    np.testing.assert_allclose(counts, [0.1, 0.6, 0.3], atol=0.03)
