"""Ctrl-C and SIGTERM during the evaluation stages that run after training.

Lightning turns a SIGTERM into ``trainer.received_sigterm`` (and a ``SIGTERMException`` at the
next step) and a Ctrl-C into ``KeyboardInterrupt``; during training the run-state callback saves a
checkpoint to resume from. After training (the end-of-run ``validate``/``test``, whose
importance-sampled ``test/nll`` can take long) the checkpoint is already complete, so a stop
there is an ``EvaluationInterrupted``: ``vhp_lightning.train`` says the run finished and how to
measure the rest, instead of offering a resume.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from pytorch_lightning.utilities.exceptions import SIGTERMException


class EvaluationInterrupted(SIGTERMException):
    """A SIGTERM or Ctrl-C stopped an evaluation stage that runs after training finished (the
    end-of-run ``validate``/``test``): the checkpoint is complete, nothing needs resuming.

    Attributes:
        stage: ``"validate"`` or ``"test"``.
        signum: ``signal.SIGTERM`` or ``signal.SIGINT``.
        step: the training step of the model (the last one).
    """

    def __init__(self, stage: str, signum: int, step: int) -> None:
        super().__init__(128 + signum)
        self.stage, self.signum, self.step = stage, signum, step


def stop_if_terminated(trainer: Any, stage: str, step: int) -> None:
    """Raise ``EvaluationInterrupted`` when ``trainer`` (``None``: no trainer) has received a
    SIGTERM; called between slices of a long evaluation so that it stops within one slice."""
    if trainer is not None and trainer.received_sigterm:
        raise EvaluationInterrupted(stage, signal.SIGTERM, step)


@contextlib.contextmanager
def interruptible(trainer: Any, step: int) -> Iterator[None]:
    """In an evaluation stage after training (``trainer.validate``/``test``), turn a received
    SIGTERM or a Ctrl-C into ``EvaluationInterrupted`` so the caller can tell the run apart from
    an interrupted training (whose checkpoint is to be resumed). Elsewhere (training, no
    trainer) the block runs as it is."""
    fn = trainer.state.fn if trainer is not None else None
    stage = str(getattr(fn, "value", fn))
    if stage not in ("validate", "test"):
        yield
        return
    stop_if_terminated(trainer, stage, step)
    try:
        yield
    except KeyboardInterrupt:
        raise EvaluationInterrupted(stage, signal.SIGINT, step) from None
