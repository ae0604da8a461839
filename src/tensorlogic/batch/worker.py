"""One batch of rows in, one table of predictions out: what each Ray actor (or the in-process loop) does.

A batch is a dict of columns (numpy arrays, Ray Data's ``"numpy"`` batch format): ``key`` (the row's identity,
when the input has one), then either ``bytes`` (one file's content per row: an image or a ``.npy`` array) or one
column per model input (for a GGUF LLM: the prompt column). The result is a ``pyarrow.Table`` whose schema
depends only on the model, never on the batch, so the parts of one job always concatenate:

* ``key`` (string), one column per output, ``error`` (string, null where the row succeeded);
* arrays are stored as ``.npy`` bytes (exact dtype and shape; read them with ``load_array``), class labels as
  strings or integers, probability dicts as JSON text; an LLM gives ``text``, ``n_tokens`` and ``finish_reason``.

A row that fails (a corrupt image, a wrong shape) gets its message in ``error`` and nulls elsewhere; the other
rows of the batch are unaffected.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

KEY = "key"
FILE_COLUMN = "bytes"
ERROR = "error"
LLM_COLUMNS = ("text", "n_tokens", "finish_reason")
NPY_MAGIC = b"\x93NUMPY"


def load_array(cell: bytes | None) -> np.ndarray | None:
    """An output cell stored as ``.npy`` bytes back as a numpy array (never unpickles)."""
    if cell is None:
        return None
    return np.load(io.BytesIO(cell), allow_pickle=False)


def _npy_bytes(value: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    return buf.getvalue()


def _one_line(error: BaseException) -> str:
    from ..errors import TensorLogicError

    text = str(error) if isinstance(error, TensorLogicError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split()) or type(error).__name__


def decode_file(data: bytes, feature: Any) -> Any:
    """A file's content as a predict input: ``.npy`` bytes (by their magic) as an array, anything else as an
    image converted to the mode the model's image input declares."""
    from PIL import Image, UnidentifiedImageError

    from ..errors import InputError

    if data[:6] == NPY_MAGIC:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise InputError(f"a damaged .npy array ({e})") from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise InputError("neither an image Pillow can read nor a .npy array") from None
    except OSError as e:
        raise InputError(f"a damaged image ({e})") from None
    from ..runtime.features import pil_mode

    return image.convert(pil_mode(feature))


