"""Shape, slicing, gather/scatter, reduction and tensor-making layers against numpy float64."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TOLERANCES

rng = np.random.default_rng(2)


def assert_close(got, want, dtype="float32"):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)


def test_legacy_reshape_flatten_permute(layer_case):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)

    def layers(b):
        b.add_reshape("r1", "x", "r1", (4, 3, 2), 0)
        b.add_reshape("r2", "x", "r2", (6, 2, 2), 1)
        b.add_flatten("f0", 0, "x", "f0")
        b.add_flatten("f1", 1, "x", "f1")
        b.add_permute("p", (0, 3, 1, 2), "x", "p")
        b.add_sequence_repeat("s", 3, "x", "s")

    out = layer_case(layers, {"x": x}, rank5=True, outputs=("r1", "r2", "f0", "f1", "p", "s"))
    assert_close(out["r1"], x.reshape(1, 1, 4, 3, 2))
    # CHANNEL_LAST: flatten in [H, W, C] order, refill [H', W', C'], then back to [C', H', W'].
    assert_close(out["r2"], x.transpose(1, 2, 0).reshape(2, 2, 6).transpose(2, 0, 1)[None, None])
    assert_close(out["f0"], x.reshape(1, 1, 24, 1, 1))
    assert_close(out["f1"], x.transpose(1, 2, 0).reshape(1, 1, 24, 1, 1))
    assert_close(out["p"], x[None, None].transpose(0, 1, 4, 2, 3))  # [Seq, B, W, C, H]
    assert_close(out["s"], np.concatenate([x[None, None]] * 3, axis=0))


@pytest.mark.parametrize("mode", ["SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "PIXEL_SHUFFLE"])
def test_reorganize_data(layer_case, mode):
    x = np.arange(2 * 8 * 2 * 4, dtype=np.float32).reshape(2, 8, 2, 4) if mode != "SPACE_TO_DEPTH" else \
        np.arange(2 * 2 * 4 * 6, dtype=np.float32).reshape(2, 2, 4, 6)
    out = layer_case(lambda b: b.add_reorganize_data("r", "x", "out", mode=mode, block_size=2), {"x": x})
    n, c, h, w = x.shape
    if mode == "SPACE_TO_DEPTH":
        want = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 3, 5, 1, 2, 4).reshape(n, c * 4, h // 2, w // 2)
    elif mode == "DEPTH_TO_SPACE":
        want = x.reshape(n, 2, 2, c // 4, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, c // 4, h * 2, w * 2)
    else:
        want = x.reshape(n, c // 4, 2, 2, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // 4, h * 2, w * 2)
    assert_close(out["out"], want)


def test_reorganize_data_spec_example(layer_case):
    """The example in NeuralNetwork.proto: C=8, H=1, W=2 with block size 2."""
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 8, 1, 2)

    def layers(b):
        b.add_reorganize_data("d", "x", "d2s", mode="DEPTH_TO_SPACE", block_size=2)
        b.add_reorganize_data("p", "x", "ps", mode="PIXEL_SHUFFLE", block_size=2)

    out = layer_case(layers, {"x": x}, outputs=("d2s", "ps"))
    assert out["d2s"][0].tolist() == [[[1, 5, 2, 6], [9, 13, 10, 14]], [[3, 7, 4, 8], [11, 15, 12, 16]]]
    assert out["ps"][0].tolist() == [[[1, 3, 2, 4], [5, 7, 6, 8]], [[9, 11, 10, 12], [13, 15, 14, 16]]]


def test_nd_reshapes(layer_case):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    like = np.zeros((4, 6), np.float32)
    shape = np.array([3, 8], np.float32)

    def layers(b):
        b.add_transpose("t", (2, 0, 1), "x", "t")
        b.add_reshape_static("rs", "x", "rs", (6, -1))
        b.add_reshape_like("rl", ["x", "like"], "rl")
        b.add_reshape_dynamic("rd", ["x", "shape"], "rd")
        b.add_rank_preserving_reshape("rp", "x", "rp", (0, 4, -1))
        b.add_flatten_to_2d("f", "x", "f", axis=-1)
        b.add_expand_dims("e", "x", "e", axes=[0, -1])
        b.add_squeeze("sq", "e", "sq", axes=[0, -1])
        b.add_get_shape("gs", "x", "gs")

    out = layer_case(layers, {"x": x, "like": like, "shape": shape},
                     outputs=("t", "rs", "rl", "rd", "rp", "f", "sq", "e", "gs"))
    assert_close(out["t"], x.transpose(2, 0, 1))
    assert_close(out["rs"], x.reshape(6, 4))
    assert_close(out["rl"], x.reshape(4, 6))
    assert_close(out["rd"], x.reshape(3, 8))
    assert_close(out["rp"], x.reshape(2, 4, 3))
    assert_close(out["f"], x.reshape(6, 4))
    assert_close(out["e"], x.reshape(1, 2, 3, 4, 1))
    assert_close(out["sq"], x)
    assert out["gs"].tolist() == [2, 3, 4]


def test_broadcast_and_tile(layer_case):
    x = rng.standard_normal((3, 1)).astype(np.float32)
    like = np.zeros((2, 3, 4), np.float32)
    shape = np.array([2, 3, 5], np.float32)
    reps = np.array([2, 3], np.float32)

    def layers(b):
        b.add_broadcast_to_like("bl", ["x", "like"], "bl")
        b.add_broadcast_to_static("bs", "x", "bs", (4, 3, 2))
        b.add_broadcast_to_dynamic("bd", ["x", "shape"], "bd")
        b.add_tile("t", "x", "t", reps=[2, 3])
        b.add_tile("td", ["x", "reps"], "td")

    out = layer_case(layers, {"x": x, "like": like, "shape": shape, "reps": reps},
                     outputs=("bl", "bs", "bd", "t", "td"))
    assert_close(out["bl"], np.broadcast_to(x, (2, 3, 4)))
    assert_close(out["bs"], np.broadcast_to(x, (4, 3, 2)))
    assert_close(out["bd"], np.broadcast_to(x, (2, 3, 5)))
    assert_close(out["t"], np.tile(x, (2, 3)))
    assert_close(out["td"], np.tile(x, (2, 3)))


def test_concat_split_stack(layer_case):
    a = rng.standard_normal((2, 4, 3)).astype(np.float32)
    c = rng.standard_normal((2, 4, 3)).astype(np.float32)

    def layers(b):
        b.add_concat_nd("cn", ["a", "c"], "cn", axis=-1)
        b.add_concat_nd("ci", ["a", "c"], "ci", axis=1, interleave=True)
        b.add_split_nd("sn", "a", ["s1", "s2", "s3"], axis=1, split_sizes=[1, 2, 1])
        b.add_split_nd("se", "a", ["e1", "e2"], axis=-2, num_splits=2)
        b.add_split_nd("su", "a", ["u1", "u2", "u3"], axis=1, num_splits=3)
        b.add_stack("st", ["a", "c"], "st", axis=-1)

    out = layer_case(layers, {"a": a, "c": c}, outputs=("cn", "ci", "s1", "s2", "s3", "e1", "e2", "u1", "u2", "u3",
                                                        "st"))
    assert_close(out["cn"], np.concatenate([a, c], -1))
    assert_close(out["ci"], np.stack([a, c], 2).reshape(2, 8, 3))
    for name, want in zip(("s1", "s2", "s3"), np.split(a, [1, 3], axis=1)):
        assert_close(out[name], want)
    for name, want in zip(("e1", "e2"), np.split(a, 2, axis=1)):
        assert_close(out[name], want)
    for name, want in zip(("u1", "u2", "u3"), np.array_split(a, 3, axis=1)):  # 4 rows: 2, 1, 1
        assert_close(out[name], want)
    assert_close(out["st"], np.stack([a, c], -1))


def test_legacy_concat_split(layer_case):
    a = rng.standard_normal((2, 3, 3)).astype(np.float32)
    c = rng.standard_normal((4, 3, 3)).astype(np.float32)

    def layers(b):
        b.add_elementwise("cat", ["a", "c"], "cat", "CONCAT")
        b.add_split("sp", "cat", ["p1", "p2", "p3"])

    out = layer_case(layers, {"a": a, "c": c}, rank5=True, outputs=("cat", "p1", "p2", "p3"))
    cat = np.concatenate([a, c])
    assert_close(out["cat"][0, 0], cat)
    for i, name in enumerate(("p1", "p2", "p3")):
        assert_close(out[name][0, 0], cat[2 * i:2 * i + 2])


@pytest.mark.parametrize("kind", ["constant", "reflection", "replication"])
def test_padding(layer_case, kind):
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    out = layer_case(lambda b: b.add_padding("p", left=2, right=1, top=1, bottom=3, value=-2.0, input_name="x",
                                             output_name="out", padding_type=kind), {"x": x})
    mode = {"constant": "constant", "reflection": "reflect", "replication": "edge"}[kind]
    kw = {"constant_values": -2.0} if kind == "constant" else {}
    assert_close(out["out"], np.pad(x, ((0, 0), (1, 3), (2, 1)), mode=mode, **kw))


def test_constant_pad(layer_case):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)

    def layers(b):
        b.add_constant_pad("cp", ["x"], "cp", value=0.5, pad_amounts=[0, 1, 2, 0, 1, 3])
        b.add_constant_pad("ct", ["x"], "ct", value=-1.0, pad_amounts=[0, 0, 5, 0, 0, 6],
                           pad_to_given_output_size_mode=True)

    out = layer_case(layers, {"x": x}, outputs=("cp", "ct"))
    assert_close(out["cp"], np.pad(x, ((0, 1), (2, 0), (1, 3)), constant_values=0.5))
    assert_close(out["ct"], np.pad(x, ((0, 0), (2, 0), (0, 2)), constant_values=-1.0))


def test_crop_and_legacy_slice(layer_case):
    x = rng.standard_normal((3, 6, 7)).astype(np.float32)
    ref = np.zeros((3, 4, 3), np.float32)

    def layers(b):
        b.add_crop("c1", left=1, right=2, top=2, bottom=0, offset=[0, 0], input_names=["x"], output_name="c1")
        b.add_crop("c2", left=0, right=0, top=0, bottom=0, offset=[1, 3], input_names=["x", "ref"], output_name="c2")
        b.add_slice("sw", "x", "sw", "width", start_index=1, end_index=-1, stride=2)
        b.add_slice("sc", "x", "sc", "channel", start_index=0, end_index=3, stride=2)

    out = layer_case(layers, {"x": x, "ref": ref}, rank5=True, outputs=("c1", "c2", "sw", "sc"))
    assert_close(out["c1"][0, 0], x[:, 2:, 1:5])
    assert_close(out["c2"][0, 0], x[:, 1:5, 3:6])
    assert_close(out["sw"][0, 0], x[:, :, 1:-1:2])
    assert_close(out["sc"][0, 0], x[0:3:2])


def test_slice_static_dynamic_by_size(layer_case):
    x = rng.standard_normal((5, 6, 7)).astype(np.float32)
    begin = np.array([1, 0, 2], np.float32)
    end = np.array([4, 5, -1], np.float32)
    start = np.array([2], np.float32)

    def layers(b):
        b.add_slice_static("ss", "x", "ss", begin_ids=[1, 2, 3], end_ids=[3, -3, 2], strides=[2, 2, 2],
                           begin_masks=[True, False, True], end_masks=[False, True, True])
        b.add_slice_static("sn", "x", "sn", begin_ids=[4, 0, -1], end_ids=[0, 6, 0], strides=[-1, 1, -2],
                           begin_masks=[False, False, False], end_masks=[False, False, True],
                           squeeze_masks=[False, True, False])
        b.add_slice_dynamic("sd", ["x", "begin", "end"], "sd", strides=[1, 2, 1],
                            begin_masks=[False] * 3, end_masks=[False] * 3)
        b.add_slice_by_size("sb", ["x", "start"], "sb", axis=1, size=3)
        b.add_slice_dynamic("dd", ["x", "begin", "end"], "dd")  # the builder's 5-entry default strides and masks

    out = layer_case(layers, {"x": x, "begin": begin, "end": end, "start": start},
                     outputs=("ss", "sn", "sd", "sb", "dd"))
    assert_close(out["ss"], x[:3:2, 2::2, ::2])
    assert_close(out["sn"], x[4:0:-1, 0, -1::-2])
    assert_close(out["sd"], x[1:4, 0:5:2, 2:-1])
    assert_close(out["sb"], x[:, 2:5])
    assert_close(out["dd"], x[1:4, 0:5, 2:-1])


def test_reverse_reverse_seq_sliding_windows(layer_case):
    x = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    lengths = np.array([3, 1], np.float32)

    def layers(b):
        b.add_reverse("r", "x", "r", reverse_dim=[True, False, True])
        b.add_reverse_sequence("rs", ["x", "len"], "rs", batch_axis=0, seq_axis=1)
        b.add_sliding_windows("sw", "x", "sw", axis=1, window_size=2, step=1)

    out = layer_case(layers, {"x": x, "len": lengths}, outputs=("r", "rs", "sw"))
    assert_close(out["r"], x[::-1, :, ::-1])
    want = x.copy()
    for i, n in enumerate([3, 1]):
        want[i, :n] = x[i, :n][::-1]
    assert_close(out["rs"], want)
    assert_close(out["sw"], np.stack([x[:, i:i + 2] for i in range(3)], axis=1))


def test_band_part_and_triangles(layer_case):
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)

    def layers(b):
        b.add_matrix_band_part("bp", "x", "bp", num_lower=1, num_upper=2)
        b.add_lower_triangular("lt", "x", "lt", k=1)
        b.add_upper_triangular("ut", "x", "ut", k=-1)

    out = layer_case(layers, {"x": x}, outputs=("bp", "lt", "ut"))
    i, j = np.indices((4, 5))
    assert_close(out["bp"], x * ((i - j <= 1) & (j - i <= 2)))
    assert_close(out["lt"], np.tril(x, 1))
    assert_close(out["ut"], np.triu(x, -1))


def test_gather_family(layer_case):
    data = rng.standard_normal((4, 5, 3)).astype(np.float32)
    idx = np.array([[1, -1], [0, 2]], np.float32)
    along = rng.integers(0, 5, (4, 2, 3)).astype(np.float32)
    nd = np.array([[0, 1], [3, 4], [2, 0]], np.float32)

    def layers(b):
        b.add_gather("g", ["data", "idx"], "g", axis=1)
        b.add_gather_along_axis("ga", ["data", "along"], "ga", axis=1)
        b.add_gather_nd("gn", ["data", "nd"], "gn")

    out = layer_case(layers, {"data": data, "idx": idx, "along": along, "nd": nd}, outputs=("g", "ga", "gn"))
    assert_close(out["g"], np.take(data, idx.astype(int) % 5, axis=1))
    assert_close(out["ga"], np.take_along_axis(data, along.astype(int), axis=1))
    assert_close(out["gn"], data[nd[:, 0].astype(int), nd[:, 1].astype(int)])


@pytest.mark.parametrize("mode", ["UPDATE", "ADD", "SUB", "MUL", "DIV", "MAX", "MIN"])
def test_scatter_family(layer_case, mode):
    c = rng.uniform(1, 2, (4, 5)).astype(np.float32)
    idx = np.array([3, 0], np.float32)
    upd = rng.uniform(1, 2, (4, 2)).astype(np.float32)
    along_idx = np.array([[1, 3, 0, 2, 3], [0, 2, 1, 3, 0]], np.float32)
    along_upd = rng.uniform(1, 2, (2, 5)).astype(np.float32)
    nd_idx = np.array([[1, 2], [3, 4]], np.float32)
    nd_upd = rng.uniform(1, 2, (2,)).astype(np.float32)

    def layers(b):
        b.add_scatter("s", ["c", "idx", "upd"], "s", axis=1, mode=mode)
        b.add_scatter_along_axis("sa", ["c", "aidx", "aupd"], "sa", axis=0, mode=mode)
        b.add_scatter_nd("sn", ["c", "nidx", "nupd"], "sn", mode=mode)

    out = layer_case(layers, {"c": c, "idx": idx, "upd": upd, "aidx": along_idx, "aupd": along_upd,
                              "nidx": nd_idx, "nupd": nd_upd}, outputs=("s", "sa", "sn"))
    op = {"UPDATE": lambda o, u: u, "ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide,
          "MAX": np.maximum, "MIN": np.minimum}[mode]
    c64 = c.astype(np.float64)
    want = c64.copy()
    for k, i in enumerate([3, 0]):
        want[:, i] = op(want[:, i], upd[:, k])
    assert_close(out["s"], want)
    want = c64.copy()
    for r in range(2):
        for col in range(5):
            i = int(along_idx[r, col])
            want[i, col] = op(want[i, col], along_upd[r, col])
    assert_close(out["sa"], want)
    want = c64.copy()
    for k, (i, j) in enumerate(nd_idx.astype(int)):
        want[i, j] = op(want[i, j], nd_upd[k])
    assert_close(out["sn"], want)


def test_where_nonzero_one_hot(layer_case):
    x = np.array([[0, 1, 0], [2, 0, 3]], np.float32)
    ind = np.array([2, 0, -1, 5], np.float32)

    def layers(b):
        b.add_where_nonzero("w", "x", "w")
        b.add_one_hot("oh", ["ind"], "oh", one_hot_vector_size=4, axis=0, on_value=5.0, off_value=-1.0)

    out = layer_case(layers, {"x": x, "ind": ind}, outputs=("w", "oh"))
    assert_close(out["w"], np.argwhere(x))
    want = np.full((4, 4), -1.0)
    for i, v in enumerate([2, 0]):
        want[v, i] = 5.0
    assert_close(out["oh"], want)


REDUCE_ND = [
    ("sum", np.sum), ("prod", np.prod), ("mean", np.mean), ("max", np.max), ("min", np.min),
    ("l1", lambda v, axis, keepdims: np.abs(v).sum(axis=axis, keepdims=keepdims)),
    ("l2", lambda v, axis, keepdims: np.sqrt((v * v).sum(axis=axis, keepdims=keepdims))),
    ("sumsquare", lambda v, axis, keepdims: (v * v).sum(axis=axis, keepdims=keepdims)),
    ("logsum", lambda v, axis, keepdims: np.log(v.sum(axis=axis, keepdims=keepdims))),
    ("logsumexp", lambda v, axis, keepdims: np.log(np.exp(v).sum(axis=axis, keepdims=keepdims))),
]


@pytest.mark.parametrize("name,ref", REDUCE_ND, ids=[r[0] for r in REDUCE_ND])
def test_reduce_nd(layer_case, name, ref):
    x = rng.uniform(0.5, 1.5, (2, 3, 4)).astype(np.float32)

    def layers(b):
        getattr(b, f"add_reduce_{name}")("r", "x", "out", axes=[0, -1], keepdims=False, reduce_all=False)
        getattr(b, f"add_reduce_{name}")("k", "x", "keep", axes=[1], keepdims=True, reduce_all=False)
        getattr(b, f"add_reduce_{name}")("a", "x", "all", keepdims=False, reduce_all=True)

    out = layer_case(layers, {"x": x}, outputs=("out", "keep", "all"))
    v = x.astype(np.float64)
    assert_close(out["out"], ref(v, axis=(0, 2), keepdims=False))
    assert_close(out["keep"], ref(v, axis=(1,), keepdims=True))
    assert_close(out["all"], np.reshape(ref(v, axis=None, keepdims=False), (1,)))


LEGACY_AXES = [("CHW", (0, 1, 2)), ("HW", (1, 2)), ("C", (0,)), ("H", (1,)), ("W", (2,))]
LEGACY_MODES = ["sum", "avg", "prod", "logsum", "sumsquare", "L1", "L2", "max", "min", "argmax"]
LEGACY_REDUCE = [(a, axes, m) for a, axes in LEGACY_AXES for m in LEGACY_MODES if m != "argmax" or len(axes) == 1]


@pytest.mark.parametrize("axis,axes,mode", LEGACY_REDUCE, ids=[f"{a}-{m}" for a, _, m in LEGACY_REDUCE])
def test_legacy_reduce(layer_case, axis, axes, mode):
    x = rng.uniform(0.5, 1.5, (3, 4, 5)).astype(np.float32)
    out = layer_case(lambda b: b.add_reduce("r", "x", "out", axis, mode, epsilon=1e-3), {"x": x}, rank5=True)
    v = x.astype(np.float64)
    fn = {"sum": np.sum, "avg": np.mean, "prod": np.prod, "max": np.max, "min": np.min,
          "logsum": lambda a, axis, keepdims: np.log(a + 1e-3).sum(axis=axis, keepdims=keepdims),
          "sumsquare": lambda a, axis, keepdims: (a * a).sum(axis=axis, keepdims=keepdims),
          "L1": lambda a, axis, keepdims: np.abs(a).sum(axis=axis, keepdims=keepdims),
          "L2": lambda a, axis, keepdims: np.sqrt((a * a).sum(axis=axis, keepdims=keepdims)),
          "argmax": lambda a, axis, keepdims: np.expand_dims(np.argmax(a, axis=axis[0]), axis[0])}[mode]
    assert_close(out["out"][0, 0], fn(v, axis=axes, keepdims=True))


def test_arg_topk_sort_cumsum(layer_case):
    x = rng.standard_normal((3, 6)).astype(np.float32)

    def layers(b):
        b.add_argmax("am", "x", "am", axis=-1, keepdims=False)
        b.add_argmin("an", "x", "an", axis=0, keepdims=True)
        b.add_topk("tk", ["x"], ["tv", "ti"], k=2, axis=1)
        b.add_topk("bk", ["x"], ["bv", "bi"], k=3, axis=0, use_bottom_k=True)
        b.add_argsort("as", "x", "as", axis=1, descending=True)
        b.add_cumsum("cs", ["x"], "cs", axis=1, reverse=True, exclusive=True)

    out = layer_case(layers, {"x": x}, outputs=("am", "an", "tv", "ti", "bv", "bi", "as", "cs"))
    v = x.astype(np.float64)
    assert_close(out["am"], np.argmax(v, -1))
    assert_close(out["an"], np.argmin(v, 0)[None])
    order = np.argsort(-v, axis=1, kind="stable")
    assert_close(out["ti"], order[:, :2])
    assert_close(out["tv"], np.take_along_axis(v, order[:, :2], 1))
    low = np.argsort(v, axis=0, kind="stable")
    assert_close(out["bi"], low[:3])
    assert_close(out["bv"], np.take_along_axis(v, low[:3], 0))
    assert_close(out["as"], order)
    assert_close(out["cs"], np.cumsum(v[:, ::-1], 1)[:, ::-1] - v)


def test_constants_fill_range(layer_case):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    shape = np.array([3, 2], np.float32)
    end = np.array([7], np.float32)
    data = rng.standard_normal((2, 2, 3)).astype(np.float32)

    def layers(b):
        b.add_load_constant_nd("c", "c", data, (2, 2, 3))
        b.add_fill_like("fl", "x", "fl", value=1.5)
        b.add_fill_static("fs", "fs", (2, 4), value=-2.0)
        b.add_fill_dynamic("fd", "shape", "fd", value=3.0)
        b.add_range_static("rs", "rs", end=5, start=1, step=1.5)
        b.add_range_dynamic("rd", ["end"], "rd", start=2, step=2)

    out = layer_case(layers, {"x": x, "shape": shape, "end": end}, outputs=("c", "fl", "fs", "fd", "rs", "rd"))
    assert_close(out["c"], data)
    assert_close(out["fl"], np.full((2, 3), 1.5))
    assert_close(out["fs"], np.full((2, 4), -2.0))
    assert_close(out["fd"], np.full((3, 2), 3.0))
    assert_close(out["rs"], np.arange(1, 5, 1.5))
    assert_close(out["rd"], np.arange(2, 7, 2))


def test_legacy_load_constant(layer_case):
    x = rng.standard_normal((2, 1, 1)).astype(np.float32)
    data = rng.standard_normal((2, 3, 4)).astype(np.float32)

    def layers(b):
        b.add_load_constant("c", "c", data, (2, 3, 4))
        b.add_elementwise("a", ["c", "x"], "out", "ADD")

    out = layer_case(layers, {"x": x}, rank5=True)
    assert_close(out["out"], (data + x)[None, None])


def test_sequence_concat_and_four_value_reshape(layer_case):
    a = rng.standard_normal((2, 1, 3, 1, 1)).astype(np.float32)
    c = rng.standard_normal((1, 1, 3, 1, 1)).astype(np.float32)

    def layers(b):
        b.add_elementwise("cat", ["a", "c"], "cat", "SEQUENCE_CONCAT")
        b.add_reshape("r", "cat", "r", (9, 1, 1, 1), 0)

    out = layer_case(layers, {"a": a, "c": c}, outputs=("cat", "r"))
    cat = np.concatenate([a, c], axis=0)
    assert_close(out["cat"], cat)
    assert_close(out["r"], cat.reshape(9, 1, 1, 1, 1))


def test_dynamic_k_axis_depth_and_pads(layer_case):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    k, axis, depth = np.array([2], np.float32), np.array([0], np.float32), np.array([3], np.float32)
    pads = np.array([1, 0, 0, 2], np.float32)
    ind = np.array([2, 0], np.float32)

    def layers(b):
        b.add_topk("tk", ["x", "k"], ["tv", "ti"], axis=1)
        b.add_cumsum("cs", ["x", "axis"], "cs")
        b.add_one_hot("oh", ["ind", "depth"], "oh", axis=-1)
        b.add_constant_pad("cp", ["x", "pads"], "cp", value=9.0)

    out = layer_case(layers, {"x": x, "k": k, "axis": axis, "depth": depth, "pads": pads, "ind": ind},
                     outputs=("tv", "ti", "cs", "oh", "cp"))
    order = np.argsort(-x, axis=1, kind="stable")[:, :2]
    assert_close(out["ti"], order)
    assert_close(out["tv"], np.take_along_axis(x, order, 1))
    assert_close(out["cs"], np.cumsum(x.astype(np.float64), 0))
    assert_close(out["oh"], np.eye(3)[[2, 0]])
    assert_close(out["cp"], np.pad(x, ((1, 0), (0, 2)), constant_values=9.0))
