"""KVCache: constructors, set / append / get_k / get_v / len / seq_len, conversion, printing, errors."""

from __future__ import annotations

import io
import textwrap

import numpy as np
import pytest
import torch

from tensorlogic.errors import ScriptError
from tensorlogic.lang.attrs import get_attr
from tensorlogic.lang.builtins import BUILTINS
from tensorlogic.lang.builtins.kvcache import KVCache
from tensorlogic.lang.evaluator import ScriptInterpreter
from tensorlogic.lang.format import format_value
from tensorlogic.lang.values import BuiltinError, Context

CTX = Context(device="cpu")


def new(name: str, n) -> KVCache:
    return BUILTINS[f"KVCache::{name}"].fn(n)


def m(cache: KVCache, name: str, *args, ctx: Context = CTX):
    bound = get_attr(ctx, cache, name)
    assert bound.needs_ctx
    return bound.fn(ctx, bound.self_value, *args)


def error(fn, *args) -> str:
    with pytest.raises(BuiltinError) as e:
        fn(*args)
    return str(e.value)


def run(src: str) -> str:
    out = io.StringIO()
    ScriptInterpreter(Context(device="cpu", out=out, err=io.StringIO())).run(textwrap.dedent(src), "t.tl")
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- constructors


def test_constructors_dtype_layers_and_display():
    for name, dtype in (("new", torch.float16), ("new_f16", torch.float16), ("new_f32", torch.float32)):
        c = new(name, 3)
        assert isinstance(c, KVCache) and c.dtype == dtype and c.layers == [None, None, None]
        assert m(c, "len") == 3 and [m(c, "seq_len", i) for i in range(3)] == [0, 0, 0]
        assert format_value(c) == "<KVCache: 3 layers>"
    assert format_value(new("new_f32", 22)) == "<KVCache: 22 layers>"
    assert m(new("new_f32", 0), "len") == 0


def test_constructor_errors():
    f = BUILTINS["KVCache::new_f32"].fn
    assert error(f, 2.0) == "KVCache::new_f32: the number of layers must be an int, got float 2.0"
    assert error(f, "2") == 'KVCache::new_f32: the number of layers must be an int, got string "2"'
    assert error(f, True) == "KVCache::new_f32: the number of layers must be an int, got bool true"
    assert error(BUILTINS["KVCache::new_f16"].fn, -1) == (
        "KVCache::new_f16: the number of layers must be 0 or more, got -1"
    )


# ---------------------------------------------------------------------------------------------- methods


def test_set_then_get_returns_the_values_in_the_cache_dtype():
    c = new("new_f32", 2)
    k = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float32)
    v = torch.tensor([[5.0, 6.0], [7.0, 8.0]], dtype=torch.float32)
    assert m(c, "set", 1, k, v) is None
    gk, gv = m(c, "get_k", 1), m(c, "get_v", 1)
    assert gk.dtype == torch.float32 and gk.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert gv.dtype == torch.float32 and gv.tolist() == [[5.0, 6.0], [7.0, 8.0]]
    assert m(c, "seq_len", 1) == 2 and m(c, "seq_len", 0) == 0


def test_cache_keeps_copies():
    c = new("new_f32", 1)
    k = torch.zeros(2, 3, dtype=torch.float32)
    v = torch.ones(2, 3, dtype=torch.float32)
    m(c, "set", 0, k, v)
    k[0, 0] = 9.0  # assigning into the script's tensor after set
    got = m(c, "get_k", 0)
    got[1, 1] = 7.0  # and into the tensor get_k returned
    assert m(c, "get_k", 0).tolist() == [[0.0] * 3, [0.0] * 3]


def test_set_replaces_and_layers_are_independent():
    c = new("new_f32", 2)
    ones, zeros = torch.ones(4, 2, dtype=torch.float32), torch.zeros(4, 2, dtype=torch.float32)
    m(c, "set", 0, ones, ones * 2)
    m(c, "set", 1, zeros, zeros + 3)
    m(c, "set", 0, torch.full((1, 2), 5.0), torch.full((1, 2), 6.0))  # replaces, does not concatenate
    assert m(c, "get_k", 0).tolist() == [[5.0, 5.0]] and m(c, "get_v", 0).tolist() == [[6.0, 6.0]]
    assert m(c, "get_k", 1).tolist() == [[0.0, 0.0]] * 4 and m(c, "get_v", 1).tolist() == [[3.0, 3.0]] * 4


