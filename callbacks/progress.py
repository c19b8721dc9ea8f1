"""What the console shows while training: one progress line and a one-line parameter summary.

``StepProgress`` replaces Lightning's per-epoch bars (which read ``Epoch 237/-2`` in a
step-limited run) with one line over the whole run, e.g.::

    step 12 340/30 000 (41%) · 4:12 left · β 3.1e-2 · Ĉ/κ² 0.83 · main phase

the global step against ``trainer.max_steps`` (epochs when ``max_steps = -1``), the time left at
the run's mean speed so far, and what the beta-scheme logs (``callbacks/base.py``:
``<scheme>/beta``, ``<scheme>/c_hat``, ``<scheme>/kappa_sq``, ``<scheme>/train_prior``): beta,
the running constraint C_t over its bound kappa^2 (eq. 11; C_t alone without a bound) and REWO's
phase (Alg. 1: the initial phase trains the encoder/decoder only, the main phase the prior too).
It is redrawn in place at most every ``refresh_seconds`` on a terminal; in a log file (CI, a
cluster job: stdout is not a TTY) it prints a full line whenever ``log_every_seconds`` or
``log_every_percent`` of the run have passed since the last one, and a last line at the end.
Between refreshes a step costs one clock read. The end-of-run importance-sampled ``test/nll``
(minutes to hours: S = 5000 samples per image) prints, in a log, at most every
``log_every_seconds``::

    test/nll 400/2 000 images (20%) · 4:10 elapsed · 16:40 left

``PartsSummary`` replaces Lightning's model-summary table (which lists the test metric as a
module and prints ``Total FLOPs: 0``) with one line of parameter counts per part of the model.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelSummary, ProgressBar
from pytorch_lightning.utilities.model_summary import get_human_readable_count

from vhp_lightning.callbacks.base import find_scheme

log = logging.getLogger(__name__)

# Lightning notices that say nothing a user of this repo can act on (dropped by quiet_lightning):
# advertisements, absent accelerators, our own summary replacing Lightning's, and the stop at
# max_steps that the closing summary reports.
NOTICES = re.compile(
    r"💡 Tip:|(TPU|HPU) available:|GPU available: False|LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES"
    r"|Trainer already configured with model summary|`Trainer.fit` stopped: `max_steps="
)
_NOTICE_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOTICES.search(str(record.msg))


def quiet_lightning() -> None:
    """Drop Lightning's non-actionable start-up notices (``NOTICES``); idempotent."""
    for name in _NOTICE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices())


# --- formatting -----------------------------------------------------------------------------
def format_count(n: int) -> str:
    """``12340`` -> ``"12 340"`` (thousands separated by a space)."""
    return f"{int(n):,}".replace(",", " ")


