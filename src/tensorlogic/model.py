"""The one model object every format yields, its metadata, and ``load_model`` / ``save_model``.

Reading metadata never imports torch: ``Metadata``, ``FeatureSpec`` and ``TensorInfo`` are plain
dataclasses, and torch is imported only when a tensor is materialized or a model is run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TensorLogicError, UnsupportedError

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class TensorInfo:
    """Where one stored tensor lives, without touching its bytes.

    ``dtype`` is the format's own name for the stored type (``F16``, ``Q4_K``, ``BF16``, ``INT8`` ...);
    ``shape`` is in numpy/torch order; ``offset`` is the absolute byte offset in ``file``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    offset: int | None = None
    file: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass
class FeatureSpec:
    """One input, output or state of a runnable model, as its description declares it.

    ``kind`` is one of ``multiArray``, ``image``, ``int64``, ``double``, ``string``, ``dictionary``,
    ``sequence``, ``state``. ``shape`` uses ints, or strings for symbolic dims. ``flexibility`` is
    ``None``, ``{"ranges": [[lo, hi], ...]}`` (hi -1 = unbounded) or ``{"enumerated": [shape, ...]}``.
    ``image`` holds ``colorspace``, ``width``, ``height`` and any flexible sizes for image features.
    """

    name: str
    kind: str
    dtype: str | None = None
    shape: tuple[int | str, ...] | None = None
    description: str = ""
    optional: bool = False
    flexibility: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.kind == "image" and self.image:
            im = self.image
            return f"{self.name}: image {im.get('colorspace', '?')} {im.get('width')}x{im.get('height')}"
        if self.shape is not None:
            dims = ", ".join(str(d) for d in self.shape)
            return f"{self.name}: {self.dtype or self.kind}[{dims}]"
        return f"{self.name}: {self.dtype or self.kind}"


@dataclass
class Metadata:
    """What a model file says about itself. ``format`` and ``quantization`` are plain strings."""

    format: str
    quantization: str = "UNKNOWN"
    name: str | None = None
    architecture: str | None = None
    description: str = ""
    author: str = ""
    license: str = ""
    version: str = ""
    inputs: list[FeatureSpec] = field(default_factory=list)
    outputs: list[FeatureSpec] = field(default_factory=list)
    states: list[FeatureSpec] = field(default_factory=list)
    parameter_count: int = 0
    tensor_count: int = 0
    file_size: int = 0
    model_type: str | None = None
    spec_version: int | None = None
    min_os: str | None = None
    opset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


_PLAIN = {str, int, float, bool, type(None)}


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        # Not dataclasses.asdict: it deep-copies every value, seconds for a 150k-token vocabulary.
        return {f.name: _jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if set(map(type, obj)) <= _PLAIN:
            return list(obj)
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, bytes):
        return obj.hex()
    tolist = getattr(obj, "tolist", None)
    if tolist is not None:
        return _jsonable(tolist())
    return str(obj)


def dominant_type(counts: Mapping[str, int]) -> str:
    """The stored type holding more than half of all elements, else ``MIXED`` (``UNKNOWN`` if empty)."""
    total = sum(counts.values())
    if total == 0:
        return "UNKNOWN"
    name, n = max(counts.items(), key=lambda kv: kv[1])
    return name if 2 * n > total else "MIXED"


def _stored_kind(stored: str) -> torch.dtype:
    """A representative torch dtype for a format's stored type name: only floating vs not matters."""
    import torch

    name = stored.upper()
    if name.startswith(("I", "U", "BOOL")) and not name.startswith("IQ"):
        return torch.int64
    return torch.float32


def resolve_torch_dtype(dtype: Any, stored: torch.dtype) -> torch.dtype:
    """Map a ``get_tensor`` dtype request to a torch dtype.

    ``None`` means float16 for floating data (the seed's "all f16") and the stored dtype otherwise;
    ``"native"`` keeps the stored (or dequantized) dtype; strings such as ``"float32"`` name torch dtypes.
    """
    import torch

    if dtype is None:
        return torch.float16 if stored.is_floating_point else stored
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        if dtype == "native":
            return stored
        found = getattr(torch, dtype, None)
        if isinstance(found, torch.dtype):
            return found
    raise TensorLogicError(f"unknown dtype {dtype!r}: use a torch dtype, a name like 'float32', or 'native'")


