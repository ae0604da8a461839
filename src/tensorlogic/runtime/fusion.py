"""Plan rewrites for the compiled path: op patterns replaced by one step that calls a fused primitive.

Each pass matches an exact pattern of plan steps whose intermediates nobody else reads, and replaces
it with one ``Fused`` step placed where the pattern's last step was. A fused step calls a torch fused
primitive (cuDNN's conv+bias+relu and conv+bias+add+relu on CUDA, oneDNN's weight-prepacked
conv with a unary or binary post-op on the CPU, ``torch._addmm_activation``,
``F.scaled_dot_product_attention``) or a registered op on merged constants; when the values met at run
time do not fit the primitive (dtype, padding, shapes), it runs the original steps instead, so the
result never depends on whether a pattern fired. Passes:

- ``conv_add_act``: conv → add(other) → relu (CUDA); conv → add → [unary] (CPU);
- ``conv_act``: conv → relu (CUDA); conv → relu/relu6/clip/sigmoid/tanh/silu/leaky_relu/gelu (CPU);
- ``conv_prepack``: any other conv, through oneDNN with its weight prepacked (CPU);
- ``attention``: matmul → [mul|real_div by a scalar] → [add mask] → softmax(last axis) → matmul;
- ``linear_act``: linear(bias) → relu | gelu (tanh form on CUDA, exact on CPU: what each kernel computes);
- ``merge_linear``: linears reading the same input (Q, K, V) → one linear on concatenated weights.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..mil import ir
from .interpreter import BlockPlan, Ref, Step, _as_outputs, _as_tensor, _outer_refs, _refs
from .ops.conv import resolve_pads

CHANNELS_LAST = torch.channels_last

# CPU (oneDNN) post-ops: MIL activation → (attr, scalars, algorithm), from the step's fixed params.
_CPU_UNARY: dict[str, Callable[[dict], tuple[str, list, str | None] | None]] = {
    "relu": lambda p: ("relu", [], None),
    "relu6": lambda p: ("hardtanh", [0.0, 6.0], None),
    "clip": lambda p: ("hardtanh", [float(p["alpha"]), float(p["beta"])], None)
    if isinstance(p.get("alpha"), float) and isinstance(p.get("beta"), float) else None,
    "sigmoid": lambda p: ("sigmoid", [], None),
    "tanh": lambda p: ("tanh", [], None),
    "silu": lambda p: ("swish", [], None),
    "leaky_relu": lambda p: ("leaky_relu", [float(p["alpha"])], None) if isinstance(p.get("alpha"), float) else None,
    "gelu": lambda p: {"EXACT": ("gelu", [], "none"), "TANH_APPROXIMATION": ("gelu", [], "tanh")}.get(
        p.get("mode", "EXACT")),
}


class Fused:
    """A fused step's callable: the fast primitive, or the original steps when it does not apply."""

    def __init__(self, kind: str, steps: Sequence[Step], externals: Sequence[str],
                 fast: Callable[..., Any] | None):
        self.kind = kind
        self.steps = list(steps)
        self.externals = list(externals)  # names of the values the pattern reads, in argument order
        self.fast = fast
        self.fast_calls = 0  # how often the primitive ran (tests check a pattern really fired)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:  # called by the interpreter, as in0=..., in1=...
            args = tuple(kwargs[f"in{i}"] for i in range(len(self.externals)))
        if self.fast is not None:
            out = self.fast(*args)
            if out is not None:
                self.fast_calls += 1
                return out
        return self.run_steps(args)

    def run_steps(self, args: Sequence[Any]) -> Any:
        """The pattern's original steps, one by one, as the interpreter runs them."""
        env = dict(zip(self.externals, args))
        result: Any = None
        for step in self.steps:
            kwargs = dict(step.fixed)
            for name, src in step.dynamic.items():
                kwargs[name] = env[src.name]
            values = _as_outputs(step.fn(**kwargs), len(step.outputs))
            for out, value, dtype, rounding in zip(step.outputs, values, step.out_dtypes, step.out_rounding):
                if dtype is not None:
                    value = _as_tensor(value, dtype, value.device if isinstance(value, torch.Tensor) else "cpu")
                    if rounding is not None and isinstance(value, torch.Tensor):
                        value = value.to(rounding).to(dtype)
                env[out] = value
            result = values[0] if len(values) == 1 else tuple(env[o] for o in step.outputs)
        return result

    def __repr__(self) -> str:
        return f"<fused {self.kind}: {' → '.join(s.op_type for s in self.steps)}>"


