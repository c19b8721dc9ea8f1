"""Run-keeping: RNG state and log history in checkpoints, save on interrupt.

Together with ``vhp_lightning.datamodules.resumable`` (the data position) these make a resumed
run equal an uninterrupted one, also from a checkpoint written in the middle of an epoch
(SIGTERM, Ctrl-C): ``RNGStateCallback`` restores the global RNGs (the model's sampling noise)
and the training loader (torchdata's ``StatefulDataLoader``) replays the interrupted epoch's
order and skips the batches already trained on. ``AppendingCSVLogger`` + ``LogHistory`` keep one
``metrics.csv`` per run dir across resumes: the rows written up to the checkpoint, then the
resumed run's rows (Lightning's ``CSVLogger`` deletes the file when it starts).
``SpawnTeardown`` closes a ``ddp_spawn`` worker's process group; ``launched_by_spawn`` is the
one place that reads Lightning's (private) launcher class.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from vhp_lightning.io.files import atomic_open


class RNGStateCallback(Callback):
    """Saves the torch/CUDA/NumPy/Python RNG states in checkpoints and restores them on resume.

    Restoring happens in ``on_train_start`` (after Lightning has restored everything else), so a
    run resumed from a checkpoint draws the same noise and the same shuffles as an uninterrupted
    run. All values are tensors or plain Python types, so the checkpoint loads with
    ``weights_only=True``.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
        kind, keys, pos, has_gauss, cached = numpy_state
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the stored RNG states for ``on_train_start``, after checking that each has the
        structure, dtypes and sizes of this process's own (``CheckpointError`` otherwise)."""
        from vhp_lightning.io.checkpoint import CheckpointError
        from vhp_lightning.io.trusted_state import FIX, UntrustedStateError, check_like

        own = self.state_dict()
        own.pop("cuda", None)
        stored = dict(state_dict) if isinstance(state_dict, dict) else state_dict
        try:
            cuda = stored.pop("cuda", None) if isinstance(stored, dict) else None
            check_like(stored, own, "the RNG state")
            if cuda is not None and not (
                isinstance(cuda, list) and all(torch.is_tensor(t) for t in cuda)
            ):
                raise UntrustedStateError("the RNG state['cuda'] must be a list of tensors")
            if stored["numpy"][0] != own["numpy"][0] or stored["numpy"][2] > 624:
                raise UntrustedStateError("the RNG state['numpy'] is not an MT19937 state")
        except UntrustedStateError as err:
            raise CheckpointError(f"{err}. {FIX}") from None
        self._pending = {**stored, **({"cuda": cuda} if cuda is not None else {})}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        from vhp_lightning.io.checkpoint import CheckpointError

        try:
            torch.set_rng_state(state["torch"])
            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            version, internal, gauss = state["python"]
            random.setstate((version, tuple(internal), gauss))
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(
                f"the checkpoint's RNG state cannot be restored ({type(err).__name__}: {err}). "
                "Use a checkpoint written by this run, or start fresh with ckpt_path=null."
            ) from None


class SaveOnInterrupt(Callback):
    """Writes ``<dirpath>/last.ckpt`` when training is stopped by Ctrl-C or SIGTERM.

    Lightning turns SIGTERM into a ``SIGTERMException`` at the next batch boundary. During
    ``fit`` a first Ctrl-C is handled the same way (it sets Lightning's SIGTERM flag, so training
    stops at the end of the step, where the state is whole), which makes a resume from the
    checkpoint exact; a second Ctrl-C stops at once (``KeyboardInterrupt``, not exact). Both
    reach ``on_exception``; the exception carries ``signum`` (SIGINT or SIGTERM) for the exit
    message. Other errors (a NaN loss above all) do not save: the last checkpoint on disk stays
    the last good state.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self._sigint: int | None = None  # the signal that stopped training, if it was Ctrl-C
        self._previous_handler: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sigint = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set in the main thread

        def first_ctrl_c(signum: int, frame: Any) -> None:
            self._sigint = signum
            trainer._signal_connector.received_sigterm = True  # stop at the step's end
            signal.signal(signal.SIGINT, self._previous_handler or signal.default_int_handler)
            rank_zero_info("Ctrl-C: stopping at the end of this step (Ctrl-C again: at once).")

        self._previous_handler = signal.signal(signal.SIGINT, first_ctrl_c)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if threading.current_thread() is threading.main_thread():
            self._restore_handler()
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if isinstance(exception, SIGTERMException) and not hasattr(exception, "signum"):
            exception.signum = self._sigint or signal.SIGTERM
        if trainer.state.fn != "fit":
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # This file is now the run's last checkpoint: a resumed run's ModelCheckpoint overwrites it
        # (no last-v1.ckpt).
        for cb in [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]:
            if cb.dirpath and Path(cb.dirpath) == self.path.parent:
                cb.last_model_path = str(self.path)
        trainer.save_checkpoint(str(self.path))
        rank_zero_info(
            f"Interrupted at step {trainer.global_step}: checkpoint written to {self.path}. "
            f"Resume with ckpt_path={self.path}"
        )


def launched_by_spawn(trainer: pl.Trainer) -> bool:
    """True when the trainer runs its stages in spawned worker processes (``ddp_spawn``): the
    launching process's trainer, model and callbacks then do not advance."""
    launcher = getattr(trainer.strategy, "launcher", None)
    return isinstance(launcher, _MultiProcessingLauncher)


