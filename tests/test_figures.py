"""The pendulum figures/metrics callback writes its PNGs and the Table 1 metrics."""

from __future__ import annotations

import csv as csv_module
import json
from pathlib import Path

import numpy as np

from vhp_lightning.train import train


def test_pendulum_callbacks_write_figures_and_metrics(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        "callbacks=pendulum",
        "~callbacks.progress_bar",
        "callbacks.pendulum_figures.every_n_steps=10",
        "callbacks.pendulum_figures.n_prior_samples=50",
        "logger=many",
        "test=false",
    )
    train(cfg)
    figures = tmp_path / "figures"
    assert {p.name for p in figures.glob("*.png")} >= {
        "latents_step10.png",
        "latents_step20.png",
        "beta_trace.png",
    }
    metrics = json.loads((figures / "pendulum_metrics.json").read_text())
    assert set(metrics) >= {"polar_ols_error", "knn_angle_error", "polar_slope", "step", "beta"}
    assert 0.0 <= metrics["knn_angle_error"] <= 3.1416 and metrics["step"] == 20
    csv = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "test/polar_ols_error" in csv and "test/knn_angle_error" in csv
    assert "test/arcsin_ols_error" in csv
    # One row per snapshot, with the three metrics and the prior-fit diagnostics; the last row
    # is what pendulum_metrics.json holds.
    with open(figures / "snapshots.csv") as f:
        rows = list(csv_module.DictReader(f))
    assert [int(r["step"]) for r in rows] == [10, 20]
    assert float(rows[-1]["knn_sample_error"]) == metrics["knn_sample_error"]
    assert {"arcsin_ols_error", "q_zeta_spread", "p_z_std", "prior_radius_mean"} <= set(rows[0])
    arrays = np.load(figures / "latents_step20.npz")
    assert arrays["means"].shape == arrays["stds"].shape == (len(arrays["angles"]), 2)
    assert arrays["prior"].shape == (50, 2)