# --- plan analysis -----------------------------------------------------------------------------


class _Index:
    """Who makes and who reads each variable of one block."""

    def __init__(self, body: BlockPlan):
        self.steps = body.steps
        self.producer: dict[str, int] = {}
        self.readers: dict[str, list[int]] = {}
        self.uses: Counter[str] = Counter()
        for i, step in enumerate(body.steps):
            for src in step.dynamic.values():
                for name in _refs(src):
                    self.uses[name] += 1
                    self.readers.setdefault(name, []).append(i)
            for block in step.blocks:
                self.uses.update(_outer_refs(block))
            for out in step.outputs:
                self.producer[out] = i
        for src in body.outputs:
            self.uses.update(_refs(src))
            self.uses.update(_refs(src))  # a block output is never private to a pattern

    def private(self, name: str) -> Step | None:
        """The step making ``name`` when that step is plain and ``name`` has exactly one reader."""
        i = self.producer.get(name)
        if i is None or self.uses[name] != 1:
            return None
        step = self.steps[i]
        return step if _plain(step) and len(step.outputs) == 1 else None


def _plain(step: Step) -> bool:
    return (not step.blocks and not step.params and not isinstance(step.fn, Fused)
            and all(isinstance(s, Ref) for s in step.dynamic.values()))


def _ref(step: Step, name: str) -> str | None:
    src = step.dynamic.get(name)
    return src.name if isinstance(src, Ref) else None


def _only_dynamic(step: Step, *names: str) -> bool:
    return set(step.dynamic) == set(names)


def _fused_step(kind: str, steps: Sequence[Step], externals: Sequence[str], fast: Callable | None) -> Step:
    last = steps[-1]
    fn = Fused(kind, steps, externals, fast)
    return Step(
        op_type=kind,
        name=last.name,
        fn=fn,
        fixed={},
        dynamic={f"in{i}": Ref(n) for i, n in enumerate(externals)},
        params={},
        outputs=last.outputs,
        out_dtypes=last.out_dtypes,
        out_rounding=last.out_rounding,
    )


def _rewrite(body: BlockPlan, replace: dict[int, Step], drop: set[int]) -> BlockPlan:
    steps = [replace.get(i, s) for i, s in enumerate(body.steps) if i not in drop]
    return BlockPlan(body.inputs, steps, body.outputs, body.output_names)


# --- convolutions ------------------------------------------------------------------------------


def _conv_ok(step: Step | None, device: torch.device) -> bool:
    if step is None or step.op_type != "conv" or not _only_dynamic(step, "x"):
        return False
    w = step.fixed.get("weight")
    b = step.fixed.get("bias")
    if not isinstance(w, torch.Tensor) or w.dim() != 4 or (b is not None and not isinstance(b, torch.Tensor)):
        return False
    dtypes = (torch.float16, torch.float32) if device.type == "cuda" else (torch.float32,)
    return w.dtype in dtypes and step.out_dtypes[0] == w.dtype and (b is None or b.dtype == w.dtype)


