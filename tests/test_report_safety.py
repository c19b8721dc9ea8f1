"""The report commands never damage the committed results.

A report over sweep dirs writes into ``<first sweep dir>/report/`` unless ``--results`` is
given; a results CSV that does not parse is refused before anything is written, naming the file,
the line and the fix; a failed write names the file; a run that gives no row says why.
Every test works in a temporary folder (a copy of ``results/`` where one is needed).
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_evaluate import _fake_train_run
from tests.test_report import _fake_cmu_job, _fake_job
from vhp_lightning.report import REPORTS, cli, main
from vhp_lightning.reports import (
    ReportWriteError,
    ResultsFileError,
    pendulum_table1,
    read_results,
    table2,
)

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def results_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repo's ``results/`` in a temporary working directory (the cwd)."""
    shutil.copytree(ROOT / "results", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "results"


# --- damaged results files ----------------------------------------------------------------------
def _damage(text: str, case: str) -> tuple[str, int]:
    """``text`` (a results CSV) damaged as ``case``; returns it and the line to be named."""
    lines = text.splitlines(keepends=True)
    if case == "no header":
        return "".join(lines[1:]), 1
    if case == "semicolons":
        return text.replace(",", ";"), 1
    if case == "conflict marker":
        return "".join([*lines[:3], "<<<<<<< HEAD\n", *lines[3:5], "=======\n", *lines[5:]]), 4
    if case == "short row":
        return "".join([*lines[:2], lines[2].rsplit(",", 3)[0] + "\n", *lines[3:]]), 3
    if case == "empty":
        return "", 1
    raise ValueError(case)


CASES = ("no header", "semicolons", "conflict marker", "short row", "empty")


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_table2_csv_is_refused_and_left_untouched(tmp_path: Path, case: str) -> None:
    text, line = _damage((ROOT / "results" / "table2.csv").read_text(), case)
    csv_path, md = tmp_path / "table2.csv", tmp_path / "table2.md"
    csv_path.write_text(text)
    before = csv_path.read_bytes()
    _fake_train_run(tmp_path / "sweep" / "0")  # a finished run: the report would append it
    with pytest.raises(ResultsFileError, match=rf"{csv_path}, line {line}: .*git checkout"):
        main(["table2", str(tmp_path / "sweep"), "--csv", str(csv_path), "--out", str(md)])
    assert csv_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep", "table2.csv"]  # no md, curves
    assert not (tmp_path / "sweep" / "report").exists()


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_table1_csv_is_refused_even_when_only_rebuilding(
    tmp_path: Path, case: str
) -> None:
    text, line = _damage((ROOT / "results" / "pendulum_table1.csv").read_text(), case)
    csv_path, md = tmp_path / "t1.csv", tmp_path / "t1.md"
    csv_path.write_text(text)
    before = csv_path.read_bytes()
    with pytest.raises(ResultsFileError, match=rf"{csv_path}, line {line}: "):
        main(["pendulum_table1", "--csv", str(csv_path), "--out", str(md)])
    assert csv_path.read_bytes() == before and not md.exists()


def test_the_shell_command_shows_one_error_line_and_exit_code_2(tmp_path: Path) -> None:
    csv_path = tmp_path / "table2.csv"
    csv_path.write_text(_damage((ROOT / "results" / "table2.csv").read_text(), "semicolons")[0])
    before = csv_path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "vhp_lightning.report", "table2", "--csv", str(csv_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {csv_path}, line 1: ';' separates the fields")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert csv_path.read_bytes() == before and not (tmp_path / "results").exists()


def test_a_failed_write_names_the_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "table2.csv"
    shutil.copyfile(ROOT / "results" / "table2.csv", csv_path)
    before = csv_path.read_bytes()
    _fake_train_run(tmp_path / "sweep" / "0")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("vhp_lightning.io.files.os.fsync", full_disk)
    args = ["table2", str(tmp_path / "sweep"), "--csv", str(csv_path)]
    with pytest.raises(ReportWriteError, match=rf"cannot write {csv_path}: No space left"):
        main(args)
    assert csv_path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file
    with pytest.raises(SystemExit) as stop:
        cli(args)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {csv_path}: ") and len(err.splitlines()) == 1
    assert csv_path.read_bytes() == before


def test_the_committed_results_parse_and_older_files_lacking_new_columns_are_accepted(
    tmp_path: Path,
) -> None:
    for name, module in REPORTS.items():
        assert read_results(ROOT / "results" / f"{name}.csv", module.COLUMNS, module.KEY)
    # a file written before the last two columns were added: kept, the new columns left empty
    old = tmp_path / "t1.csv"
    columns = pendulum_table1.COLUMNS[:-2]
    with old.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerow(["rewo", "0", "1", "30000", "60", *[""] * (len(columns) - 5)])
    rows = read_results(old, pendulum_table1.COLUMNS, pendulum_table1.KEY)
    assert rows[0]["method"] == "rewo" and rows[0][pendulum_table1.COLUMNS[-1]] == ""
    _fake_job(tmp_path / "sweep", "0", "rewo", 0.1, seed=1)
    md = tmp_path / "t1.md"
    main(["pendulum_table1", str(tmp_path / "sweep"), "--csv", str(old), "--out", str(md)])
    rows = read_results(old, pendulum_table1.COLUMNS, pendulum_table1.KEY)
    assert [(r["method"], r["seed"]) for r in rows] == [("rewo", "0"), ("rewo", "1")]


# --- where a report writes ----------------------------------------------------------------------
def test_a_sweep_report_writes_into_the_sweep_and_leaves_results_alone(
    results_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(results_copy)
    sweep = tmp_path / "multirun" / "pendulum_table1" / "2026-01-01_00-00-00"
    _fake_job(sweep, "0", "rewo", 0.1)
    out = main(["pendulum_table1", str(sweep)])
    assert out == sweep / "report" / "pendulum_table1.md" and out.is_file()
    assert len(read_results(out.with_suffix(".csv"), pendulum_table1.COLUMNS, ("method",))) == 1
    printed = capsys.readouterr().out
    assert f"table written to {out}" in printed and "add --results" in printed
    # Table 2 and the CMU report alike
    _fake_train_run(tmp_path / "t2" / "0")
    assert main(["table2", str(tmp_path / "t2")]) == tmp_path / "t2" / "report" / "table2.md"
    assert (tmp_path / "t2" / "report" / "table2").is_dir()  # the run's curves
    cmu = tmp_path / "cmu"
    _fake_cmu_job(cmu, 0, "vhp.VHP", "rewo.REWO", 0.0123)
    out = main(["cmu_interpolation", str(cmu)])
    assert out == cmu / "report" / "cmu_interpolation.md"
    assert (cmu / "report" / "cmu_interpolation" / "fig7_smoothness.png").is_file()
    assert "](cmu_interpolation/fig7_smoothness.png)" in out.read_text()
    assert _snapshot(results_copy) == before


def test_results_flag_appends_to_the_committed_csv(results_copy: Path, tmp_path: Path) -> None:
    csv_path = results_copy / "table2.csv"
    old = read_results(csv_path, table2.COLUMNS, table2.KEY)
    _fake_train_run(tmp_path / "sweep" / "0")
    out = main(["table2", str(tmp_path / "sweep"), "--results"])
    assert out == Path("results") / "table2.md"
    rows = read_results(csv_path, table2.COLUMNS, table2.KEY)
    assert rows[: len(old)] == old and len(rows) == len(old) + 1
    assert rows[-1]["nll"] == "88.125" and "88.12 ± 0.38" in out.read_text()


def test_without_a_sweep_dir_the_committed_table_is_only_rebuilt(results_copy: Path) -> None:
    csv_before = (results_copy / "table2.csv").read_bytes()
    (results_copy / "table2.md").unlink()
    assert main(["table2"]) == Path("results") / "table2.md"
    assert (results_copy / "table2.md").is_file()
    assert (results_copy / "table2.csv").read_bytes() == csv_before


# --- why a run gives no row -----------------------------------------------------------------------
def test_a_test_false_table2_run_says_to_evaluate_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "sweep" / "0"
    _fake_train_run(job)
    config = job / ".hydra" / "config.yaml"
    config.write_text(config.read_text() + "test: false\n")
    log = job / "csv" / "metrics.csv"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:-1]))  # no test/nll row
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        cli(["table2", str(tmp_path / "sweep")])
    assert stop.value.code == 2  # nothing to report: no row and no CSV yet
    captured = capsys.readouterr()
    assert (
        f"no row from {job}: no test/nll: it ran with test=false; measure it with `python -m "
        f"vhp_lightning.evaluate ckpt_path={job}/checkpoints/last.ckpt metrics=[nll] "
        f"hydra.run.dir={job}/eval`" in captured.out
    )
    assert captured.err.startswith("error: ") and len(captured.err.splitlines()) == 1


