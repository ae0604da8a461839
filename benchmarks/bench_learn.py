"""Per-epoch time of a small MLP trained through ``tensorlogic.train.Trainer`` vs plain PyTorch.

Usage: ``python benchmarks/bench_learn.py [--device cpu|cuda] [--epochs 200] [--repeats 5]``.
Prints one table row per variant and the ratios to the plain loop (goal <= 1.1x). See NOTES-learn.md.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import torch

from tensorlogic.train import Trainer

SIZES = (64, 256, 256, 1)
ROWS = 4096


def _params(device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for i, (a, b) in enumerate(zip(SIZES, SIZES[1:])):
        out[f"w{i}"] = (torch.randn(a, b, generator=g) / a**0.5).to(device, dtype).requires_grad_(True)
        out[f"b{i}"] = torch.zeros(b, device=device, dtype=dtype, requires_grad=True)
    return out


def _forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = torch.tanh(x @ p["w0"] + p["b0"])
    h = torch.tanh(h @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_plain(x: torch.Tensor, y: torch.Tensor, device: str, epochs: int) -> float:
    p = _params(device, torch.float32)
    opt = torch.optim.Adam(p.values(), lr=1e-3)
    history = []

    def epoch() -> None:
        opt.zero_grad(set_to_none=True)
        loss = ((_forward(p, x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        history.append(loss.item())

    for _ in range(20):
        epoch()
    _sync(device)
    t = time.perf_counter()
    for _ in range(epochs):
        epoch()
    _sync(device)
    return (time.perf_counter() - t) / epochs


def time_trainer(x: torch.Tensor, y: torch.Tensor, device: str, epochs: int, dtype: torch.dtype,
                 printing: bool) -> float:
    p = _params(device, dtype)
    xd, yd = x.to(dtype), y.to(dtype)

    def step(epoch: int) -> torch.Tensor:
        return ((_forward(p, xd) - yd) ** 2).mean()

    out = io.StringIO() if printing else None
    Trainer(p, optimizer=("adam", {"lr": 1e-3}), epochs=20, out=out).run(step)  # warm-up
    trainer = Trainer(p, optimizer=("adam", {"lr": 1e-3}), epochs=epochs, out=out)
    _sync(device)
    t = time.perf_counter()
    trainer.run(step)
    _sync(device)
    return (time.perf_counter() - t) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, SIZES[0], generator=g).to(args.device)
    y = torch.randn(ROWS, 1, generator=g).to(args.device)
    variants = {
        "plain PyTorch (f32)": lambda: time_plain(x, y, args.device, args.epochs),
        "Trainer quiet (f32)": lambda: time_trainer(x, y, args.device, args.epochs, torch.float32, False),
        "Trainer printing (f32)": lambda: time_trainer(x, y, args.device, args.epochs, torch.float32, True),
        "Trainer quiet (f16 + f32 masters)": lambda: time_trainer(x, y, args.device, args.epochs, torch.float16,
                                                                  False),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):  # alternate variants so drift hits all of them alike
        for name, fn in variants.items():
            times[name].append(fn())
    base = statistics.median(times["plain PyTorch (f32)"])
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {dev}; MLP {SIZES}, {ROWS} rows, Adam, {args.epochs} epochs x {args.repeats} repeats")
    print(f"{'variant':36s} {'ms/epoch':>9s} {'ratio':>6s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:36s} {med * 1e3:9.3f} {med / base:6.3f}")


if __name__ == "__main__":
    main()
