"""The decoder-only transformer of llama-family GGUF models, run on the stored (quantized) weights.

One forward serves prefill and decode: new tokens' keys and values go into a static KV cache on the device, and
attention reads the cache up to a length bucket.  Decode steps on CUDA replay one CUDA graph per bucket, with the
position held in a device tensor, so a token costs one graph launch.  A first prefill on CUDA replays one graph
per prompt-length bucket too (``PREFILL_BUCKETS``): a prefill is a few hundred kernels, and launching them from
Python took several times longer than running them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import FormatError, InputError
from ..formats.gguf import GGUFFile
from . import ops
from .config import LLMConfig
from .kernels import QWeight, qembedding, qmatmul, qmatmul_silu_mul

# Attention reads the cache up to the smallest bucket holding every position, so short contexts read little.
_MIN_BUCKET = 256
# Prompt lengths a first prefill is padded to on CUDA (steps of at most 1.5x). Longer prompts run eagerly: their
# kernels outlast their launches, and a graph would hold activation memory for every bucket captured.
PREFILL_BUCKETS = tuple(b for p in range(4, 11) for b in (1 << p, 3 << (p - 1))) + (2048,)


# Weights whose outputs are used side by side (q, k, v; gate, up): one stacked matrix when they share a type,
# else the separate matrices (Q4_K_M files store attn_v and some ffn weights in Q6_K, the rest in Q4_K).
Stacked = QWeight | tuple[QWeight, ...]


def prefill_bucket(t: int, n_ctx: int) -> int | None:
    """The graph length a first prefill of ``t`` tokens is padded to, or None (run it eagerly)."""
    return next((b for b in PREFILL_BUCKETS if t <= b <= n_ctx), None)


def _stack(ws: list[QWeight]) -> Stacked:
    if all(w.qtype == ws[0].qtype for w in ws):
        return QWeight.cat(ws)
    return tuple(ws)


def _matmul(x: torch.Tensor, w: Stacked) -> torch.Tensor:
    if isinstance(w, QWeight):
        return qmatmul(x, w)
    return torch.cat([qmatmul(x, part) for part in w], dim=-1)


def _nbytes(w: Stacked) -> int:
    return w.nbytes if isinstance(w, QWeight) else sum(part.nbytes for part in w)


@dataclass
class _Layer:
    attn_norm: torch.Tensor
    ffn_norm: torch.Tensor
    wqkv: Stacked  # q, k and v rows
    bqkv: torch.Tensor | None
    wo: QWeight
    w_gate_up: Stacked  # gate rows then up rows
    w_down: QWeight


def _check_shapes(gguf: GGUFFile, cfg: LLMConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    expected = {"token_embd.weight": (cfg.n_vocab, cfg.n_embd), "output_norm.weight": (cfg.n_embd,)}
    if not cfg.tied_output:
        expected["output.weight"] = (cfg.n_vocab, cfg.n_embd)
    for i in range(cfg.n_layer):
        expected.update(cfg.expected_shapes(i))
    for name, shape in expected.items():
        if name not in shapes:
            raise FormatError(f"{cfg.arch} model has no tensor {name!r}", gguf.path)
        if tuple(shapes[name]) != shape:
            raise FormatError(f"tensor {name!r} has shape {list(shapes[name])}, expected {list(shape)} for this "
                              f"{cfg.arch} model", gguf.path)


class Transformer:
    """Weights on one device plus the KV cache; ``forward`` runs new tokens after the cached ones."""

    def __init__(self, gguf: GGUFFile, device: torch.device, dtype: torch.dtype, n_ctx: int | None = None,
                 batch: int = 1):
        infos = {t.name: t for t in gguf.tensor_infos()}
        shapes = {name: tuple(t.shape) for name, t in infos.items()}
        cfg = LLMConfig.from_gguf(gguf.kv, set(infos), gguf.path, shapes)
        _check_shapes(gguf, cfg, shapes)
        self.cfg, self.device, self.dtype, self.path = cfg, device, dtype, Path(gguf.path)
        self.n_ctx = min(n_ctx or cfg.n_ctx, cfg.n_ctx)
        if n_ctx is not None and n_ctx > cfg.n_ctx:
            raise InputError(f"{gguf.path}: n_ctx {n_ctx} is longer than the model's context of {cfg.n_ctx}")

        def vec(name: str) -> torch.Tensor:
            return gguf.read_torch(name).to(device=device, dtype=torch.float32)

        def mat(name: str) -> QWeight:
            return QWeight.from_gguf(gguf, name, device)

        self.tok_embd = mat("token_embd.weight")
        self.out_norm = vec("output_norm.weight")
        self.output = self.tok_embd if cfg.tied_output else mat("output.weight")
        self.layers: list[_Layer] = []
        for i in range(cfg.n_layer):
            p = f"blk.{i}."
            if cfg.fused_qkv:
                wqkv = mat(p + "attn_qkv.weight")
            else:
                wqkv = _stack([mat(p + "attn_q.weight"), mat(p + "attn_k.weight"), mat(p + "attn_v.weight")])
            bqkv = None
            if cfg.qkv_bias:
                bqkv = torch.cat([vec(p + "attn_q.bias"), vec(p + "attn_k.bias"), vec(p + "attn_v.bias")]).to(dtype)
            if cfg.fused_gate_up:
                gate_up = mat(p + "ffn_up.weight")
            else:
                gate_up = _stack([mat(p + "ffn_gate.weight"), mat(p + "ffn_up.weight")])
            self.layers.append(_Layer(vec(p + "attn_norm.weight"), vec(p + "ffn_norm.weight"), wqkv, bqkv,
                                      mat(p + "attn_output.weight"), gate_up, mat(p + "ffn_down.weight")))
        self._rope_tables()
        self.batch = batch
        shape = (cfg.n_layer, batch, cfg.n_head_kv, self.n_ctx, cfg.head_dim)
        self.k_cache = torch.zeros(shape, device=device, dtype=dtype)
        self.v_cache = torch.zeros(shape, device=device, dtype=dtype)
        self._graphs: dict[int, _DecodeGraph] = {}
        self._prefill_graphs: dict[int, _PrefillGraph] = {}
        self._prefill_pool: Any = None

    def _rope_tables(self) -> None:
        cfg = self.cfg
        inv = 1.0 / (cfg.rope_base ** (torch.arange(0, cfg.rope_dim, 2, dtype=torch.float64) / cfg.rope_dim))
        pos = torch.arange(self.n_ctx, dtype=torch.float64) / cfg.rope_scale
        angles = torch.outer(pos, inv)
        self.cos = angles.cos().to(self.device, torch.float32)
        self.sin = angles.sin().to(self.device, torch.float32)

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights on the device (what a decode step reads, but for the embedding rows)."""
        mats: list[Stacked] = [self.tok_embd] + ([] if self.cfg.tied_output else [self.output])
        for layer in self.layers:
            mats += [layer.wqkv, layer.wo, layer.w_gate_up, layer.w_down]
        return sum(_nbytes(m) for m in mats)

    def forward(self, ids: torch.Tensor, start: int | torch.Tensor, *, span: int | None = None,
                all_logits: bool = False, last: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``ids`` [B, T] at positions start..start+T-1 after the cached ones; return float32 logits.

        ``start`` is an int, or a device tensor of shape [1] (CUDA graphs: the position must not be a Python
        number).  ``span`` is how much of the cache attention reads; by default everything up to the last token.
        Logits are for the last position only unless ``all_logits``; ``last`` (a device tensor [1]) picks another
        position instead (a padded prefill).
        """
        cfg = self.cfg
        b, t = ids.shape
        fresh = isinstance(start, int) and start == 0 and span is None
        if isinstance(start, int):
            if start + t > self.n_ctx:
                raise InputError(f"context of {start + t} tokens is longer than the {self.n_ctx} this model was "
                                 f"loaded with ({self.path.name})")
            positions = torch.arange(start, start + t, device=self.device)
            span = span or start + t
        else:
            positions = start + torch.arange(t, device=self.device)
            if span is None:
                raise ValueError("forward with a tensor position needs span")
        g = cfg.n_head // cfg.n_head_kv
        hd, eps = cfg.head_dim, cfg.rms_eps
        scale = hd ** -0.5
        # A single new token goes to ops.decode_attention, which masks by position itself.
        mask = None
        if not fresh and t > 1:
            # Query row g*T + t of a KV head's block is token t (see ops.rope_into_cache); it sees keys <= its
            # position.
            allowed = torch.arange(span, device=self.device)[None, :] <= positions.repeat(g)[:, None]
            mask = torch.zeros(allowed.shape, device=self.device, dtype=self.dtype).masked_fill(~allowed,
                                                                                               float("-inf"))
        h = qembedding(self.tok_embd, ids, self.dtype)
        x = ops.add_rms_norm(h, None, self.layers[0].attn_norm, eps)
        for i, layer in enumerate(self.layers):
            qkv = _matmul(x, layer.wqkv)
            rows = [self._attend(i, layer, qkv[r], r, positions, t, span, fresh, mask, scale) for r in range(b)]
            attn = rows[0][None] if b == 1 else torch.stack(rows)
            x = ops.add_rms_norm(h, qmatmul(attn, layer.wo), layer.ffn_norm, eps)
            down = qmatmul_silu_mul(_matmul(x, layer.w_gate_up), layer.w_down)
            following = self.layers[i + 1].attn_norm if i + 1 < len(self.layers) else self.out_norm
            x = ops.add_rms_norm(h, down, following, eps)
        if not all_logits:
            x = x[:, -1:] if last is None else x.index_select(1, last)
        return qmatmul(x, self.output).float()

    def _attend(self, i: int, layer: _Layer, qkv: torch.Tensor, row: int, positions: torch.Tensor, t: int,
                span: int, fresh: bool, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        """Attention of one sequence's T new tokens (qkv [T, ...]) over its cache; returns [T, H * hd]."""
        cfg = self.cfg
        kc, vc = self.k_cache[i, row], self.v_cache[i, row]
        q = ops.rope_into_cache(qkv, layer.bqkv, positions, self.cos, self.sin, kc, vc, n_head=cfg.n_head,
                                n_head_kv=cfg.n_head_kv, rope_dim=cfg.rope_dim, style=cfg.rope_style,
                                grouped=not fresh)
        if fresh:  # a first prefill: causal attention over exactly the new tokens
            out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], kc[None, :, :t], vc[None, :, :t],
                                                 is_causal=True, scale=scale, enable_gqa=cfg.n_head > cfg.n_head_kv)
            return out[0].transpose(0, 1).reshape(t, -1)
        if mask is None:
            return ops.decode_attention(q, kc, vc, positions, span, scale)
        # The g query heads sharing a KV head are g*T rows of that head: no K/V repetition.
        out = F.scaled_dot_product_attention(q[None], kc[None, :, :span], vc[None, :, :span], attn_mask=mask,
                                             scale=scale)
        g = cfg.n_head // cfg.n_head_kv
        return out[0].reshape(cfg.n_head_kv, g, t, cfg.head_dim).permute(2, 0, 1, 3).reshape(t, -1)

    def bucket(self, length: int) -> int:
        span = _MIN_BUCKET
        while span < length:
            span *= 2
        return min(span, self.n_ctx)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """A first prefill (empty cache) of ``ids`` [1, T]: logits [1, vocab] of the last position.

        On CUDA a prompt of up to 2,048 tokens is padded at the end to a ``PREFILL_BUCKETS`` length that fits the
        context, and one CUDA graph per bucket runs it. Padding changes nothing for the prompt (causal attention:
        no position sees a later one), and the padding's cache entries lie past the prompt, where each decode
        step writes its own before reading.
        """
        t = ids.shape[1]
        if t > self.n_ctx:
            raise InputError(f"context of {t} tokens is longer than the {self.n_ctx} this model was loaded with "
                             f"({self.path.name})")
        length = prefill_bucket(t, self.n_ctx)
        if self.device.type != "cuda" or ids.shape[0] != 1 or t < 2 or length is None:
            return self.forward(ids, 0)[:, -1]
        graph = self._prefill_graphs.get(length)
        if graph is None:
            if self._prefill_pool is None:
                self._prefill_pool = torch.cuda.graph_pool_handle()
            graph = self._prefill_graphs[length] = _PrefillGraph(self, length, self._prefill_pool)
        return graph.run(ids)

    def decode(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """One decode step for batch row 0: ``token`` [1, 1] at position ``pos``; returns logits [1, vocab]."""
        if pos + 1 > self.n_ctx:
            raise InputError(f"context of {pos + 1} tokens is longer than the {self.n_ctx} this model was loaded "
                             f"with ({self.path.name})")
        span = self.bucket(pos + 1)
        if self.device.type != "cuda":
            return self.forward(token, pos, span=span)[:, -1]
        graph = self._graphs.get(span)
        if graph is None:
            graph = self._graphs[span] = _DecodeGraph(self, span, token, pos)
        return graph.run(token, pos)


class _DecodeGraph:
    """A decode step captured as a CUDA graph for one attention span; inputs and outputs are static buffers."""

    def __init__(self, model: Transformer, span: int, token: torch.Tensor, pos: int):
        self.token = token.detach().clone().reshape(1, 1)
        self.pos = torch.full((1,), pos, dtype=torch.long, device=model.device)
        stream = torch.cuda.Stream(model.device)
        stream.wait_stream(torch.cuda.current_stream(model.device))
        # Warm-up runs on a side stream compile kernels and settle allocations before capture.  They are the
        # real step for this token (same key/value written at the same position), so the cache stays right.
        with torch.cuda.stream(stream):
            for _ in range(2):
                model.forward(self.token, self.pos, span=span)
        torch.cuda.current_stream(model.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.forward(self.token, self.pos, span=span)[:, -1]

    def run(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        self.token.copy_(token)
        self.pos.fill_(pos)
        self.graph.replay()
        return self.logits


class _PrefillGraph:
    """A first prefill of ``length`` tokens captured as a CUDA graph; inputs are static buffers.

    The graphs of all lengths share one memory pool: they never run concurrently, and ``run`` returns a copy of
    the logits, so what one replay leaves in the pool is never read after another.
    """

    def __init__(self, model: Transformer, length: int, pool: Any):
        self.ids = torch.zeros((1, length), dtype=torch.long, device=model.device)
        self.last = torch.zeros((1,), dtype=torch.long, device=model.device)
        stream = torch.cuda.Stream(model.device)
        stream.wait_stream(torch.cuda.current_stream(model.device))
        # Warm-up runs compile kernels and size the scratch buffers; the cache entries they write are all
        # overwritten by the real prefill that follows.
        with torch.cuda.stream(stream):
            for _ in range(2):
                model.forward(self.ids, 0, last=self.last)
        torch.cuda.current_stream(model.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.logits = model.forward(self.ids, 0, last=self.last)[:, -1]

    def run(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        self.ids[:, :t].copy_(ids)
        self.ids[:, t:].zero_()
        self.last.fill_(t - 1)
        self.graph.replay()
        return self.logits.clone()


def default_dtype(device: torch.device, requested: Any = None) -> torch.dtype:
    """f16 on CUDA, float32 on CPU unless asked. On the CPU float32 keeps agreement with transformers to 1e-4;
    f16 multiplies F16/BF16 weights as stored, ~10x faster in decode, and bf16 runs Q4_0/Q4_K weights through
    torch's int4 matmul, ~40x faster, each with activations rounded to their half type."""
    names = {None: None, "f16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "f32": torch.float32, "float32": torch.float32}
    if isinstance(requested, torch.dtype):
        return requested
    if requested not in names:
        raise InputError(f"dtype {requested!r} is not one of f16, bf16, f32")
    chosen = names[requested]
    if chosen is None:
        chosen = torch.float16 if device.type == "cuda" else torch.float32
    return chosen