class ModelFile:
    """What every format reader provides: sniff → open → metadata → lazy tensors.

    Subclasses set ``format`` and implement ``metadata``, ``tensor_infos`` and ``read_numpy``;
    formats whose data numpy cannot hold (bf16, fp8) or that have a faster torch path override
    ``read_torch``. Runnable formats implement ``runner``.
    """

    format: str = "?"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def metadata(self) -> Metadata:
        raise NotImplementedError

    def tensor_infos(self) -> list[TensorInfo]:
        raise NotImplementedError

    def read_numpy(self, name: str) -> np.ndarray:
        """The tensor as numpy: stored dtype, or float32 for quantized/bf16/fp8 data."""
        raise NotImplementedError

    def read_torch(self, name: str, device: Any = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor as torch in its stored (or dequantized) dtype.

        ``dtype`` is the dtype the caller will cast to; formats that dequantize may produce it
        directly (one pass on the device instead of two), others ignore it.
        """
        import torch

        return torch.from_numpy(self.read_numpy(name)).to(device or "cpu")

    def runner(self, device: str, compute_units: str, function_name: str | None) -> Any:
        raise UnsupportedError(
            f"{self.path}: a {self.format} file holds weights only, no graph to run; "
            "load a Core ML model (.mlpackage, .mlmodelc, .mlmodel) to predict"
        )

    def close(self) -> None:
        """Release file handles and memory maps."""


class Model:
    """A loaded model: metadata, tensors, and (for Core ML) prediction."""

    def __init__(self, file: ModelFile, runner: Any = None, device: str = "auto"):
        self.file = file
        self._metadata: Metadata | None = None
        self._runner = runner
        self._device = device
        self._llm: Any = None

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def metadata(self) -> Metadata:
        if self._metadata is None:
            self._metadata = self.file.metadata()
        return self._metadata

    def tensor_infos(self) -> list[TensorInfo]:
        return self.file.tensor_infos()

    def tensor_names(self) -> list[str]:
        return [t.name for t in self.file.tensor_infos()]

    def _info(self, name: str) -> TensorInfo:
        for info in self.file.tensor_infos():
            if info.name == name:
                return info
        raise TensorLogicError(f"{self.path}: no tensor named {name!r} ({len(self.tensor_names())} tensors)")

    def get_tensor(self, name: str, dtype: Any = None, device: Any = None) -> torch.Tensor:
        """A stored tensor as torch; float16 for floating data unless ``dtype`` says otherwise."""
        info = self._info(name)
        hint = None if dtype in (None, "native") else resolve_torch_dtype(dtype, _stored_kind(info.dtype))
        t = self.file.read_torch(name, device=device, dtype=hint)
        return t.to(resolve_torch_dtype(dtype, t.dtype))

    def get_numpy(self, name: str) -> np.ndarray:
        """A stored tensor as numpy in its stored (or dequantized float32) dtype, without torch."""
        self._info(name)
        return self.file.read_numpy(name)

    def tensors(self, dtype: Any = None) -> dict[str, torch.Tensor]:
        return {n: self.get_tensor(n, dtype=dtype) for n in self.tensor_names()}

    @property
    def runner(self) -> Any:
        if self._runner is None:
            self._runner = self.file.runner("auto", "ALL", None)
        return self._runner

    def predict(self, data: Any, state: Any = None, **kwargs: Any) -> Any:
        """Run the model like ``coremltools.models.MLModel.predict``: dict in, dict of numpy out."""
        return self.runner.predict(data, state=state, **kwargs)

    def make_state(self) -> Any:
        return self.runner.make_state()

    def llm(self, device: Any = None, dtype: Any = None, n_ctx: int | None = None) -> Any:
        """The GGUF model ready to generate (``tensorlogic.llm.LLM``), built on first use and kept.

        Asking again with a different device, dtype or context length builds it anew.
        """
        if self.file.format != "GGUF":
            raise UnsupportedError(f"{self.path.name}: text generation needs a GGUF LLM (this is {self.file.format})")
        wanted = (device or self._device, dtype, n_ctx)
        if self._llm is None or self._llm[0] != wanted:
            from .llm import load_llm

            self._llm = (wanted, load_llm(self.file, device=wanted[0], dtype=dtype, n_ctx=n_ctx))
        return self._llm[1]

    @property
    def tokenizer(self) -> Any:
        """The tokenizer in the GGUF's metadata (``tensorlogic.llm.Tokenizer``)."""
        if self._llm is not None:
            return self._llm[1].tokenizer
        if self.file.format != "GGUF":
            raise UnsupportedError(f"{self.path.name}: only GGUF models carry a tokenizer (this is {self.file.format})")
        from .llm.tokenizer import Tokenizer

        return Tokenizer.from_gguf(self.file.kv, self.path)

    def generate(self, prompt: Any, max_new_tokens: int = 128, **options: Any) -> Any:
        """Continue ``prompt`` (text or token ids); see ``tensorlogic.llm.LLM.generate`` for the options."""
        return self.llm().generate(prompt, max_new_tokens, **options)

    def chat(self, messages: Any, max_new_tokens: int = 256, **options: Any) -> Any:
        """Reply to chat ``messages`` with the GGUF's chat template; see ``tensorlogic.llm.LLM.chat``."""
        return self.llm().chat(messages, max_new_tokens, **options)

    def logits(self, ids: Any) -> torch.Tensor:
        """Float32 logits of every position of one token sequence [T, V] or a batch [B, T, V]."""
        return self.llm().logits(ids)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        md = self.metadata
        return f"<Model {self.path.name} format={md.format} quantization={md.quantization}>"


def load_model(
    path: str | os.PathLike,
    device: str = "auto",
    compute_units: str = "ALL",
    function_name: str | None = None,
) -> Model:
    """Open any supported model file, deciding the format by content.

    Runnable models (Core ML) are prepared for prediction here, so an op TensorLogic cannot run is
    reported at load time rather than halfway through a prediction.
    """
    from .formats import open_model_file

    file = open_model_file(path)
    runner = None
    if file.format == "CoreML":
        runner = file.runner(device, compute_units, function_name)
    return Model(file, runner, device)


def save_model(obj: Any, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None, **options: Any) -> Path:
    """Write a dict of tensors or a loaded ``Model`` to ``.safetensors`` or ``.gguf``, atomically."""
    from .formats import saver_for

    save = saver_for(path)
    tensors: Mapping[str, Any] | Iterable
    if isinstance(obj, Model):
        tensors = obj.tensors(dtype="native")
        # Scalar metadata keeps its type; each writer converts what its format cannot hold.
        base_meta = {k: v for k, v in obj.metadata.extra.items() if isinstance(v, (str, int, float, bool))}
        metadata = {**base_meta, **(metadata or {})}
    elif isinstance(obj, Mapping):
        tensors = obj
    else:
        raise TensorLogicError(f"save_model takes a dict of tensors or a Model, not {type(obj).__name__}")
    return save(tensors, Path(path), metadata=dict(metadata or {}), **options)