class _ConvPrimitive:
    """conv(x) [+ z] [→ activation] through cuDNN (CUDA) or oneDNN with a prepacked weight (CPU)."""

    def __init__(self, conv: Step, device: torch.device, unary: tuple[str, list, str | None] | None,
                 add: bool, extra_bias: torch.Tensor | None = None):
        f = conv.fixed
        self.weight: torch.Tensor = f["weight"]
        self.bias: torch.Tensor | None = f.get("bias")
        if extra_bias is not None and self.bias is not None:
            self.bias = self.bias + extra_bias  # the addend conv's bias (see conv_add_act)
        self.strides = list(f.get("strides") or (1, 1))
        self.dilations = list(f.get("dilations") or (1, 1))
        self.pad_type = f.get("pad_type", "valid")
        self.pad = f.get("pad")
        self.groups = int(f.get("groups", 1))
        self.cuda = device.type == "cuda"
        self.unary = unary
        self.add = add
        self.kernel = list(self.weight.shape[2:])
        if self.cuda:
            self.weight = self.weight.contiguous(memory_format=CHANNELS_LAST)
        self.packed: torch.Tensor | None = None
        self.failed = False

    def _padding(self, x: torch.Tensor) -> list[int] | None:
        try:
            pads = resolve_pads(self.pad_type, self.pad, x.shape[2:], self.kernel, self.strides, self.dilations)
        except ValueError:
            return None
        if any(a != b or a < 0 for a, b in pads):
            return None  # asymmetric or cropping: the registered conv pads explicitly
        return [a for a, _ in pads]

    def _out_shape(self, x: torch.Tensor, padding: list[int]) -> tuple[int, ...]:
        spatial = [
            (d + 2 * p - dil * (k - 1) - 1) // s + 1
            for d, p, dil, k, s in zip(x.shape[2:], padding, self.dilations, self.kernel, self.strides)
        ]
        return (x.shape[0], self.weight.shape[0], *spatial)

    def __call__(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor | None:
        w = self.weight
        if (x.dim() != 4 or x.dtype != w.dtype or x.device != w.device or x.numel() == 0
                or x.shape[1] != w.shape[1] * self.groups):
            return None
        padding = self._padding(x)
        if padding is None:
            return None
        if self.add:
            if (not isinstance(z, torch.Tensor) or z.dtype != w.dtype or z.device != w.device
                    or tuple(z.shape) != self._out_shape(x, padding)):
                return None
            z = z.contiguous(memory_format=CHANNELS_LAST)
        x = x.contiguous(memory_format=CHANNELS_LAST)
        if self.failed:
            return None
        try:
            return self._primitive(x, z, padding)
        except RuntimeError:
            # A primitive this build cannot run for these values (an algorithm cuDNN or oneDNN lacks):
            # the original steps run from now on.
            self.failed = True
            return None

    def _primitive(self, x: torch.Tensor, z: torch.Tensor | None, padding: list[int]) -> torch.Tensor:
        w = self.weight
        if self.cuda:
            if self.add:
                return torch.ops.aten.cudnn_convolution_add_relu(
                    x, w, z, 1.0, self.bias, self.strides, padding, self.dilations, self.groups)
            return torch.ops.aten.cudnn_convolution_relu(x, w, self.bias, self.strides, padding, self.dilations,
                                                         self.groups)
        if self.packed is None:
            # oneDNN's blocked weight layout, chosen for the first input size and reused for any other.
            self.packed = torch.ops.mkldnn._reorder_convolution_weight(
                w, padding, self.strides, self.dilations, self.groups, list(x.shape))
        attr, scalars, algorithm = self.unary or ("none", [], None)
        if self.add:
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, z, self.packed, self.bias, padding, self.strides, self.dilations, self.groups, "add", None,
                None if self.unary is None else attr, scalars, algorithm)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed, self.bias, padding, self.strides, self.dilations, self.groups, attr, scalars, algorithm)


def _unary(step: Step, device: torch.device) -> tuple[str, list, str | None] | None:
    """The post-op an activation step maps to on ``device``, or None."""
    if not _only_dynamic(step, "x"):
        return None
    if device.type == "cuda":
        return ("relu", [], None) if step.op_type == "relu" else None
    if device.type == "cpu" and step.op_type in _CPU_UNARY:
        return _CPU_UNARY[step.op_type](step.fixed)
    return None


