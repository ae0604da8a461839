"""Gradient-descent training of learnable tensors, usable from Python without the language.

``Trainer`` runs an objective function once per epoch, differentiates it with torch autograd and
steps real ``torch.optim`` optimizers; float16 tensors train through float32 master copies.
The language's ``learn { }`` block is a thin layer over this package.
"""

from __future__ import annotations

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .errors import TrainError
from .optim import OPTIMIZERS, SCHEDULERS, make_optimizer, make_scheduler
from .trainer import Trainer

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "Checkpoint",
    "TrainError",
    "Trainer",
    "load_checkpoint",
    "make_optimizer",
    "make_scheduler",
    "save_checkpoint",
]