def test_append_concatenates_along_the_sequence():
    c = new("new_f32", 2)
    k1 = torch.arange(6, dtype=torch.float64).reshape(2, 3)  # [[0,1,2],[3,4,5]]
    k2 = torch.tensor([[10.0, 11.0, 12.0]], dtype=torch.float64)
    k3 = torch.tensor([[20.0, 21.0, 22.0], [23.0, 24.0, 25.0]], dtype=torch.float64)
    v1, v2, v3 = -k1, -k2, -k3
    m(c, "append", 1, k1.float(), v1.float())  # on an empty layer: the same as set
    assert m(c, "seq_len", 1) == 2
    m(c, "append", 1, k2.float(), v2.float())
    m(c, "append", 1, k3.float(), v3.float())
    assert m(c, "seq_len", 1) == 5 and m(c, "seq_len", 0) == 0
    want_k = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [10.0, 11.0, 12.0], [20.0, 21.0, 22.0], [23.0, 24.0, 25.0]]
    assert m(c, "get_k", 1).tolist() == want_k
    assert m(c, "get_v", 1).tolist() == [[-x for x in row] for row in want_k]
    assert torch.equal(m(c, "get_k", 1).double(), torch.cat([k1, k2, k3]))


def test_append_works_on_higher_rank_tensors():
    c = new("new_f32", 1)
    a = torch.randn(3, 2, 4, dtype=torch.float64)
    b = torch.randn(1, 2, 4, dtype=torch.float64)
    m(c, "append", 0, a.float(), (a * 2).float())
    m(c, "append", 0, b.float(), (b * 2).float())
    assert torch.allclose(m(c, "get_k", 0).double(), torch.cat([a, b]), atol=1e-6)
    assert torch.allclose(m(c, "get_v", 0).double(), torch.cat([a, b]) * 2, atol=1e-6)


def test_f16_cache_converts_tensors_and_lists():
    c = new("new_f16", 1)
    k = torch.tensor([[0.1, 0.2]], dtype=torch.float32)
    m(c, "set", 0, k, [[1, 2]])  # a list of ints is a tensor argument too
    gk = m(c, "get_k", 0)
    assert gk.dtype == torch.float16 and gk.tolist() == [[float(np.float16(0.1)), float(np.float16(0.2))]]
    assert m(c, "get_v", 0).dtype == torch.float16 and m(c, "get_v", 0).tolist() == [[1.0, 2.0]]
    c32 = new("new_f32", 1)
    m(c32, "set", 0, torch.tensor([[0.5]], dtype=torch.float16), torch.tensor([[2.0]], dtype=torch.float16))
    assert m(c32, "get_k", 0).dtype == torch.float32 and m(c32, "get_k", 0).tolist() == [[0.5]]


def test_f16_cache_warns_when_a_value_overflows():
    err = io.StringIO()
    ctx = Context(device="cpu", err=err)
    c = new("new_f16", 1)
    big = torch.tensor([[70000.0, 1.0]], dtype=torch.float32)
    m(c, "set", 0, big, torch.ones(1, 2), ctx=ctx)
    assert m(c, "get_k", 0, ctx=ctx)[0, 0].item() == float("inf")
    assert err.getvalue() == (
        "tl: warning: KVCache.set: k overflows float16 (max 65504) when stored in a float16 cache\n"
    )
    m(c, "set", 0, torch.ones(1, 2), torch.ones(1, 2), ctx=ctx)  # nothing overflows: no second warning
    assert err.getvalue().count("warning") == 1


# ---------------------------------------------------------------------------------------------- errors


def test_layer_index_errors():
    c = new("new_f32", 2)
    t = torch.ones(1, 2)
    assert error(m, c, "set", 2, t, t) == "KVCache.set: layer 2 is out of range (the cache has 2 layers)"
    assert error(m, c, "append", -1, t, t) == "KVCache.append: layer -1 is out of range (the cache has 2 layers)"
    assert error(m, c, "get_v", 5) == "KVCache.get_v: layer 5 is out of range (the cache has 2 layers)"
    assert error(m, c, "get_k", 1.0) == "KVCache.get_k: the layer must be an int, got float 1.0"
    assert error(m, c, "seq_len", "0") == 'KVCache.seq_len: the layer must be an int, got string "0"'