def _cell(value: Any, feature: Any) -> Any:
    """One column cell as a predict input: bytes are decoded as a file, (nested) lists become arrays."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode_file(bytes(value), feature)
    return _dense(value)


def _dense(value: Any) -> Any:
    # Arrow list columns arrive as object arrays of arrays, one level per nesting.
    if isinstance(value, np.ndarray) and value.dtype == object and len(value):
        return np.stack([_dense(v) for v in value])
    return value


def check_runnable(file: Any, model_path: str | os.PathLike) -> None:
    """Raise UnsupportedError unless the opened model file is one batch inference runs."""
    from ..errors import UnsupportedError

    if file.format not in ("CoreML", "GGUF"):
        raise UnsupportedError(f"{model_path}: batch inference runs Core ML models and GGUF LLMs; this is "
                               f"{file.format}, which holds weights only")


class BatchPredictor:
    """Loads a model once (Core ML in ``mode``, or a GGUF LLM) and predicts batches of rows.

    ``outputs`` names the Core ML outputs (or intermediate variables) to keep; ``generate`` holds the options of
    ``LLM.generate`` (``max_new_tokens``, ``temperature``, ``seed``, ...); ``threads`` sets torch's CPU threads,
    so actors sharing a machine do not oversubscribe its cores; ``function_name`` picks a multifunction model's
    function.
    """

    def __init__(self, model_path: str, *, device: str = "auto", mode: str = "compiled",
                 outputs: Sequence[str] | None = None, generate: Mapping[str, Any] | None = None,
                 prompt_column: str = "prompt", threads: int | None = None, function_name: str | None = None):
        import torch

        from ..formats import open_model_file

        if threads:
            torch.set_num_threads(threads)
        self.model_path = str(model_path)
        self.outputs = list(outputs) if outputs else None
        self.prompt_column = prompt_column
        self.generate_options = dict(generate or {})
        file = open_model_file(model_path)
        self.format = file.format
        self.llm: Any = None
        self.predictor: Any = None
        check_runnable(file, model_path)
        if file.format == "GGUF":
            from ..llm import load_llm

            self.llm = load_llm(file, device=device)
        else:
            from ..runtime.predictor import Predictor

            self.predictor = Predictor(file, device=device, mode=mode, function_name=function_name)
        self.schema = self._schema()

    # --- the output schema ---------------------------------------------------------------------

    def _schema(self) -> Any:
        import pyarrow as pa

        fields = [pa.field(KEY, pa.string())]
        if self.llm is not None:
            fields += [pa.field("text", pa.string()), pa.field("n_tokens", pa.int64()),
                       pa.field("finish_reason", pa.string())]
        else:
            sig = self.predictor.signature
            declared = {f.name: f for f in sig.outputs}
            for name in self.outputs or list(declared):
                fields.append(pa.field(name, self._arrow_type(declared.get(name), sig)))
        fields.append(pa.field(ERROR, pa.string()))
        return pa.schema(fields)

    @staticmethod
    def _arrow_type(feature: Any, sig: Any) -> Any:
        import pyarrow as pa

        if feature is None:
            return pa.binary()  # an intermediate variable: always an array
        if feature.kind == "dictionary" or feature.name == sig.predicted_probabilities:
            return pa.string()
        if feature.kind == "string":
            return pa.string()
        if feature.kind == "int64" and feature.shape in (None, ()):
            return pa.int64()
        return pa.binary()

    def _store(self, name: str, value: Any) -> Any:
        import pyarrow as pa

        kind = self.schema.field(name).type
        if kind == pa.string():
            if isinstance(value, Mapping):
                return json.dumps({str(k): float(v) for k, v in value.items()})
            return str(value)
        if kind == pa.int64():
            return int(value)
        if hasattr(value, "mode") and hasattr(value, "size"):  # an image output, as its pixels
            value = np.asarray(value)
        return _npy_bytes(value)

    # --- one batch -----------------------------------------------------------------------------

    def __call__(self, batch: Mapping[str, np.ndarray]) -> Any:
        import pyarrow as pa

        n = len(next(iter(batch.values()))) if batch else 0
        keys = [None if k is None else str(k) for k in batch[KEY]] if KEY in batch else [None] * n
        rows: list[dict[str, Any]] = [{} for _ in range(n)]
        if self.llm is not None:
            self._generate(batch, rows)
        else:
            self._predict(batch, rows)
        columns = {KEY: keys}
        for field in self.schema:
            if field.name != KEY:
                columns[field.name] = [row.get(field.name) for row in rows]
        return pa.table(columns, schema=self.schema)

    def _inputs(self, batch: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
        from ..errors import InputError

        features = self.predictor.signature.inputs
        if FILE_COLUMN in batch and not any(f.name in batch for f in features):
            if len(features) != 1:
                names = ", ".join(f.name for f in features)
                raise InputError(f"a file feeds a model with one input; this one has {len(features)} ({names}): "
                                 "give a Parquet file with a column per input")
            return {features[0].name: decode_file(bytes(batch[FILE_COLUMN][i]), features[0])}
        data = {}
        for feat in features:
            if feat.name in batch and batch[feat.name][i] is not None:
                data[feat.name] = _cell(batch[feat.name][i], feat)
        return data

    def _predict(self, batch: Mapping[str, np.ndarray], rows: list[dict[str, Any]]) -> None:
        good: list[int] = []
        items: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            try:
                items.append(self._inputs(batch, i))
                good.append(i)
            except Exception as e:  # any failure of one row is that row's error
                row[ERROR] = f"cannot read the input: {_one_line(e)}"
        results: Iterable[Any]
        try:
            # predict's own rule: one stacked run where the first axis is a batch axis, item by item otherwise.
            results = self.predictor.predict(items, outputs=self.outputs, batch=True) if items else []
        except Exception:  # some row is bad: run them one by one to find which
            results = [self._predict_one(item) for item in items]
        for i, result in zip(good, results):
            self._fill(rows[i], result)

    def _predict_one(self, item: dict[str, Any]) -> dict[str, Any] | Exception:
        try:
            return self.predictor.predict(item, outputs=self.outputs)
        except Exception as e:
            return e

    def _fill(self, row: dict[str, Any], result: dict[str, Any] | Exception) -> None:
        if isinstance(result, Exception):
            row[ERROR] = _one_line(result)
            return
        try:
            row.update({name: self._store(name, result[name]) for name in self.schema.names
                        if name not in (KEY, ERROR)})
        except Exception as e:  # an output that cannot be stored fails its row only
            row.clear()
            row[ERROR] = f"cannot store the outputs: {_one_line(e)}"

    def _generate(self, batch: Mapping[str, np.ndarray], rows: list[dict[str, Any]]) -> None:
        from ..errors import InputError

        if self.prompt_column not in batch:
            raise InputError(f"{self.model_path}: an LLM reads prompts from the column {self.prompt_column!r}; "
                             f"the input has {', '.join(batch) or 'no columns'}")
        options = dict(self.generate_options)
        max_new = options.pop("max_new_tokens", 128)
        for prompt, row in zip(batch[self.prompt_column], rows):
            try:
                if not isinstance(prompt, str):
                    raise InputError(f"the prompt is {type(prompt).__name__}, not text")
                # Each row starts from an empty cache, so its text does not depend on the rows before it.
                self.llm.reset()
                gen = self.llm.generate(prompt, max_new, **options)
                row.update(text=gen.text, n_tokens=len(gen.tokens), finish_reason=gen.finish_reason)
            except Exception as e:
                row[ERROR] = _one_line(e)
