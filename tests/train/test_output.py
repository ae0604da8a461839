"""The progress text, exactly, for runs whose numbers are worked out by hand."""

from __future__ import annotations

import io

import pytest
import torch

from tensorlogic.train import Trainer
from tensorlogic.train.trainer import rust_f32_debug, rust_float

# w = 0.5, b = 0.75, loss w*w + b*b, sgd lr 0.25: each step halves both (w -= 0.25 * 2w), exact in binary.
# losses 0.8125, 0.203125, 0.05078125; gradient norms |(2w, 2b)| = sqrt(3.25), sqrt(3.25)/2, sqrt(3.25)/4.
EXPECTED = """
=== Learning Started ===
Optimizer: sgd
Epochs: 3
  lr: 0.25

Learnable parameter: w
  Shape: [1]
  Initial values: [0.5]

Learnable parameter: b
  Shape: [1]
  Initial values: [0.75]

--- Training Progress ---
Epoch   1/3: Loss = 0.812500, Grad Norm: 1.802776, w = [0.2500, ...]
Epoch   2/3: Loss = 0.203125, Grad Norm: 0.901388
Epoch   3/3: Loss = 0.050781, Grad Norm: 0.450694, w = [0.0625, ...]

=== Learning Completed ===

Final Parameter Values:
  w: [0.0625]
  b: [0.09375]
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_three_epoch_run_prints_the_originals_layout(dtype: torch.dtype) -> None:
    w = torch.tensor([0.5], dtype=dtype, requires_grad=True)
    b = torch.tensor([0.75], dtype=dtype, requires_grad=True)
    out = io.StringIO()
    history = Trainer({"w": w, "b": b}, optimizer=("sgd", {"lr": 0.25}), epochs=3, out=out).run(
        lambda epoch: (w * w + b * b).sum())
    assert out.getvalue() == EXPECTED
    assert history == [0.8125, 0.203125, 0.05078125]


def test_scheduler_block_shapes_values_and_lr_column() -> None:
    w = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float16, requires_grad=True)
    out = io.StringIO()
    Trainer({"w": w}, optimizer=("adam", {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8}),
            scheduler=("step", {"step_size": 5, "gamma": 0.5}), epochs=12, out=out).run(lambda e: (w * w).sum())
    lines = out.getvalue().splitlines()
    assert lines[1:9] == ["=== Learning Started ===", "Optimizer: adam", "Epochs: 12", "  lr: 0.01",
                          "  betas: [0.9, 0.999]", "  eps: 0.00000001", "", "Scheduler: step"]
    assert lines[9:11] == ["  step_size: 5", "  gamma: 0.5"]
    # the original shows min(5, rows) values of the flattened tensor, as float32 Debug text
    assert "  Shape: [2, 3]" in lines
    assert "  Initial values: [0.099975586, 0.19995117]" in lines
    epoch_lines = [ln for ln in lines if ln.startswith("Epoch ")]
    assert len(epoch_lines) == 12
    assert ", LR:" not in epoch_lines[0]
    # epoch 11 (index 10) is a report epoch; after 11 scheduler steps lr = 0.01 * 0.5**2
    assert epoch_lines[10].endswith(", LR: 0.002500")
    assert epoch_lines[11].endswith(", LR: 0.002500")
    assert lines[-1].startswith("  w: [") and len(lines[-1].split(",")) == 5


def test_long_runs_print_every_kth_epoch() -> None:
    w = torch.ones(1, requires_grad=True)
    out = io.StringIO()
    Trainer({"w": w}, optimizer=("sgd", {"lr": 0.001}), epochs=450, out=out).run(lambda e: (w * w).sum())
    epoch_lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("Epoch ")]
    assert [ln.split(":")[0] for ln in epoch_lines[:3]] == ["Epoch   1/450", "Epoch  11/450", "Epoch  21/450"]
    assert epoch_lines[-1].startswith("Epoch 450/450: ")
    assert len(epoch_lines) == 46
    assert all(", w = [" in ln for ln in epoch_lines)


def test_silent_when_out_is_none(capsys: pytest.CaptureFixture[str]) -> None:
    w = torch.ones(1, requires_grad=True)
    assert len(Trainer({"w": w}, epochs=4, out=None).run(lambda e: (w * w).sum())) == 4
    assert capsys.readouterr().out == ""


def test_default_out_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    w = torch.ones(1, requires_grad=True)
    Trainer({"w": w}, epochs=1).run(lambda e: (w * w).sum())
    assert "=== Learning Completed ===" in capsys.readouterr().out


def test_progress_bar_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    w = torch.ones(1, requires_grad=True)
    out = Tty()
    Trainer({"w": w}, optimizer=("sgd", {"lr": 0.001}), epochs=300, out=out).run(lambda e: (w * w).sum())
    text = out.getvalue()
    assert "Epoch 300/300: Loss = " in text and "=== Learning Completed ===" in text


@pytest.mark.parametrize("value,text", [
    (1.0, "1.0"), (0.5, "0.5"), (0.1, "0.1"), (123456.0, "123456.0"), (1e-5, "1e-5"), (1.5e-7, "1.5e-7"),
    (1e16, "1e16"), (0.0001, "0.0001"), (-2.25, "-2.25"), (0.0, "0.0"), (float("nan"), "NaN"),
])
def test_float32_debug_text(value: float, text: str) -> None:
    # Rust's {:?} for f32: shortest round-trip digits, exponent outside [1e-4, 1e16)
    assert rust_f32_debug(value) == text


@pytest.mark.parametrize("value,text", [(0.1, "0.1"), (10.0, "10"), (1e-8, "0.00000001"), (0.999, "0.999")])
def test_f64_display_text(value: float, text: str) -> None:
    assert rust_float(value) == text
