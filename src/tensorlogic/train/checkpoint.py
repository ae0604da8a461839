"""Training checkpoints as SafeTensors files (never pickle), written atomically.

Tensors: ``param/NAME`` (the learnable tensors, dtype kept), ``master/NAME`` (float32 master copies of
float16 tensors, so a resumed run continues bit for bit), ``optim/INDEX/KEY`` (optimizer state tensors).
Everything else (epoch, the optimizer's param groups and scalar state, the scheduler state) is one JSON
string under the metadata key ``tensorlogic.checkpoint``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import TensorLogicError
from .errors import TrainError

META_KEY = "tensorlogic.checkpoint"
VERSION = 1


class Checkpoint(tuple):
    """``(params, optimizer_state, epoch)``; also ``.masters`` (name -> float32 copy) and ``.scheduler_state``."""

    def __new__(cls, params: dict[str, torch.Tensor], optimizer_state: dict[str, Any] | None, epoch: int,
                masters: dict[str, torch.Tensor] | None = None, scheduler_state: dict[str, Any] | None = None):
        self = super().__new__(cls, (params, optimizer_state, epoch))
        self.masters = masters or {}
        self.scheduler_state = scheduler_state
        return self

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self[0]

    @property
    def optimizer_state(self) -> dict[str, Any] | None:
        return self[1]

    @property
    def epoch(self) -> int:
        return self[2]


def _encode(value: Any, where: str) -> Any:
    """JSON form of a state value; tuples are tagged so they come back as tuples (bit-exact round trip)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, Mapping):
        return {"__dict__": [[_encode(k, where), _encode(v, where)] for k, v in value.items()]}
    raise TrainError(f"cannot save {where}: a {type(value).__name__} value is not supported in a checkpoint")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {_decode(k): _decode(v) for k, v in value["__dict__"]}
    return value


def save_checkpoint(path: str | os.PathLike, params: Mapping[str, torch.Tensor],
                    optimizer_state: Mapping[str, Any] | None = None, epoch: int = 0,
                    masters: Mapping[str, torch.Tensor] | None = None,
                    scheduler_state: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint to ``path`` (.safetensors) atomically; an existing file is replaced only on success."""
    tensors: dict[str, torch.Tensor] = {}
    for name, t in params.items():
        if not isinstance(t, torch.Tensor):
            raise TrainError(f"cannot save checkpoint: parameter '{name}' is a {type(t).__name__}, not a tensor")
        tensors[f"param/{name}"] = t.detach()
    for name, t in (masters or {}).items():
        tensors[f"master/{name}"] = t.detach()
    opt_meta = None
    if optimizer_state is not None:
        scalars: dict[str, dict[str, Any]] = {}
        for idx, entry in optimizer_state.get("state", {}).items():
            scalars[str(idx)] = {}
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{idx}/{key}"] = value.detach()
                else:
                    scalars[str(idx)][key] = _encode(value, f"optimizer state {idx}/{key}")
        opt_meta = {"state": scalars, "param_groups": _encode(list(optimizer_state.get("param_groups", [])),
                                                             "optimizer param groups")}
    meta = {"version": VERSION, "epoch": int(epoch), "params": list(params), "optimizer": opt_meta,
            "scheduler": None if scheduler_state is None else _encode(dict(scheduler_state), "scheduler state")}
    from ..formats.safetensors import save_safetensors

    try:
        return save_safetensors(tensors, Path(path), metadata={META_KEY: json.dumps(meta)})
    except (OSError, TensorLogicError) as e:
        raise TrainError(f"cannot save checkpoint {os.fspath(path)}: {e}") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``: ``(params, optimizer_state, epoch)`` (a ``Checkpoint``)."""
    from ..formats import open_model_file

    where = os.fspath(path)
    try:
        file = open_model_file(path)
    except (OSError, TensorLogicError) as e:
        raise TrainError(f"cannot load checkpoint {where}: {e}") from None
    try:
        extra = file.metadata().extra if file.format == "SafeTensors" else {}
        if META_KEY not in extra:
            raise TrainError(f"{where} is not a TensorLogic training checkpoint (no '{META_KEY}' metadata)")
        meta = json.loads(extra[META_KEY])
        names = {t.name for t in file.tensor_infos()}
        # clone: the reader's tensors are views of a memory map that closes below
        read = {n: file.read_torch(n).clone() for n in names}
    finally:
        file.close()
    params = {n: read[f"param/{n}"] for n in meta["params"]}
    masters = {n.removeprefix("master/"): t for n, t in read.items() if n.startswith("master/")}
    opt_state = None
    if meta["optimizer"] is not None:
        state: dict[int, dict[str, Any]] = {}
        for idx, scalars in meta["optimizer"]["state"].items():
            state[int(idx)] = {k: _decode(v) for k, v in scalars.items()}
        for n, t in read.items():
            if n.startswith("optim/"):
                _, idx, key = n.split("/", 2)
                state.setdefault(int(idx), {})[key] = t
        opt_state = {"state": state, "param_groups": _decode(meta["optimizer"]["param_groups"])}
    sched = None if meta["scheduler"] is None else _decode(meta["scheduler"])
    return Checkpoint(params, opt_state, int(meta["epoch"]), masters, sched)
