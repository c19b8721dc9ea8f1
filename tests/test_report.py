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


def _fake_cmu_job(root: Path, num: int, model: str, scheme: str, mean: float) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    scheme_cfg = {
        "_target_": f"callbacks.{scheme}",
        **({"beta": 1.0} if "Constant" in scheme else {}),
    }
    cfg = {"model": {"_target_": f"vhp_lightning.models.{model}"}, "optim": {"scheme": scheme_cfg}}
    (job / ".hydra" / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    (job / ".hydra" / "overrides.yaml").write_text(
        "- experiment=cmu_interpolation\n- optim.kappa=0.1\n"
    )
    interp = job / "interpolation"
    interp.mkdir()
    summary = {"smoothness_mean": mean, "smoothness_std": mean / 4, "smoothness_graph_std": 0.001,
               "n_interpolations": 1000, "n_connected": 990, "n_disconnected": 10,
               "disconnected_fraction": 0.01, "path_points_mean": 12.5,
               "latent_length_mean": 3.25}  # fmt: skip
    rows = "\n".join(f"{k},{v}" for k, v in summary.items())
    (interp / "interpolation_summary.csv").write_text(f"metric,value\n{rows}\n")
    per_dim = "\n".join(f"{d},{mean + d * 1e-4},{mean / 10}" for d in range(50))
    (interp / "smoothness_per_dim.csv").write_text(f"dim,smoothness,smoothness_std\n{per_dim}\n")
    (interp / "latents_by_label.png").write_bytes(b"png of " + model.encode())
    (job / "csv").mkdir()
    (job / "csv" / "metrics.csv").write_text(
        "step,rewo/beta,train/loss\n0,0.0001,5.0\n9999,0.5,1.0\n9999,,\n"
    )


def test_cmu_report_tables_fig7_and_copies_figures(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _fake_cmu_job(sweep, 0, "vhp.VHP", "rewo.REWO", 0.0123)
    _fake_cmu_job(sweep, 1, "vampprior.VampPrior", "rewo.REWO", 0.0456)
    _fake_cmu_job(sweep, 2, "iwae.IWAE", "schedules.ConstantBeta", 0.0789)
    _fake_cmu_job(sweep, 3, "vae.VAE", "rewo.REWO", 0.5)  # not a Fig. 7 model: left out
    out = main(["cmu_interpolation", str(sweep), "--out", str(tmp_path / "r" / "cmu.md")])
    text = out.read_text()
    assert (
        "| VHP | REWO | 9999 | 0.5 | 0.0123 | 0.0031 | 0.0010 | 990 / 1000 | 12.5 | 3.25 |" in text
    )
    assert "| VampPrior | REWO | 9999 | 0.5 | 0.0456 |" in text
    assert "| IWAE | beta = 1 | 9999 | 0.5 | 0.0789 |" in text
    assert "(`experiment=cmu_interpolation`, `optim.kappa=0.1`) |" in text
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| V")]
    assert rows[:2] == ["| VHP", "| VampPrior"]  # Fig. 7's order: VHP, VampPrior, IWAE
    assert "VAE |" not in text and "0.5000" not in text
    # per joint: the 50 channel names of the CMU DataModule, mean +- std of each model
    assert "| lowerback.rx | 0.0123 +- 0.0012 | 0.0456 +- 0.0046 | 0.0789 +- 0.0079 |" in text
    figures = tmp_path / "r" / "cmu"
    assert (figures / "fig7_smoothness.png").stat().st_size > 1000  # drawn, not copied
    assert (figures / "vhp_rewo_latents_by_label.png").read_bytes() == b"png of vhp.VHP"
    assert (figures / "iwae_beta1_latents_by_label.png").is_file()
    assert "[fig7_smoothness.png](cmu/fig7_smoothness.png)" in text


def test_cmu_report_without_jobs_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="experiment=cmu_interpolation"):
        main(["cmu_interpolation", str(tmp_path)])
