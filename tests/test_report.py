"""The Table 1 collector, and the reproduction command end to end on a short budget (slow)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vhp_lightning.report import main
from vhp_lightning.reports import Column, markdown_table, scheme_trace


def _fake_job(
    root: Path, name: str, setting: str, error: float, seed: int = 0, sigma: float | None = 1.0
) -> Path:
    """A finished Table 1 run dir as the train CLI leaves it (config, overrides, CSV log,
    snapshot arrays and metrics), with REWO-like phase switch at step 2."""
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- +table1={setting}\n- seed={seed}\n")
    cfg = {  # as Hydra stores it: interpolations unresolved
        "seed": seed,
        "paper": {"likelihood": {"sigma": sigma}, "kappa": 0.02},
        "optim": {"kappa": "${paper.kappa}"},
    }
    (job / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
    (job / "csv").mkdir()
    (job / "csv" / "metrics.csv").write_text(
        "step,rewo/beta,rewo/c_hat,rewo/train_prior,train/kl\n"
        + "".join(f"{s},{1e-4 * 2**s},{0.01 / (s + 1)},{float(s >= 2)},\n" for s in range(5))
        + "4,,,,3.0\n"
    )
    figures = job / "figures"
    figures.mkdir()
    rng = np.random.default_rng(seed)
    for step in (2, 5):
        angles = rng.uniform(0, 2 * np.pi, 50)
        means = np.column_stack([np.cos(angles), np.sin(angles)])
        np.savez(figures / f"latents_step{step}.npz", means=means, stds=0 * means + 0.1,
                 angles=angles, prior=rng.standard_normal((40, 2)))  # fmt: skip
    (figures / "snapshots.csv").write_text("step,knn_sample_error\n2,1.2\n5,0.05\n")
    metrics = {"arcsin_ols_error": 1.0, "polar_ols_error": error, "knn_angle_error": error / 2,
               "knn_sample_error": 0.05, "polar_slope": 1.0, "step": 5, "beta": 0.5,
               "p_z_std": 0.5, "prior_radius_mean": 9.0, "encoded_radius_mean": 9.5}  # fmt: skip
    (figures / "pendulum_metrics.json").write_text(json.dumps(metrics))
    return job


def test_table1_rows_are_appended_once_and_the_table_has_mean_and_std(tmp_path: Path) -> None:
    results = tmp_path / "results"
    csv_path, md = results / "pendulum_table1.csv", results / "pendulum_table1.md"
    _fake_job(tmp_path / "a", "0", "rewo", 0.10, seed=0)
    _fake_job(tmp_path / "a", "1", "geco", 0.9, seed=0)
    main(["pendulum_table1", str(tmp_path / "a"), "--out", str(md)])
    rows = list(csv.DictReader(csv_path.open()))
    assert [(r["method"], r["seed"], r["sigma"], r["steps"]) for r in rows] == [
        ("rewo", "0", "1", "5"),
        ("geco", "0", "1", "5"),
    ]
    assert rows[0]["switch_step"] == "2" and rows[0]["formed_step"] == "5"
    # A second session adds seed 1 of REWO; the rows already there are kept, not duplicated.
    _fake_job(tmp_path / "b", "0", "rewo", 0.20, seed=1)
    main(["pendulum_table1", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(md)])
    assert len(list(csv.DictReader(csv_path.open()))) == 3
    text = md.read_text()
    assert (
        "| VHP + REWO | 1 | 5 | 0, 1 | 0.054 | 1.000 ± 0.000 | 0.150 ± 0.071 | 0.075 ± 0.035 |"
        in text
    )
    assert "| VHP + GECO | 1 | 5 | 0 | 0.53 | 1.000 | 0.900 | 0.450 |" in text
    assert "Settings with fewer than two seeds: VHP + GECO, VHP*," in text
    # Without run dirs the table is rebuilt from the CSV alone.
    md.unlink()
    main(["pendulum_table1", "--out", str(md)])
    assert md.read_text() == text


def test_a_new_metric_becomes_a_column_of_the_csv_and_of_the_table(tmp_path: Path) -> None:
    """A metric added to the config (docs/extending.md) needs no report edit: its number in
    pendulum_metrics.json becomes a CSV column (rows collected before it stay empty) and a
    mean +- std column of the table, under its own name."""
    md, csv_path = tmp_path / "t.md", tmp_path / "t.csv"  # --out's CSV lies beside it
    _fake_job(tmp_path / "a", "0", "rewo", 0.10, seed=0)
    main(["pendulum_table1", str(tmp_path / "a"), "--out", str(md)])
    for seed, value in ((1, 2.0), (2, 4.0)):
        job = _fake_job(tmp_path / "b", str(seed), "rewo", 0.10, seed=seed)
        path = job / "figures" / "pendulum_metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "toy_radius": value}))
    main(["pendulum_table1", str(tmp_path / "b"), "--out", str(md)])
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["toy_radius"] for r in rows] == ["", "2.0", "4.0"]
    header, _, line = md.read_text().split("## ")[1].splitlines()[2:5]
    assert header.endswith("| prior / encoded radius | toy_radius | wall time per run |")
    assert line.split(" | ")[-2] == "3.000 ± 1.414"
    # A header name that is not a metric's (a hand edit) is refused; nothing is written.
    before = csv_path.read_text()
    csv_path.write_text(before.replace("toy_radius", "Toy Radius!"))
    with pytest.raises(ValueError, match=r"line 1: unknown column\(s\) Toy Radius!\. Nothing"):
        main(["pendulum_table1", str(tmp_path / "b"), "--out", str(md)])
    assert "Toy Radius!" in csv_path.read_text()


def test_table1_figures_put_the_settings_side_by_side(tmp_path: Path) -> None:
    for k, setting in enumerate(("rewo", "geco", "vhp_star")):
        _fake_job(tmp_path / "runs", str(k), setting, 0.1)
    figures = tmp_path / "figs"
    md = tmp_path / "t.md"
    main(["pendulum_table1", str(tmp_path / "runs"), "--out", str(md), "--figures", str(figures)])
    assert {p.name for p in figures.iterdir()} == {
        "table1_sigma1_5steps_seed0_latents.png",
        "table1_sigma1_5steps_seed0_beta.png",
    }
    trace = scheme_trace(tmp_path / "runs" / "0")
    assert trace["step"].tolist() == [0, 1, 2, 3, 4]
    assert trace["train_prior"].tolist() == [0, 0, 1, 1, 1]


def test_report_without_jobs_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="experiment=pendulum_table1"):
        main(["pendulum_table1", str(tmp_path), "--out", str(tmp_path / "t.md")])


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
    assert len(list(csv.DictReader((tmp_path / "t1.csv").open()))) == 6
    assert "fewer than two seeds" in out.read_text()


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


def test_markdown_table_is_written_from_one_column_spec() -> None:
    runs = {"rewo": [0.1, 0.3], "geco": []}  # a group per line: a setting and its runs' errors
    columns = [
        Column("setting", lambda name: name),
        Column("runs \\| errors", lambda name: ", ".join(f"{e:.1f}" for e in runs[name]) or "—"),
    ]
    assert markdown_table(columns, runs) == [
        "| setting | runs \\| errors |",
        "|---|---|",
        "| rewo | 0.1, 0.3 |",
        "| geco | — |",
    ]
    assert markdown_table(columns[:1], []) == ["| setting |", "|---|"]
