"""Collectors over sweeps: read run dirs and ``results/*.csv``, write ``results/*.md``.

The pieces every collector shares live here: finding run dirs, reading a run's overrides and its
beta-scheme trace, checking a results CSV before it is used, appending result rows to a CSV
without ever overwriting one, and writing a Markdown table from one column spec (``Column``,
``markdown_table``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import numpy as np

from vhp_lightning.io.files import atomic_open
from vhp_lightning.runs.record import RECORD, read_overrides

CONFLICT_MARKERS = ("<<<<<<<", "|||||||", "=======", ">>>>>>>")  # git's merge-conflict lines


class ResultsFileError(ValueError):
    """A results CSV that does not parse as the report writes it; refused before any write."""


class ReportWriteError(OSError):
    """A report file that could not be written (full disk, read-only folder); names the file."""


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts of strings."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_results(path: Path, columns: Sequence[str], key: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a results CSV that ``append_rows`` wrote with ``columns``, checked first.

    Refused with a ``ResultsFileError`` naming the file, the line and the fix: an empty file, a
    merge-conflict marker, a separator other than ``,``, a first line that is not a header of
    known columns in ``columns``' order holding every ``key`` column (a file written before
    later columns were added lacks them: accepted), a row whose field count differs from the
    header's. The file itself is only read.
    """

    def refuse(line: int, problem: str, fix: str) -> ResultsFileError:
        return ResultsFileError(
            f"{path}, line {line}: {problem}. Nothing was written; {fix}, or, for a committed "
            f"file, restore it with `git checkout -- {path}`"
        )

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise refuse(line, "not UTF-8 text", "save it as UTF-8") from e
    lines = text.splitlines()
    for n, text_line in enumerate(lines, 1):
        if text_line.startswith(CONFLICT_MARKERS):
            raise refuse(
                n,
                f"a merge-conflict marker `{text_line[:7]}`",
                "resolve the conflict (keep the rows of one side, delete the marker lines)",
            )
    if not text.strip():
        raise refuse(1, "the file is empty (no header line)", "delete it")
    reader = csv.reader(io.StringIO(text, newline=""))
    expected = ",".join(columns)
    try:
        header = next(reader)
        if len(header) == 1 and ";" in header[0]:
            raise refuse(1, "';' separates the fields", "write it back with ',' separators")
        unknown = [name for name in header if name not in columns]
        if not header or header[0] in unknown:
            raise refuse(
                1,
                f"not a header (expected the column names `{expected}`)",
                "put the header line back as the first line",
            )
        if unknown:
            raise refuse(1, f"unknown column(s) {', '.join(unknown)}", f"use `{expected}`")
        order = [columns.index(name) for name in header]
        if order != sorted(set(order)):
            raise refuse(1, "columns repeated or out of order", f"use `{expected}`")
        if missing := [name for name in key if name not in header]:
            raise refuse(1, f"no key column(s) {', '.join(missing)}", f"use `{expected}`")
        rows = []
        for fields in reader:
            if not fields:  # a blank line
                continue
            if len(fields) != len(header):
                raw = lines[reader.line_num - 1] if reader.line_num <= len(lines) else ""
                semicolon = " (';' separators?)" if ";" in raw else ""
                raise refuse(
                    reader.line_num,
                    f"{len(fields)} field(s){semicolon}, the header has {len(header)}",
                    "repair or delete that line (`git diff` shows what changed)",
                )
            row = dict.fromkeys(columns, "")  # a column the file predates: empty
            row.update(zip(header, fields, strict=True))
            rows.append(row)
    except csv.Error as e:
        raise refuse(reader.line_num, f"not CSV ({e})", "repair that line") from e
    return rows


@contextmanager
def open_for_writing(path: Path, mode: str = "w", newline: str | None = None) -> Iterator[IO]:
    """``atomic_open(path)`` whose ``OSError`` (a full disk, a read-only folder) becomes a
    ``ReportWriteError`` naming ``path``; the old file, if any, stays whole."""
    try:
        with atomic_open(path, mode, newline=newline) as f:
            yield f
    except ReportWriteError:
        raise
    except OSError as e:
        raise ReportWriteError(
            f"cannot write {path}: {e.strerror or e}; the old file, if any, is unchanged. Free "
            "space or choose a writable place with --out/--csv/--figures"
        ) from e