def test_reading_an_empty_layer_is_an_error():
    c = new("new_f32", 2)
    m(c, "set", 0, torch.ones(1, 2), torch.ones(1, 2))
    assert error(m, c, "get_k", 1) == "KVCache.get_k: layer 1 is empty (nothing was set or appended there yet)"
    assert error(m, c, "get_v", 1) == "KVCache.get_v: layer 1 is empty (nothing was set or appended there yet)"


def test_argument_type_errors():
    c = new("new_f32", 1)
    t = torch.ones(2, 2)
    assert error(m, c, "set", 0, "k", t) == "KVCache.set: k must be a tensor, got string"
    assert error(m, c, "append", 0, t, None) == "KVCache.append: v must be a tensor, got void"
    assert error(m, c, "set", 0, t, torch.ones(2, 2, dtype=torch.bool)) == (
        "KVCache.set: v must be a real-valued tensor, got bool tensor"
    )
    assert error(m, c, "set", 0, torch.tensor(1.0), t) == (
        "KVCache.set: k must have a sequence dimension, got a 0-dimensional tensor"
    )


def test_shape_errors():
    c = new("new_f32", 1)
    assert error(m, c, "set", 0, torch.ones(3, 4), torch.ones(2, 4)) == (
        "KVCache.set: k and v must have the same sequence length (dimension 0), got k [3, 4] and v [2, 4]"
    )
    m(c, "set", 0, torch.ones(3, 4), torch.ones(3, 8))
    assert error(m, c, "append", 0, torch.ones(1, 5), torch.ones(1, 8)) == (
        "KVCache.append: the layer holds k of shape [3, 4]; the new k has shape [1, 5] "
        "(all but the first dimension must match)"
    )
    assert error(m, c, "append", 0, torch.ones(1, 4), torch.ones(1, 2, 4)) == (
        "KVCache.append: the layer holds v of shape [3, 8]; the new v has shape [1, 2, 4] "
        "(all but the first dimension must match)"
    )
    assert m(c, "seq_len", 0) == 3  # a failed append leaves the layer as it was


def test_unknown_method():
    assert error(get_attr, CTX, new("new_f32", 1), "get") == (
        "a KVCache has no method 'get' (it has set, append, get_k, get_v, len, seq_len)"
    )


# ---------------------------------------------------------------------------------------------- scripts


def test_script_set_append_and_read_back():
    out = run(
        """
        main {
            let cache = KVCache::new_f32(2)
            print(cache)
            cache.set(0, f32::ones([2, 3]), f32::zeros([2, 3]))
            cache.append(0, f32::zeros([1, 3]), f32::ones([1, 3]))
            cache.append(1, f32::ones([4, 2]), f32::ones([4, 2]))
            let k = cache.get_k(0)
            let v = cache.get_v(0)
            print(shape(k), shape(v), shape(cache.get_k(1)))
            print(k[1, 2], k[2, 0], v[0, 0], v[2, 1])
            print(cache.len(), cache.seq_len(0), cache.seq_len(1))
        }
        """
    )
    assert out == "<KVCache: 2 layers>\n[3, 3] [3, 3] [4, 2]\n1.0000 0.0000 0.0000 1.0000\n2 3 4\n"


def test_script_errors_name_the_method_and_line():
    with pytest.raises(ScriptError) as info:
        run(
            """
            main {
                let cache = KVCache::new_f16(2)
                let k = cache.get_k(1)
            }
            """
        )
    assert info.value.message == "KVCache.get_k: layer 1 is empty (nothing was set or appended there yet)"
    assert info.value.line == 4
    with pytest.raises(ScriptError) as info:
        run(
            """
            main {
                let cache = KVCache::new_f16(2)
                cache.set(0, f16::ones([1, 2]))
            }
            """
        )
    assert info.value.message.startswith("bad arguments for KVCache.set(layer, k, v)")
