"""The Table 1 collector, and the reproduction command end to end on a short budget (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vhp_lightning.report import main


def _fake_job(root: Path, num: int, setting: str, error: float) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- +table1={setting}\n- trainer.max_steps=5\n")
    (job / "figures").mkdir()
    metrics = {"polar_ols_error": error, "knn_angle_error": error / 2, "polar_slope": 1.0,
               "step": 5, "beta": 0.5}  # fmt: skip
    (job / "figures" / "pendulum_metrics.json").write_text(json.dumps(metrics))


def test_report_puts_ours_beside_the_paper(tmp_path: Path) -> None:
    _fake_job(tmp_path, 0, "rewo", 0.124)
    _fake_job(tmp_path, 1, "geco", 0.9)
    out = main(["pendulum_table1", str(tmp_path), "--out", str(tmp_path / "t.md")])
    text = out.read_text()
    assert "| VHP + REWO | 0.054 | 0.124 | 0.062 |" in text
    assert "| VHP + GECO | 0.53 | 0.900 |" in text
    assert "| VHP* | 0.49 | not run |" in text


def test_report_without_jobs_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="experiment=pendulum_table1"):
        main(["pendulum_table1", str(tmp_path)])


@pytest.mark.slow
def test_table1_command_end_to_end_short_budget(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline"}
    sweep = tmp_path / "sweep"
    train = [
        sys.executable,
        "-m",
        "vhp_lightning.train",
        "-m",
        "experiment=pendulum_table1",
        "trainer.max_steps=200",
        "trainer.enable_progress_bar=false",
        "test=false",
        f"hydra.sweep.dir={sweep}",
        "callbacks.pendulum_figures.every_n_steps=100",
    ]
    subprocess.run(train, cwd=tmp_path, env=env, check=True, timeout=1800)
    out = main(["pendulum_table1", str(sweep), "--out", str(tmp_path / "t1.md")])
    assert "not run" not in out.read_text()
