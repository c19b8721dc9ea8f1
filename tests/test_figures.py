"""The pendulum figures/metrics callback writes its PNGs and the Table 1 metrics."""

from __future__ import annotations

import json
from pathlib import Path

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
