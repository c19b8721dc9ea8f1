"""The run dir: one process at a time (a lock), writable before the first step, and a record
(``.hydra/*.yaml``, ``train.log``) that changes only once the run has been accepted."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vhp_lightning.io.config import redact
from vhp_lightning.io.files import write_text
from vhp_lightning.runs.record import record_path

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".vhp-train.lock"


class RunDirError(RuntimeError):
    """The run dir cannot be used: not writable, or it holds another run's checkpoints."""


class RunDirLockedError(RunDirError):
    """Another live process is training in the same run dir."""


def _launched_rank() -> bool:
    """True in a process that a launcher (Lightning's DDP, torchrun, SLURM) started as a rank
    other than 0 of a run: rank 0 holds the run dir's lock for all of them."""
    keys = ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return any(os.environ.get(k, "0") not in ("", "0") for k in keys)


@contextlib.contextmanager
def run_dir_lock(run_dir: Path | None) -> Iterator[None]:
    """Hold ``<run dir>/.vhp-train.lock`` while training; refuse if a live process holds it.

    The lock is an ``flock`` on the file, which the kernel releases when the holder exits in any
    way (also ``kill -9``); the file names the holder's PID and host for the error message. A lock
    file left by a dead process is therefore simply taken over. Released (and removed) on return
    and on exceptions.
    """
    if run_dir is None or _launched_rank() or fcntl is None:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirLockedError(
                f"run dir {run_dir} is in use: {holder} holds {path}. Two runs in one dir would "
                "overwrite each other's checkpoints and logs. Wait for it to finish, or give this "
                "run its own dir (hydra.run.dir=...). If no such process runs, delete the lock "
                "file."
            ) from None
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break  # locked the file that is still at `path` (not one a releaser just removed)
        os.close(fd)
    stale = os.read(fd, 200).decode(errors="replace").strip()
    if stale:
        log.info("Taking over the stale lock of a process that is gone (%s): %s", stale, path)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def check_writable(folder: Path) -> None:
    """Raise ``RunDirError`` unless a file can be created in ``folder`` (or, when it does not
    exist yet, in its nearest existing parent, which is then not created): fails before the
    first training step instead of at the first checkpoint."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a folder")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise RunDirError(
            f"cannot write to {folder} ({type(err).__name__}: {err}). Training would fail at the "
            "first checkpoint; nothing was trained. Make it writable, free the disk, or point "
            "hydra.run.dir (or callbacks.model_checkpoint.dirpath) at a writable folder."
        ) from err


def write_run_record(cfg: DictConfig, run_dir: Path | None) -> None:
    """Write ``<run dir>/.hydra/{config,hydra,overrides}.yaml``, secrets redacted, once the run
    has been accepted (lock taken, checkpoint and config checked). Hydra's own copy is turned
    off (``hydra.output_subdir: null`` in train.yaml): it is written before the task starts, so a
    refused command would have rewritten the record of the run it was refused for."""
    if run_dir is None or not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    files = {
        "config.yaml": OmegaConf.to_container(cfg, resolve=False),
        "hydra.yaml": {"hydra": OmegaConf.to_container(hydra_cfg, resolve=False, enum_to_str=True)},
        "overrides.yaml": list(hydra_cfg.overrides.task),
    }
    for name, data in files.items():
        write_text(record_path(run_dir, name), yaml.safe_dump(redact(data), sort_keys=False))


@contextlib.contextmanager
def log_file(run_dir: Path | None) -> Iterator[Callable[[], None]]:
    """Yield ``accept()``: until it is called the run's log lines are held in memory; then they
    and all later ones go to ``<run dir>/train.log`` (appending). A refused command (a second
    process, a used run dir, a resume with another config) never writes into a run's log."""
    if run_dir is None or not HydraConfig.initialized():
        yield lambda: None
        return
    root = logging.getLogger()
    held = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    root.addHandler(held)
    handlers: list[logging.Handler] = [held]

    def accept() -> None:
        if len(handlers) > 1:
            return
        file = logging.FileHandler(run_dir / "train.log", mode="a")
        file.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        held.setTarget(file)
        held.flush()
        root.removeHandler(held)
        root.addHandler(file)
        handlers.append(file)

    try:
        yield accept
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