def format_clock(seconds: float) -> str:
    """``252`` -> ``"4:12"``, ``3852`` -> ``"1:04:12"``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_number(x: float) -> str:
    """Three significant digits in [0.1, 1000) (``"0.83"``), else short scientific
    (``0.031`` -> ``"3.1e-2"``). The range is decided on the rounded value, so a number just
    below 0.1 that rounds to it prints ``"0.0999"``, never ``"1.0e-1"``, and 999.7 ``"1.0e3"``."""
    if x != x:  # NaN
        return "nan"
    sci = f"{x:.1e}"
    if x == 0 or (abs(float(sci)) >= 0.1 and abs(float(f"{x:.3g}")) < 1e3):
        return f"{x:.3g}"
    mantissa, exponent = sci.split("e")
    return f"{mantissa}e{int(exponent)}"


def scheme_text(metrics: dict[str, Any], had_initial_phase: bool, ascii_only: bool = False) -> str:
    """``"β 3.1e-2 · Ĉ/κ² 0.83 · main phase"`` from a scheme's logged metrics.

    ``metrics``: ``trainer.callback_metrics`` (keys ``<scheme>/beta``, ``/c_hat``, ``/kappa_sq``,
    ``/train_prior``; other keys ignored). The phase is shown while ``train_prior`` is 0
    ("initial phase") and, once the run had one (``had_initial_phase``), after it ("main
    phase"); GECO, warm-up and constant beta train the prior throughout and show no phase.
    """
    beta_key = next((k for k in metrics if k.endswith("/beta")), None)
    if beta_key is None:
        return ""
    prefix = beta_key[: -len("beta")]

    def get(name: str) -> float | None:
        value = metrics.get(prefix + name)
        return None if value is None else float(value)

    beta, c_hat, kappa_sq, train_prior = map(get, ("beta", "c_hat", "kappa_sq", "train_prior"))
    if ascii_only:
        sep, b, c, ratio = " | ", "beta", "C_t", "C_t/kappa^2"
    else:
        sep, b, c, ratio = " · ", "β", "Ĉ", "Ĉ/κ²"
    parts = [f"{b} {'?' if beta is None else format_number(beta)}"]
    if c_hat is not None and kappa_sq:
        parts.append(f"{ratio} {format_number(c_hat / kappa_sq)}")
    elif c_hat is not None:
        parts.append(f"{c} {format_number(c_hat)}")
    if train_prior is not None and train_prior < 0.5:
        parts.append("initial phase")
    elif train_prior is not None and had_initial_phase:
        parts.append("main phase")
    return sep.join(parts)


class StepProgress(ProgressBar):
    """One progress line over the whole run with an ETA and the beta-scheme's state.

    Args:
        refresh_seconds: on a terminal, redraw at most this often; elsewhere, check at most
            this often whether a line is due (0 = every step: tests).
        log_every_seconds: without a terminal, a line at least this often...
        log_every_percent: ...and at least every this much of the run.
        interactive: ``None`` = redraw in place iff stdout is a TTY; ``True``/``False`` forces it.
        quiet: drop Lightning's non-actionable notices (``quiet_lightning``).
    """

    def __init__(
        self,
        refresh_seconds: float = 0.5,
        log_every_seconds: float = 60.0,
        log_every_percent: float = 10.0,
        interactive: bool | None = None,
        quiet: bool = True,
    ) -> None:
        super().__init__()
        if refresh_seconds < 0 or log_every_seconds <= 0 or not 0 < log_every_percent <= 100:
            raise ValueError(
                "need refresh_seconds >= 0, log_every_seconds > 0 and 0 < log_every_percent <= "
                f"100; got {refresh_seconds}, {log_every_seconds}, {log_every_percent}"
            )
        self.refresh_seconds = float(refresh_seconds)
        self.log_every_seconds = float(log_every_seconds)
        self.log_every_percent = float(log_every_percent)
        self.interactive = interactive
        if quiet:
            quiet_lightning()
        self._enabled = True
        self._stream: TextIO | None = None
        self._tty = False
        self._ascii = False
        self._next_check = 0.0  # monotonic time of the next look at the trainer
        self._last_line_time = 0.0  # without a TTY: when the last line was printed...
        self._last_line_progress = 0.0  # ...and at which progress
        self._t0 = 0.0
        self._progress0 = 0.0
        self._had_initial_phase = False
        self._line = ""  # the current training line (a TTY redraws it after evaluation)
        self._drawn = False  # a TTY line is on screen without its newline
        self._test_t0 = self._last_test_line = 0.0  # without a TTY: test/nll lines (testing)
        self._last_test_done = 0

    # --- ProgressBar interface ------------------------------------------------------------------
    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print a message on its own line; a terminal's progress line is redrawn below it."""
        self._clear()
        print(*args, **kwargs, file=self._out())
        if self._tty and self._line:
            self._draw(self._line)

    # --- hooks ----------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stream = self._out()
        self._tty = stream.isatty() if self.interactive is None else bool(self.interactive)
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "β Ĉ/κ² · ━".encode(encoding)
            self._ascii = False
        except (UnicodeEncodeError, LookupError):
            self._ascii = True
        self._t0 = self._last_line_time = time.monotonic()
        self._progress0 = self._last_line_progress = self._progress(trainer)[0]
        self._next_check = 0.0
        self._had_initial_phase = _switched(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.monotonic()
        if now < self._next_check or not self._enabled:
            return
        self._next_check = now + self.refresh_seconds
        self._line = self.render(trainer, now)
        if self._tty:
            self._draw(self._line)
            return
        progress, total = self._progress(trainer)
        due_percent = (
            total is not None
            and (progress - self._last_line_progress) * 100 >= self.log_every_percent * total
        )
        if due_percent or now - self._last_line_time >= self.log_every_seconds:
            self._write_line(self._line)
            self._last_line_time, self._last_line_progress = now, progress

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled:
            return
        self._line = self.render(trainer, time.monotonic(), final=True)
        if self._tty:
            self._draw(self._line)
            self._out().write("\n")
            self._out().flush()
            self._drawn = False
        else:
            self._write_line(self._line)
        self._line = ""

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch("validating", trainer, batch_idx, trainer.num_val_batches)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch("testing", trainer, batch_idx, trainer.num_test_batches)
        now = time.monotonic()
        if self._tty or not self._enabled or now - self._last_test_line < self.log_every_seconds:
            return
        progress = getattr(pl_module, "nll_progress", None)
        if progress and progress[0] and progress[0] != self._last_test_done:  # it moved
            self._write_line(self._nll_line(progress, now))
            self._last_test_line, self._last_test_done = now, progress[0]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_eval()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_eval()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test_t0 = self._last_test_line = time.monotonic()
        self._last_test_done = 0

    def _nll_line(self, progress: tuple[int, int | None], now: float) -> str:
        """``test/nll 400/2 000 images (20%) · 4:10 elapsed · 16:40 left``: the importance-
        sampled NLL's progress, ``(done > 0, total or None)`` (``pl_module.nll_progress``)."""
        done, total = progress
        sep = " | " if self._ascii else " · "
        elapsed = now - self._test_t0
        parts = [f"test/nll {format_count(done)}"]
        if total:
            parts[0] += f"/{format_count(total)} images ({100 * done / total:.0f}%)"
            left = (total - done) * elapsed / done
            return sep.join(
                [*parts, f"{format_clock(elapsed)} elapsed", f"{format_clock(left)} left"]
            )
        return sep.join([parts[0] + " images", f"{format_clock(elapsed)} elapsed"])

    # --- the line ---------------------------------------------------------------------------------
    def render(self, trainer: pl.Trainer, now: float, final: bool = False) -> str:
        """The progress line for the trainer's current state (see the module docstring)."""
        progress, total = self._progress(trainer)
        sep = " | " if self._ascii else " · "
        if trainer.max_steps is not None and trainer.max_steps > 0:
            head = f"step {format_count(trainer.global_step)}/{format_count(trainer.max_steps)}"
        elif total is not None:
            head = f"epoch {trainer.current_epoch + (0 if final else 1)}/{int(total)}"
        else:
            head = f"step {format_count(trainer.global_step)}"
        if total:
            head += f" ({100 * min(progress / total, 1):.0f}%)"
        elapsed = now - self._t0
        parts = [head]
        if final or total is None:
            parts.append(f"{format_clock(elapsed)} elapsed")
        else:
            done = progress - self._progress0
            left = (total - progress) * elapsed / done if done > 0 and elapsed > 0 else None
            parts.append("--:-- left" if left is None else f"{format_clock(left)} left")
        metrics = trainer.callback_metrics
        tp = next((v for k, v in metrics.items() if k.endswith("/train_prior")), None)
        if tp is not None and not self._had_initial_phase:  # seen now, or switched unseen
            self._had_initial_phase = float(tp) < 0.5 or _switched(trainer)
        scheme = scheme_text(metrics, self._had_initial_phase, self._ascii)
        return sep.join([*parts, scheme] if scheme else parts)

    def _progress(self, trainer: pl.Trainer) -> tuple[float, float | None]:
        """(progress, total) in steps, or in epochs when only ``max_epochs`` limits the run."""
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return float(trainer.global_step), float(trainer.max_steps)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            n = trainer.num_training_batches
            within = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            fraction = within / n if n and n != float("inf") else 0.0
            return trainer.current_epoch + min(fraction, 1.0), float(trainer.max_epochs)
        return float(trainer.global_step), None

    # --- output -----------------------------------------------------------------------------------
    def _out(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def _write_line(self, text: str) -> None:
        stream = self._out()
        stream.write(text + "\n")
        stream.flush()

    def _draw(self, text: str) -> None:
        stream = self._out()
        stream.write("\r\x1b[K" + text)
        stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self._out().write("\r\x1b[K")
            self._drawn = False

    def _eval_batch(self, what: str, trainer: pl.Trainer, batch_idx: int, batches: Any) -> None:
        """On a terminal: ``<training line> · validating 3/12`` (or alone outside fit)."""
        now = time.monotonic()
        if not (self._tty and self._enabled) or now < self._next_check or trainer.sanity_checking:
            return
        self._next_check = now + self.refresh_seconds
        sep = " | " if self._ascii else " · "
        total = sum(batches) if isinstance(batches, (list, tuple)) else batches
        text = f"{what} {batch_idx + 1}/{format_count(total) if total != float('inf') else '?'}"
        self._draw(f"{self._line}{sep}{text}" if self._line else text)

    def _end_eval(self) -> None:
        if not self._tty:
            return
        if self._line:
            self._draw(self._line)
        else:
            self._clear()
            self._out().flush()


def parameter_summary(pl_module: pl.LightningModule) -> str:
    """``"VHP: 21.6 K parameters (encoder 5.4 K, decoder 5.6 K, ...)"``: the trainable
    parameters of ``pl_module.model`` (else the module) per direct child that has any."""
    model = getattr(pl_module, "model", pl_module)

    def count(module: Any) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    parts = [(name, count(child)) for name, child in model.named_children()]
    listed = ", ".join(f"{name} {get_human_readable_count(n).strip()}" for name, n in parts if n)
    total = get_human_readable_count(count(model)).strip()
    return f"{type(model).__name__}: {total} parameters" + (f" ({listed})" if listed else "")


class PartsSummary(ModelSummary):
    """One log line of parameter counts per model part at the start of fit (rank zero), in
    place of Lightning's table. ``enabled`` follows ``trainer.enable_model_summary``."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(max_depth=1)
        self.enabled = bool(enabled)
        quiet_lightning()  # our summary replacing Lightning's is no news

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled and trainer.is_global_zero:
            log.info(parameter_summary(pl_module))


def _switched(trainer: pl.Trainer) -> bool:
    """Whether the run's beta-scheme has left an initial phase (REWO's ``switch_step`` set)."""
    scheme = find_scheme(trainer)
    return scheme is not None and scheme.switch_step is not None
