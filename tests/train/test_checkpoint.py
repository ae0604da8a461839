"""Checkpoints: bit-exact round trip, resume equal to an uninterrupted run, atomic replacement."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tensorlogic.train import Trainer, TrainError, load_checkpoint, save_checkpoint


def _setup(dtype: torch.dtype = torch.float16):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 3, generator=g).to(dtype)
    y = torch.randn(16, generator=g).to(dtype)
    w = torch.zeros(3, dtype=dtype, requires_grad=True)
    b = torch.zeros(1, dtype=dtype, requires_grad=True)
    return x, y, {"w": w, "b": b}


def _trainer(params, epochs: int, resume: Path | None = None) -> Trainer:
    return Trainer(params, optimizer=("adam", {"lr": 0.05, "amsgrad": True}),
                   scheduler=("step", {"step_size": 3, "gamma": 0.5}), epochs=epochs, out=None, resume=resume)


def _objective(x, y, params):
    return lambda epoch: ((x @ params["w"] + params["b"] - y) ** 2).mean()


def _equal_state(a, b) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _equal_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _equal_state(u, v)
    else:
        assert a == b


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    x, y, params = _setup()
    trainer = _trainer(params, 5)
    trainer.run(_objective(x, y, params))
    path = tmp_path / "ck.safetensors"
    trainer.save_checkpoint(path)
    ck = load_checkpoint(path)
    loaded, opt_state, epoch = ck
    assert epoch == 5
    _equal_state(loaded, {k: v.detach() for k, v in params.items()})
    _equal_state(opt_state, trainer.optimizer.state_dict())
    _equal_state(ck.masters, {k: v.detach() for k, v in trainer.masters.items()})
    _equal_state(ck.scheduler_state, trainer.scheduler.state_dict())
    assert loaded["w"].dtype == torch.float16 and ck.masters["w"].dtype == torch.float32


def test_file_is_plain_safetensors(tmp_path: Path) -> None:
    # read with the reference `safetensors` package: tensors and a JSON metadata entry, no pickle
    from safetensors import safe_open

    w = torch.arange(4.0).requires_grad_(True)
    path = save_checkpoint(tmp_path / "c.safetensors", {"w": w}, epoch=7)
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"param/w"}
        assert torch.equal(f.get_tensor("param/w"), torch.arange(4.0))
        meta = json.loads(f.metadata()["tensorlogic.checkpoint"])
    assert meta["epoch"] == 7 and meta["params"] == ["w"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_resume_continues_like_an_uninterrupted_run(tmp_path: Path, dtype: torch.dtype) -> None:
    x, y, params = _setup(dtype)
    full = _trainer(params, 10).run(_objective(x, y, params))
    final = {k: v.detach().clone() for k, v in params.items()}

    x, y, params = _setup(dtype)
    first = _trainer(params, 4)
    first_half = first.run(_objective(x, y, params))
    path = tmp_path / "half.safetensors"
    first.save_checkpoint(path)

    x, y, fresh = _setup(dtype)  # new tensors, as a new process would have
    second = _trainer(fresh, 10, resume=path)
    assert second.epoch == 4
    rest = second.run(_objective(x, y, fresh))
    assert first_half + rest == full
    for k in final:
        assert torch.equal(fresh[k].detach(), final[k])


def test_failed_save_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"w": torch.ones(3)}, epoch=1)
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(TrainError, match=r"^cannot save checkpoint .*ck\.safetensors: \[Errno 28\] No space left"):
        save_checkpoint(path, {"w": torch.zeros(1000)}, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors"]  # no temp file left
    with pytest.raises(TrainError, match=r"^cannot save checkpoint .*: tensor 'param/w': torch dtype torch.complex64"):
        save_checkpoint(path, {"w": torch.zeros(2, dtype=torch.complex64)})
    assert path.read_bytes() == before
    assert load_checkpoint(path).epoch == 1


def test_load_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(TrainError, match=r"^cannot load checkpoint .*nope\.safetensors"):
        load_checkpoint(missing)
    from tensorlogic.formats.safetensors import save_safetensors

    plain = save_safetensors({"x": torch.ones(1)}, tmp_path / "plain.safetensors")
    with pytest.raises(TrainError) as info:
        load_checkpoint(plain)
    assert str(info.value) == f"{plain} is not a TensorLogic training checkpoint (no 'tensorlogic.checkpoint' metadata)"


def test_resume_checks_names_and_shapes(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(3)})
    with pytest.raises(TrainError) as info:
        Trainer({"v": torch.ones(3, requires_grad=True)}, out=None, resume=path)
    assert str(info.value) == f"checkpoint {path} has no tensor for learnable 'v'"
    with pytest.raises(TrainError) as info:
        Trainer({"w": torch.ones(4, requires_grad=True)}, out=None, resume=path)
    assert str(info.value) == f"checkpoint {path}: learnable 'w' has shape [3] there, [4] here"
