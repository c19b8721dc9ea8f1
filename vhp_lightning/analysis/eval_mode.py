"""Running a model for a look between (or after) training steps: eval mode, no gradients, and
the caller's random stream untouched.

``evaluating(model)`` is the block every figure and analysis runs its model in; ``forked_rng``
alone keeps the random stream of a training run as it was around a draw that is not part of
training (a second loss pass, a seeded prior sample).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import nn


def model_device(model: Any) -> torch.device:
    """Where ``model`` runs: its ``device`` attribute (a LightningModule's, a ``TrainedModel``'s),
    else the device of its first parameter, else the CPU."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def forked_rng(device: torch.device) -> AbstractContextManager[Any]:
    """``torch.random.fork_rng`` of the CPU's RNG and, for a CUDA ``device``, that device's: on
    exit both are as before the block."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


@contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """Eval mode and no gradients inside, in a ``forked_rng`` of the model's device; on exit the
    model's train/eval mode and the global RNG state are as before, so a figure drawn during
    training leaves the training stream untouched. A model that is not an ``nn.Module`` (any
    object with the methods an analysis calls) keeps its mode."""
    module = model if isinstance(model, nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        with torch.no_grad(), forked_rng(model_device(model)):
            yield
    finally:
        if module is not None:
            module.train(was_training)