def _cuda_conv_fusion(device: torch.device) -> bool:
    return device.type == "cuda" and torch.backends.cudnn.is_available()


def _cpu_conv_fusion(device: torch.device) -> bool:
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                                                        "_convolution_pointwise")


def conv_add_act(body: BlockPlan, device: torch.device, var_types: dict[str, ir.ValueType]) -> tuple[BlockPlan, int]:
    """conv → add → [activation] as one fused convolution."""
    if not (_cuda_conv_fusion(device) or _cpu_conv_fusion(device)):
        return body, 0
    idx = _Index(body)
    replace: dict[int, Step] = {}
    drop: set[int] = set()
    fused = 0
    for i, step in enumerate(body.steps):
        if i in drop or not _plain(step):
            continue
        act: Step | None = None
        add = step
        unary = None
        if step.op_type != "add":
            unary = _unary(step, device)
            src = _ref(step, "x")
            add = idx.private(src) if unary is not None and src else None  # type: ignore[assignment]
            if add is None or add.op_type != "add":
                continue
            act = step
        elif device.type == "cuda":
            continue  # cuDNN fuses the add only together with a relu
        else:
            readers = idx.readers.get(step.outputs[0], [])
            if len(readers) == 1 and _unary(body.steps[readers[0]], device) is not None:
                continue  # the activation after it anchors the longer pattern
        x_name, y_name = _ref(add, "x"), _ref(add, "y")
        if not _only_dynamic(add, "x", "y") or not x_name or not y_name or x_name == y_name:
            continue
        # Of two convs, fuse the later one: the other is then computed first, as the addend.
        cands = [(idx.producer.get(n, -1), n, other) for n, other in ((x_name, y_name), (y_name, x_name))]
        chosen = None
        for _, name, other in sorted(cands, reverse=True):
            conv = idx.private(name)
            if _conv_ok(conv, device) and idx.producer[name] not in drop:
                chosen = (conv, name, other)
                break
        if chosen is None:
            continue
        conv, _, other = chosen
        dtypes = {conv.out_dtypes[0], add.out_dtypes[0]} | ({act.out_dtypes[0]} if act else set())
        if len(dtypes) != 1:
            continue
        steps = [conv, add] + ([act] if act else [])
        externals = [conv.dynamic["x"].name, other]
        # When the addend is another conv's output (a projection shortcut), its bias moves into the fused
        # conv's: the addend conv then needs no bias pass of its own.
        addend = idx.private(other)
        extra = None
        j = idx.producer.get(other, -1)
        if (_conv_ok(addend, device) and isinstance(addend.fixed.get("bias"), torch.Tensor)
                and isinstance(conv.fixed.get("bias"), torch.Tensor) and j not in drop and j not in replace
                and addend.fixed["bias"].shape == conv.fixed["bias"].shape):
            extra = addend.fixed["bias"]
            replace[j] = Step(**{**addend.__dict__, "fixed": {k: v for k, v in addend.fixed.items() if k != "bias"}})
            steps.insert(1, Step(op_type="add", name=other, fn=add.fn, fixed={"y": extra.reshape(-1, 1, 1)},
                                 dynamic={"x": Ref(other)}, params={}, outputs=(other,),
                                 out_dtypes=addend.out_dtypes, out_rounding=addend.out_rounding))
        prim = _ConvPrimitive(conv, device, unary, add=True, extra_bias=extra)
        kind = "conv+add" + (f"+{act.op_type}" if act else "")
        replace[i] = _fused_step(kind, steps, externals, prim)
        fused += 1
        drop.update(idx.producer[s.outputs[0]] for s in ((conv, add) if act else (conv,)))
    return _rewrite(body, replace, drop), fused


