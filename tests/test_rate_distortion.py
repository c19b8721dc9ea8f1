"""Rate-distortion collector (App. D.1, Fig. 19) on a fake multirun folder."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from vhp_lightning.reports.rate_distortion import collect, main


def write_job(sweep: Path, num: int, kappa: float, rows: list[dict[str, float]]) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- optim.kappa={kappa}\n")
    (job / "csv").mkdir()
    keys = sorted({k for r in rows for k in r})
    with (job / "csv" / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return job


def fake_sweep(root: Path) -> Path:
    sweep = root / "multirun" / "kappa"
    for num, kappa in enumerate((0.1, 0.2)):
        rows = [
            {"step": s, "train/kl": 10.0 * (num + 1) + s, "train/recon": 100.0 - s}
            for s in range(10)
        ]
        rows.append({"step": 10, "test/nll": 90.0 + num, "test/recon": 80.0})  # test row
        write_job(sweep, num, kappa, rows)
    untested = [{"step": s, "train/kl": 5.0, "train/recon": 50.0} for s in range(3)]
    write_job(sweep, 2, 0.3, untested)  # a run with test=false: no NLL
    (sweep / "3" / ".hydra").mkdir(parents=True)  # a job that crashed before logging
    (sweep / "multirun.yaml").write_text("{}\n")
    return sweep


def test_collect_averages_the_last_values_and_reads_the_test_nll(tmp_path: Path) -> None:
    rows = collect(fake_sweep(tmp_path), last=5)
    assert [r["job"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["rate"] == pytest.approx(10.0 + 7.0)  # mean of steps 5..9
    assert rows[0]["distortion"] == pytest.approx(100.0 - 7.0)
    assert rows[1]["nll"] == 91.0 and rows[1]["label"] == "optim.kappa=0.2"
    assert rows[2]["distortion"] == 50.0 and math.isnan(rows[2]["nll"])  # test=false: no NLL
    assert rows[0]["negative_elbo"] == pytest.approx(110.0) and rows[0]["step"] == 10


def test_main_writes_png_and_csv(tmp_path: Path, capsys) -> None:
    csv_path, png_path = main([str(fake_sweep(tmp_path)), "--out", str(tmp_path / "results")])
    assert png_path == tmp_path / "results" / "rate_distortion.png" and png_path.stat().st_size
    with csv_path.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and set(table[0]) >= {"rate", "distortion", "nll", "label"}
    assert "written:" in capsys.readouterr().out


def test_empty_or_missing_sweep_is_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect(tmp_path / "nope")
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no job .* has a metrics.csv"):
        collect(tmp_path)