def write_report_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``open_for_writing``)."""
    with open_for_writing(path) as f:
        f.write(text)


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Every run dir (holding ``.hydra/``) at or below ``paths``."""
    runs: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a folder (a run dir or a sweep dir)")
        runs += sorted(p.parent for p in path.rglob(RECORD) if p.is_dir())
    return runs


def overrides(job: Path) -> dict[str, str]:
    """A run's command-line overrides (``.hydra/overrides.yaml``) as ``{key: value}``, with a
    leading ``+`` dropped (``+table1=rewo`` -> ``{"table1": "rewo"}``)."""
    items = read_overrides(job)
    return {name.lstrip("+"): value for name, _, value in (i.partition("=") for i in items)}


def scheme_trace(job: Path) -> dict[str, np.ndarray]:
    """``step``, ``beta``, ``c_hat``, ``train_prior`` and ``sigma`` (a learned likelihood sigma,
    ``train/sigma``; NaN without one) per logged step of a run's CSV log (the scheme's
    ``<name>/...`` columns); empty arrays when the run has none."""
    rows: dict[int, dict[str, float]] = {}
    for metrics_csv in sorted(job.glob("csv/**/metrics.csv")):
        for row in read_csv(metrics_csv):
            for key, value in row.items():
                name = key.rsplit("/", 1)[-1]
                if "/" in key and name in ("beta", "c_hat", "train_prior", "sigma") and value:
                    rows.setdefault(int(float(row["step"])), {})[name] = float(value)
    steps = sorted(s for s, r in rows.items() if "beta" in r)
    out = {"step": np.array(steps, dtype=np.int64)}
    for name in ("beta", "c_hat", "train_prior", "sigma"):
        out[name] = np.array([rows[s].get(name, math.nan) for s in steps])
    return out


def switch_step(trace: dict[str, np.ndarray]) -> int | None:
    """The first step of REWO's main phase in a ``scheme_trace`` (None: no phase switch seen)."""
    if not len(trace["step"]) or not np.isfinite(trace["train_prior"]).any():
        return None
    on = np.flatnonzero(trace["train_prior"] > 0.5)
    return int(trace["step"][on[0]]) if len(on) and on[0] > 0 else None


def append_rows(
    csv_path: Path, rows: list[dict[str, Any]], columns: Sequence[str], key: Sequence[str]
) -> tuple[int, int]:
    """Append the rows whose ``key`` columns are new to ``csv_path``; returns (added, kept).

    A row already there is never overwritten, and a ``csv_path`` that does not parse
    (``read_results``) is refused before anything is written. Written to a temporary file and
    renamed: an interrupted write leaves the old CSV whole.
    """
    existing = read_results(csv_path, columns, key) if csv_path.is_file() else []
    have = {tuple(str(r.get(k, "")) for k in key) for r in existing}
    new = []
    for r in rows:
        if (k := tuple(str(r.get(c, "")) for c in key)) not in have:
            have.add(k)
            new.append(r)
    if new:
        with open_for_writing(csv_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows([*existing, *new])
    return len(new), len(rows) - len(new)


def mean_std(values: list[float], digits: int = 3, signed: bool = False) -> str:
    """``"m"`` for one value, ``"m ± s"`` (sample std) for several, ``"—"`` for none; ``signed``
    writes the mean's sign (``"+0.57 ± 0.07"``), as for a difference."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "—"
    mean = float(np.mean(values))
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if len(values) == 1:
        return text
    return f"{text} ± {float(np.std(values, ddof=1)):.{digits}f}"


def floats(rows: list[dict[str, str]], key: str) -> list[float]:
    """The non-empty values of column ``key`` as floats."""
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


Group = TypeVar("Group")  # what one line of a Markdown table is made from: a CSV row, a run, ...


@dataclass(frozen=True)
class Column(Generic[Group]):
    """One column of a Markdown table: its ``header`` and the ``cell`` text of the ``Group``
    one line is made from (a ``|`` inside either is escaped, ``\\|``, by the caller)."""

    header: str
    cell: Callable[[Group], str]


def markdown_table(columns: Sequence[Column[Group]], groups: Iterable[Group]) -> list[str]:
    """The lines of a Markdown table of C ``columns`` over N ``groups`` (N + 2 lines): the
    header line ``| h_1 | ... | h_C |``, the separator ``|---|...|---|`` and per group
    ``| cell_1(group) | ... | cell_C(group) |``."""
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(c.cell(group) for c in columns) + " |" for group in groups]
