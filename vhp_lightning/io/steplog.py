"""The one path by which per-step values reach the loggers: ``log_step``.

The beta-scheme's values (beta, C_t, kappa^2, the phase, a learned sigma; every
``trainer.log_every_n_steps`` steps, by default every step) and the module's training loss parts
(every ``log_parts_every_n_steps`` steps) are written straight to ``trainer.loggers`` instead of
through ``LightningModule.log``, whose per-call bookkeeping is Python time on every step
(bench/RESULTS.md measures the difference). Both are written from the end of a training batch,
when ``trainer.global_step`` already counts it, so the row is numbered ``global_step - 1``: the
batch just trained, from 0, the numbering Lightning's own logging uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def log_step(
    trainer: Any, row: dict[str, float] | Callable[[], dict[str, float]], every: int
) -> None:
    """Write ``row`` (name -> float, or a function building it, called only on a logged step)
    for the batch just trained to every logger of ``trainer``, on the steps ``0, every,
    2 * every, ...``; nothing when there is no logger."""
    step = trainer.global_step - 1
    if trainer.loggers and step % max(1, every) == 0:
        values = row() if callable(row) else row
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)
