"""Long runs (`make test-all`; never in CI)."""

from __future__ import annotations

import pytest

from vhp_lightning.train import train


@pytest.mark.slow
def test_pendulum_rewo_switches_phase_and_beta_rises(compose_cfg, tmp_path, capsys) -> None:
    """Default pendulum setting (full nets, kappa = 0.02) for 3000 steps."""
    cfg = compose_cfg(
        "trainer.max_steps=3000",
        "trainer.enable_progress_bar=false",
        "callbacks=none",
        "test=false",
        tiny=False,
    )
    train(cfg)
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = {name: header.index(name) for name in ("step", "rewo/beta", "rewo/train_prior")}
    logged = [r.split(",") for r in rows[1:] if r.split(",")[col["rewo/beta"]]]
    switch = next(int(r[col["step"]]) for r in logged if float(r[col["rewo/train_prior"]]) == 1)
    with capsys.disabled():
        print(f"\nREWO left the initial phase at step ~{switch} (logged every step)")
    betas = [float(r[col["rewo/beta"]]) for r in logged]
    assert betas[-1] > 10 * 1e-4 and max(betas) <= 1.0
