"""Discontinuities of graph interpolations on the pendulum (``analysis.pendulum_paths``), on a
model with a known latent: z = (cos a, sin a) for the image at angle a, whatever the prior."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose
from omegaconf import open_dict
from torch import nn

from tests.test_api import write_checkpoint
from vhp_lightning.analysis.pendulum_paths import (
    angle_jumps,
    is_discontinuous,
    path_discontinuity,
    pendulum_paths_analysis,
)
from vhp_lightning.datamodules.pendulum import render_pendulum
from vhp_lightning.evaluate import METRICS, evaluate


class CircleModel(nn.Module):
    """Encoder: the angle of the nearest of 720 reference renderings, as (cos, sin); decoder:
    the rendering at the polar angle of z. ``prior`` is ``"ring"`` (angles uniform on the unit
    circle) or ``"blobs"`` (two tight clusters at 0 and 180 degrees). ``collapsed``: the decoder
    renders 90 degrees whatever z is (a posterior-collapsed model)."""

    def __init__(self, prior: str, collapsed: bool = False) -> None:
        super().__init__()
        self.prior, self.collapsed = prior, collapsed
        self.ref_angles = torch.arange(720, dtype=torch.float64) * (2 * math.pi / 720)
        self.ref = render_pendulum(self.ref_angles).flatten(1)  # (720, 256)

    def sample_prior(self, n: int) -> torch.Tensor:
        if self.prior == "ring":
            angle = 2 * math.pi * torch.rand(n)
            return torch.stack([angle.cos(), angle.sin()], dim=1)
        centre = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])[torch.arange(n) % 2]
        return centre + 0.01 * torch.randn(n, 2)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nearest = torch.cdist(x.flatten(1).float(), self.ref).argmin(dim=1)
        angle = self.ref_angles[nearest].float()
        mean = torch.stack([angle.cos(), angle.sin()], dim=1)
        return mean, torch.zeros_like(mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        angle = torch.full((len(z),), math.pi / 2) if self.collapsed else z[:, 1].atan2(z[:, 0])
        return render_pendulum(angle).flatten(1)  # (B, 256)


def pendulum_data(n: int = 300, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    angles = angles * 2 * math.pi
    return render_pendulum(angles), angles


# --- the threshold logic ----------------------------------------------------------------------
def test_jumps_wrap_around_and_the_largest_one_decides() -> None:
    degrees = np.array([350.0, 355.0, 5.0, 10.0, 50.0, 20.0])
    jumps = angle_jumps(np.radians(degrees))
    np.testing.assert_allclose(jumps, [5.0, 10.0, 5.0, 40.0, 30.0], atol=1e-9)
    assert is_discontinuous(np.radians(degrees), 30.0) == (True, pytest.approx(40.0))
    assert is_discontinuous(np.radians(degrees), 39.9)[0] is True
    assert is_discontinuous(np.radians(degrees), 40.1)[0] is False
    assert is_discontinuous(np.radians(degrees[:4]), 30.0) == (False, pytest.approx(10.0))
    assert is_discontinuous(np.radians([0.0, 180.0]), 179.0) == (True, pytest.approx(180.0))
    assert is_discontinuous(np.radians([42.0]), 30.0) == (False, 0.0)


# --- known models -----------------------------------------------------------------------------
@pytest.mark.parametrize("reader", ["pixels", "latent"])
def test_ring_prior_gives_smooth_paths(reader: str) -> None:
    x, angles = pendulum_data()
    out = path_discontinuity(
        CircleModel("ring"), x, angles, n_prior=400, k=10, n_pairs=20, seed=0, reader=reader
    )
    assert out["fraction"] == 0.0 and out["n_connected"] == 20 and out["n_disconnected"] == 0
    # 400 samples, 10 neighbours: an edge covers at most ~5 x 0.9 degrees
    assert out["mean_largest_jump_deg"] < 15.0
    assert out["reader_error_deg"] < 3.0  # 300 images 1.2 degrees apart
    assert out["endpoint_error_deg"] < 3.0
    show = out["showcase"]
    start, goal = np.cos(np.radians(show["angles_deg"][[0, -1]]))
    assert start > 0.99 and goal < -0.99  # about 0 and 180 degrees
    assert show["largest_jump_deg"] < 15.0 and out["first_discontinuous"] is None


def test_two_blob_prior_makes_paths_jump() -> None:
    x, angles = pendulum_data()
    out = path_discontinuity(CircleModel("blobs"), x, angles, n_prior=40, k=25, n_pairs=30)
    assert out["n_connected"] == 30
    assert out["fraction"] > 0.5 and out["mean_largest_jump_deg"] > 30.0
    jumped = out["first_discontinuous"]
    assert jumped is not None and jumped["largest_jump_deg"] > 30.0
    # the 0 -> 180 path goes blob to blob: one jump of about 180 degrees
    assert out["showcase"]["largest_jump_deg"] > 150.0


def test_collapsed_decoder_is_not_smooth() -> None:
    """Every decoded image is the same, so consecutive path images never jump; the path still
    fails to leave from x_i and arrive at x_j, and the true endpoint angles catch that."""
    x, angles = pendulum_data()
    out = path_discontinuity(CircleModel("ring", collapsed=True), x, angles, n_prior=400, k=10,
                             n_pairs=20)  # fmt: skip
    assert out["fraction"] > 0.5 and out["endpoint_error_deg"] > 30.0
    show = out["showcase"]  # 0 -> 90 -> ... -> 90 -> 180: two 90-degree jumps
    assert show["largest_jump_deg"] == pytest.approx(90.0, abs=5.0)
    assert len(show["images"]) == len(show["path"]) + 2


def test_fraction_counts_paths_over_the_threshold() -> None:
    x, angles = pendulum_data()
    kwargs: dict[str, Any] = {"n_prior": 40, "k": 25, "n_pairs": 30}
    out = path_discontinuity(CircleModel("blobs"), x, angles, threshold_deg=30.0, **kwargs)
    largest = np.array([jump for _, _, jump in out["pairs"]])
    assert out["n_discontinuous"] == int((largest > 30.0).sum())
    assert out["fraction"] == pytest.approx(out["n_discontinuous"] / 30)
    assert out["mean_largest_jump_deg"] == pytest.approx(largest.mean())
    loose = path_discontinuity(CircleModel("blobs"), x, angles, threshold_deg=179.9, **kwargs)
    assert loose["fraction"] <= out["fraction"]
    assert [p[:2] for p in loose["pairs"]] == [p[:2] for p in out["pairs"]]  # same seed: same


def test_bad_input_fails_early() -> None:
    x, angles = pendulum_data(20)
    with pytest.raises(ValueError, match="labelled with angles"):
        path_discontinuity(CircleModel("ring"), x, torch.full((20,), float("nan")))
    with pytest.raises(ValueError, match="Unknown reader 'pixel'"):
        path_discontinuity(CircleModel("ring"), x, angles, n_prior=30, k=5, reader="pixel")


# --- files and the evaluate metric --------------------------------------------------------------
def test_analysis_writes_strips_graph_and_csv(tmp_path: Path) -> None:
    x, angles = pendulum_data()
    summary = pendulum_paths_analysis(
        CircleModel("blobs"), x, angles, tmp_path, n_prior=40, k=25, n_pairs=10
    )
    assert summary["fraction"] > 0 and "fraction_latent" in summary
    assert all(isinstance(v, float) for v in summary.values())
    for name in ("strip_0_180.png", "strip_first_jump.png", "graph_paths.png"):
        assert (tmp_path / name).stat().st_size < 1_000_000
    with open(tmp_path / "paths.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and float(rows[0]["largest_jump_deg"]) >= 0


def test_evaluate_metric_pendulum_paths(compose_cfg, tmp_path: Path) -> None:
    assert "pendulum_paths" in METRICS
    ckpt = tmp_path / "tiny.ckpt"
    write_checkpoint(compose_cfg(), ckpt)
    cfg = compose("eval", overrides=[f"ckpt_path={ckpt}", "metrics=[pendulum_paths]", "limit=40"])
    with open_dict(cfg):
        cfg.pop("hydra", None)
        cfg.pendulum_paths = {"n_prior": 60, "k": 8, "n_pairs": 3}
    result = evaluate(cfg, tmp_path / "eval")["metrics"]["pendulum_paths"]
    assert result["n_pairs"] == 3 and result["n_prior"] == 60 and result["threshold_deg"] == 30
    assert (tmp_path / "eval" / "pendulum_paths" / "paths.csv").is_file()