class SpawnTeardown(Callback):
    """In a ``ddp_spawn`` worker, closes the process group when its stage ends.

    A spawned worker leaves with ``os._exit``, so Lightning's ``atexit`` hook that destroys the
    group never runs, and gloo's threads were still running when the C++ runtime shut down:
    "terminate called without an active exception" killed a rank with SIGABRT (5 of 14
    fast_dev_runs of ``trainer=ddp`` on the CPU; 0 of 8 with this hook). The last collective of
    the stage is done by now; the next ``fit``/``validate``/``test`` spawns new workers and a new
    group. Other launchers (plain ``ddp``, SLURM) keep their group for the next stage. Put it
    last: the callbacks after it in a teardown get no process group.
    """

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if launched_by_spawn(trainer) and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it does not delete an existing ``metrics.csv``: the
    first ``save()`` keeps its first ``keep`` data rows and appends. ``keep = None`` (the default,
    e.g. the end-of-run validate/test, which under ``ddp_spawn`` run in new worker processes)
    keeps them all; ``LogHistory`` sets 0 for a fresh fit and the checkpoint's count on resume."""

    def __init__(self, log_dir: str) -> None:
        self.keep: int | None = None
        self.rows = 0  # data rows in the file, once the first save has happened
        self._started = False
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        pass

    def _start(self) -> None:
        """Cut an existing file to its first ``keep`` rows (the history up to the checkpoint). No
        row is lost: rows that no checkpoint accounts for (all of them for a fresh run, those
        written after the checkpoint for a resume) move to ``metrics.superseded-<time>.csv``
        beside it first."""
        self._started = True
        path = self.metrics_file_path
        if not os.path.isfile(path):
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header, rows = list(reader.fieldnames or []), list(reader)
        if self.keep is None and rows:  # append to the whole history
            self.metrics_keys, self.rows = header, len(rows)
            return
        kept, cut = rows[: self.keep], rows[len(rows[: self.keep]) :]
        if cut:
            aside = _aside_path(path)
            with atomic_open(aside, newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header)
                writer.writeheader()
                writer.writerows(cut)
            rank_zero_warn(
                f"{path}: {len(cut)} row(s) that no checkpoint of this run accounts for "
                f"({'a fresh run' if not kept else 'written after the checkpoint'}) moved to "
                f"{aside}; this run's rows follow the first {len(kept)}."
            )
        if not kept:
            os.remove(path)
            return
        with atomic_open(path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
        self.metrics_keys, self.rows = header, len(kept)

    def save(self) -> None:
        if not self._started:
            self._start()
        self.rows += len(self.metrics)
        super().save()


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that a resumed run appends to: one ``metrics.csv`` from step 0 to the end.

    With ``LogHistory`` among the callbacks (``vhp_lightning.train`` adds it), a checkpoint
    records how many rows the file had when it was written; resuming from it in the same run dir
    keeps exactly those rows (no step twice, also when the run went on past the checkpoint before
    it stopped) and appends. A run that does not resume from this file's history starts it afresh.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        writer: _AppendingWriter | None = getattr(self, "_experiment", None)  # set by CSVLogger
        if writer is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer = self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return writer

    @property
    def metrics_file(self) -> str:
        return os.path.realpath(os.path.join(self.log_dir, _AppendingWriter.NAME_METRICS_FILE))

    def rows_written(self) -> int:
        """Flush the buffered metrics; the number of data rows now in ``metrics.csv``."""
        self.save()
        return self.experiment.rows

    def keep_rows(self, n: int) -> None:
        """Keep the first ``n`` rows of an existing ``metrics.csv`` (call before logging)."""
        self.experiment.keep = int(n)


class LogHistory(Callback):
    """Stores, in each checkpoint, how many rows each ``AppendingCSVLogger`` file holds, and on
    resume tells the logger of the same file to keep that many (``AppendingCSVLogger``).

    A file is named by its place in the run dir (``csv/metrics.csv``), so a run dir that was
    copied or moved resumes with its history."""

    def __init__(self) -> None:
        self._loggers: list[AppendingCSVLogger] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._loggers = [lg for lg in trainer.loggers if isinstance(lg, AppendingCSVLogger)]
        if stage == "fit" and _is_rank_zero():  # a fresh history, unless a resume says otherwise
            for lg in self._loggers:  # (load_state_dict runs after setup)
                lg.keep_rows(0)

    def state_dict(self) -> dict[str, Any]:
        if not _is_rank_zero():  # only rank 0 writes the log (and the checkpoint)
            return {}
        return {_run_dir_name(lg): lg.rows_written() for lg in self._loggers}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from vhp_lightning.io.checkpoint import CheckpointError
        from vhp_lightning.io.trusted_state import FIX, UntrustedStateError, check_count

        try:
            if not isinstance(state_dict, dict):
                raise UntrustedStateError("the LogHistory state must be a dict")
            counts = {str(k): check_count(v, f"rows of {k}") for k, v in state_dict.items()}
        except UntrustedStateError as err:
            raise CheckpointError(f"{err}. {FIX}") from None
        for lg in self._loggers:
            if _is_rank_zero():
                lg.keep_rows(counts.get(_run_dir_name(lg), 0))


def _run_dir_name(logger: AppendingCSVLogger) -> str:
    """The logger's file relative to its run dir, e.g. ``csv/metrics.csv``."""
    parts = [str(p) for p in (logger.name, logger.version) if p not in (None, "")]
    return "/".join([*parts, _AppendingWriter.NAME_METRICS_FILE])


def _aside_path(path: str) -> Path:
    """``metrics.superseded-<YYYYmmdd-HHMMSS>[-n].csv`` beside ``path``, a name not yet taken."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(path)
    candidate = base.with_name(f"{base.stem}.superseded-{stamp}.csv")
    n = 1
    while candidate.exists():
        candidate = base.with_name(f"{base.stem}.superseded-{stamp}-{n}.csv")
        n += 1
    return candidate


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0