def conv_act(body: BlockPlan, device: torch.device, var_types: dict[str, ir.ValueType]) -> tuple[BlockPlan, int]:
    """conv → activation as one fused convolution."""
    if not (_cuda_conv_fusion(device) or _cpu_conv_fusion(device)):
        return body, 0
    idx = _Index(body)
    replace: dict[int, Step] = {}
    drop: set[int] = set()
    for i, step in enumerate(body.steps):
        if not _plain(step):
            continue
        unary = _unary(step, device)
        src = _ref(step, "x")
        if unary is None or not src:
            continue
        conv = idx.private(src)
        if not _conv_ok(conv, device) or conv.out_dtypes[0] != step.out_dtypes[0]:
            continue
        prim = _ConvPrimitive(conv, device, unary, add=False)
        replace[i] = _fused_step(f"conv+{step.op_type}", [conv, step], [conv.dynamic["x"].name], prim)
        drop.add(idx.producer[src])
    return _rewrite(body, replace, drop), len(replace)


def conv_prepack(body: BlockPlan, device: torch.device,
                 var_types: dict[str, ir.ValueType]) -> tuple[BlockPlan, int]:
    """A conv left alone by the other passes, through oneDNN with its weight prepacked (CPU)."""
    if not _cpu_conv_fusion(device):
        return body, 0
    replace: dict[int, Step] = {}
    for i, step in enumerate(body.steps):
        if _plain(step) and _conv_ok(step, device):
            prim = _ConvPrimitive(step, device, None, add=False)
            replace[i] = _fused_step("conv", [step], [step.dynamic["x"].name], prim)
    return _rewrite(body, replace, set()), len(replace)


# --- linear layers ---------------------------------------------------------------------------


def _linear_ok(step: Step | None) -> bool:
    if step is None or step.op_type != "linear" or not _only_dynamic(step, "x"):
        return False
    w, b = step.fixed.get("weight"), step.fixed.get("bias")
    return (isinstance(w, torch.Tensor) and w.dim() == 2 and w.is_floating_point()
            and (b is None or (isinstance(b, torch.Tensor) and b.shape == (w.shape[0],) and b.dtype == w.dtype))
            and step.out_dtypes[0] == w.dtype)


# The GELU ``torch._addmm_activation`` applies: cuBLASLt's epilogue (and its CUDA fallback) is the tanh
# form, the CPU kernel the exact one.
_ADDMM_GELU = {"cuda": "TANH_APPROXIMATION", "cpu": "EXACT"}


def linear_act(body: BlockPlan, device: torch.device, var_types: dict[str, ir.ValueType]) -> tuple[BlockPlan, int]:
    """linear(bias) → relu | gelu (in the form the device's kernel computes) as one GEMM with its epilogue."""
    idx = _Index(body)
    replace: dict[int, Step] = {}
    drop: set[int] = set()
    for i, step in enumerate(body.steps):
        if not _plain(step) or not _only_dynamic(step, "x"):
            continue
        if step.op_type == "relu":
            gelu = False
        elif step.op_type == "gelu" and step.fixed.get("mode", "EXACT") == _ADDMM_GELU.get(device.type):
            gelu = True
        else:
            continue
        src = _ref(step, "x")
        lin = idx.private(src) if src else None
        if not _linear_ok(lin) or lin.fixed.get("bias") is None or lin.out_dtypes[0] != step.out_dtypes[0]:
            continue
        w, b = lin.fixed["weight"], lin.fixed["bias"]
        wt = w.t()

        def fast(x: torch.Tensor, w=w, wt=wt, b=b, gelu=gelu) -> torch.Tensor | None:
            if x.dtype != w.dtype or x.device != w.device or x.dim() < 1 or x.shape[-1] != w.shape[1] \
                    or x.numel() == 0:
                return None
            y = torch._addmm_activation(b, x.reshape(-1, w.shape[1]), wt, use_gelu=gelu)
            return y.reshape(*x.shape[:-1], w.shape[0])

        replace[i] = _fused_step(f"linear+{step.op_type}", [lin, step], [lin.dynamic["x"].name], fast)
        drop.add(idx.producer[src])
    return _rewrite(body, replace, drop), len(replace)