def test_an_unfinished_table1_run_and_a_non_table1_run_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    _fake_job(sweep, "0", "rewo", 0.1)
    (_fake_job(sweep, "1", "geco", 0.2) / "figures" / "pendulum_metrics.json").unlink()
    other = _fake_job(sweep, "2", "geco", 0.2)
    (other / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    main(["pendulum_table1", str(sweep)])
    printed = capsys.readouterr().out
    assert f"no row from {sweep / '1'}: not finished: no figures/pendulum_metrics.json" in printed
    assert f"no row from {other}: no `+table1=<setting>` override" in printed
    assert f"no row from {sweep / '0'}" not in printed
    assert "1 row(s) added to" in printed


def test_the_rate_distortion_report_writes_into_the_sweep_by_default(
    results_copy: Path, tmp_path: Path
) -> None:
    from tests.test_rate_distortion import fake_sweep
    from vhp_lightning.reports import rate_distortion

    before = _snapshot(results_copy)
    sweep = fake_sweep(tmp_path / "rd")
    csv_path, png_path = rate_distortion.main([str(sweep)])
    assert csv_path == sweep / "report" / "rate_distortion.csv" and png_path.is_file()
    assert _snapshot(results_copy) == before
    assert rate_distortion.main([str(sweep), "--results"])[0] == Path("results/rate_distortion.csv")
