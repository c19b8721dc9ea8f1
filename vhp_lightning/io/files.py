"""Writing a file so that it is either the old one or the new one, never half of either.

Every result, curve, metrics and checkpoint file of the project goes through ``atomic_open``: the
data go to a temporary file beside the target, are flushed and fsync'ed, and the temporary file
is then renamed over the target (``os.replace``, atomic on POSIX). Ctrl-C, SIGTERM, a full disk
or an exception while writing leave the old file whole and no temporary file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", newline: str | None = None
) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``mode`` ``"w"`` or ``"wb"``); on a
    clean exit it replaces ``path`` (whose folder is created), on an exception it is removed.

    The file gets the usual mode (0o666 less the umask), not ``mkstemp``'s private 0o600.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, newline=newline) if mode == "w" else os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: str | os.PathLike, data: Any, default: Any = None) -> None:
    """Write ``data`` as indented JSON (with a final newline) to ``path`` atomically;
    ``default`` as in ``json.dump`` (e.g. ``float`` for numpy scalars)."""
    with atomic_open(path) as f:
        json.dump(data, f, indent=2, default=default)
        f.write("\n")