class _SplitLinear:
    """One linear on weights concatenated along the output axis, split back into its parts."""

    def __init__(self, linear: Callable[..., Any], sizes: list[int]):
        self.linear = linear
        self.sizes = sizes

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> tuple:
        return tuple(self.linear(x=x, weight=weight, bias=bias).split(self.sizes, dim=-1))


def merge_linear(body: BlockPlan, device: torch.device, var_types: dict[str, ir.ValueType]) -> tuple[BlockPlan, int]:
    """Linears that read the same input (attention's Q, K, V) as one wider linear."""
    groups: dict[tuple, list[int]] = {}
    for i, step in enumerate(body.steps):
        if _plain(step) and _linear_ok(step):
            w, b = step.fixed["weight"], step.fixed.get("bias")
            key = (step.dynamic["x"].name, w.dtype, w.device, w.shape[1], b is None, step.fn)
            groups.setdefault(key, []).append(i)
    replace: dict[int, Step] = {}
    drop: set[int] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        steps = [body.steps[i] for i in members]
        weight = torch.cat([s.fixed["weight"] for s in steps])
        bias = None if steps[0].fixed.get("bias") is None else torch.cat([s.fixed["bias"] for s in steps])
        fixed = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        first = steps[0]
        replace[members[0]] = Step(
            op_type="linear*" + str(len(steps)),
            name=first.name,
            fn=_SplitLinear(first.fn, [s.fixed["weight"].shape[0] for s in steps]),
            fixed=fixed,
            dynamic=dict(first.dynamic),
            params={},
            outputs=tuple(s.outputs[0] for s in steps),
            out_dtypes=tuple(s.out_dtypes[0] for s in steps),
            out_rounding=tuple(s.out_rounding[0] for s in steps),
        )
        drop.update(members[1:])
    return _rewrite(body, replace, drop), len(replace)


# --- attention ---------------------------------------------------------------------------------


def _scalar(step: Step, name: str) -> float | None:
    v = step.fixed.get(name)
    if isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_floating_point():
        return float(v.reshape(()).item())
    return None


def _last_axis(step: Step, var_types: dict[str, ir.ValueType]) -> bool:
    axis = step.fixed.get("axis", -1)
    if axis == -1:
        return True
    vtype = var_types.get(step.outputs[0])
    return isinstance(vtype, ir.TensorType) and vtype.shape is not None and axis == len(vtype.shape) - 1


def attention(body: BlockPlan, device: torch.device, var_types: dict[str, ir.ValueType]) -> tuple[BlockPlan, int]:
    """matmul → [scale] → [mask] → softmax → matmul as ``F.scaled_dot_product_attention``."""
    idx = _Index(body)
    replace: dict[int, Step] = {}
    drop: set[int] = set()
    for i, m2 in enumerate(body.steps):
        if not (_plain(m2) and m2.op_type == "matmul" and _only_dynamic(m2, "x", "y")
                and not m2.fixed.get("transpose_x", False)):
            continue
        steps = [m2]
        sm = idx.private(_ref(m2, "x") or "")
        if sm is None or sm.op_type != "softmax" or not _only_dynamic(sm, "x") or not _last_axis(sm, var_types):
            continue
        steps.insert(0, sm)
        cur = idx.private(_ref(sm, "x") or "")
        mask_name: str | None = None
        mask_const: torch.Tensor | None = None
        if cur is not None and cur.op_type == "add":
            names = [_ref(cur, "x"), _ref(cur, "y")]
            inner = [idx.private(n) if n else None for n in names]
            pick = next((k for k in (0, 1) if inner[k] is not None and inner[k].op_type in ("mul", "real_div",
                                                                                             "matmul")), None)
            if pick is None:
                continue
            other = "y" if pick == 0 else "x"
            if other in cur.dynamic:
                mask_name = _ref(cur, other)
            elif isinstance(cur.fixed.get(other), torch.Tensor):
                mask_const = cur.fixed[other]
            else:
                continue
            steps.insert(0, cur)
            cur = inner[pick]
        scale = 1.0
        if cur is not None and cur.op_type in ("mul", "real_div") and _only_dynamic(cur, "x"):
            c = _scalar(cur, "y")
            if c is None or (cur.op_type == "real_div" and c == 0.0):
                continue
            scale = c if cur.op_type == "mul" else 1.0 / c
            steps.insert(0, cur)
            cur = idx.private(_ref(cur, "x") or "")
        m1 = cur
        if m1 is None or m1.op_type != "matmul" or not _only_dynamic(m1, "x", "y"):
            continue
        steps.insert(0, m1)
        if any(idx.producer[s.outputs[0]] in drop for s in steps) or \
                len({s.out_dtypes[0] for s in steps}) != 1 or not math.isfinite(scale):
            continue
        externals = [m1.dynamic["x"].name, m1.dynamic["y"].name, m2.dynamic["y"].name]
        if mask_name is not None:
            externals.append(mask_name)
        fast = _sdpa(bool(m1.fixed.get("transpose_x", False)), bool(m1.fixed.get("transpose_y", False)),
                     bool(m2.fixed.get("transpose_y", False)), scale, mask_const, steps[-1].out_dtypes[0])
        replace[i] = _fused_step("attention", steps, externals, fast)
        drop.update(idx.producer[s.outputs[0]] for s in steps[:-1])
    return _rewrite(body, replace, drop), len(replace)


def _sdpa(tq: bool, tk: bool, tv: bool, scale: float, mask_const: torch.Tensor | None,
          out_dtype: torch.dtype | None) -> Callable[..., torch.Tensor | None]:
    def fast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
        mask = mask_const if mask is None else mask
        if q.dim() < 2 or not (q.dim() == k.dim() == v.dim()):
            return None
        q = q.transpose(-1, -2) if tq else q
        k = k if tk else k.transpose(-1, -2)  # SDPA takes keys as [..., S, E]
        v = v.transpose(-1, -2) if tv else v
        dt = q.dtype
        if (not dt.is_floating_point or k.dtype != dt or v.dtype != dt or dt != out_dtype
                or (q.device.type == "cpu" and dt != torch.float32)):
            return None
        if (q.shape[:-2] != k.shape[:-2] or q.shape[:-2] != v.shape[:-2] or q.shape[-1] != k.shape[-1]
                or k.shape[-2] != v.shape[-2] or q.numel() == 0 or k.numel() == 0):
            return None
        if mask is not None:
            scores = (*q.shape[:-1], k.shape[-2])
            if mask.dtype != dt or mask.device != q.device or mask.dim() > len(scores):
                return None
            try:
                if torch.broadcast_shapes(mask.shape, scores) != torch.Size(scores):
                    return None
            except RuntimeError:
                return None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

    return fast


# --- driver ------------------------------------------------------------------------------------

PASSES: dict[str, Callable[[BlockPlan, torch.device, dict[str, ir.ValueType]], tuple[BlockPlan, int]]] = {
    "attention": attention,
    "linear_act": linear_act,
    "merge_linear": merge_linear,
    "conv_add_act": conv_add_act,
    "conv_act": conv_act,
    "conv_prepack": conv_prepack,
}


def fuse(body: BlockPlan, device: torch.device, var_types: dict[str, ir.ValueType],
         passes: Sequence[str] | None = None) -> tuple[BlockPlan, dict[str, int]]:
    """``body`` with every pass in ``passes`` (all by default) applied; returns it and counts per pass."""
    counts: dict[str, int] = {}
    for name in passes if passes is not None else PASSES:
        body, n = PASSES[name](body, device, var_types)
        if n:
            counts[name] = n
    return body, counts
