"""Whether the prior takes the shape of the encoded data (``analysis.pendulum.prior_coverage``),
and the Table 1 collector's columns built on it: the likelihood reading, the prior fit and the
final learned sigma."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.test_report import _fake_job
from vhp_lightning.analysis.pendulum import prior_coverage
from vhp_lightning.reports.pendulum_table1 import report, run_row

REPO = Path(__file__).resolve().parents[1]


def _ring(rng: np.random.Generator, n: int, noise: float = 0.02) -> np.ndarray:
    """``(n, 2)`` points at uniform angles on the unit circle plus isotropic noise."""
    angles = rng.uniform(0, 2 * np.pi, n)
    return np.column_stack([np.cos(angles), np.sin(angles)]) + noise * rng.standard_normal((n, 2))


# --- the metric ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_a_ring_prior_on_the_ring_of_means_fits_and_two_blobs_beside_it_do_not(seed: int) -> None:
    """Measured over seeds 0-2 (1500 means, posterior std 0.05, 2000 prior samples): the ring
    prior 0.0088 / 0.0 outside; N(0, I) 0.26-0.27 / 0.76-0.77; blobs at (+-3, 0) 1.76-1.78 / 1.0."""
    rng = np.random.default_rng(seed)
    means = _ring(rng, 1500)
    stds = np.full_like(means, 0.05)
    ring = prior_coverage(means, stds, _ring(rng, 2000))
    assert ring["prior_fit_nn"] < 0.02 and ring["prior_outside_3std"] < 0.01, ring
    gaussian = prior_coverage(means, stds, rng.standard_normal((2000, 2)))
    assert 0.2 < gaussian["prior_fit_nn"] < 0.35, gaussian
    assert 0.7 < gaussian["prior_outside_3std"] < 0.85, gaussian
    blobs = np.concatenate(
        [rng.normal((3, 0), 0.3, (1000, 2)), rng.normal((-3, 0), 0.3, (1000, 2))]
    )
    apart = prior_coverage(means, stds, blobs)
    assert apart["prior_fit_nn"] > 1.5 and apart["prior_outside_3std"] > 0.99, apart


def test_a_handmade_case_has_its_closed_form() -> None:
    """Means (0, 0), (2, 0) about centre (1, 0): radius 1. Prior (0, 1), (2, 4): nearest means at
    1 and 4 (mean 2.5); nearest prior samples of the means at 1 and sqrt(5). (0, 1) is 1 std from
    (0, 0); (2, 4) is 4 stds from (2, 0) along z2 unless that std is 2."""
    means = np.array([[0.0, 0.0], [2.0, 0.0]])
    prior = np.array([[0.0, 1.0], [2.0, 4.0]])
    out = prior_coverage(means, np.ones((2, 2)), prior)
    assert out["prior_fit_nn"] == pytest.approx((2.5 + (1 + math.sqrt(5)) / 2) / 2)
    assert out["prior_outside_3std"] == 0.5
    # The std is elementwise: a wide z2 std takes (2, 4) in, a wide z1 std does not.
    wide_z2 = prior_coverage(means, np.array([[1.0, 1.0], [1.0, 2.0]]), prior)
    assert wide_z2["prior_outside_3std"] == 0.0
    wide_z1 = prior_coverage(means, np.array([[1.0, 1.0], [2.0, 1.0]]), prior)
    assert wide_z1["prior_outside_3std"] == 0.5
    # Exactly 3 stds away counts as inside.
    edge = prior_coverage(means, np.array([[1.0, 1.0], [1.0, 4.0 / 3.0]]), prior)
    assert edge["prior_outside_3std"] == 0.0


def test_prior_fit_is_scale_free_and_the_blocks_do_not_change_the_answer() -> None:
    rng = np.random.default_rng(3)
    means, prior = _ring(rng, 300), rng.standard_normal((500, 2))
    stds = rng.uniform(0.05, 0.3, means.shape)
    out = prior_coverage(means, stds, prior)
    scaled = prior_coverage(10 * means + 5, 10 * stds, 10 * prior + 5)
    assert scaled["prior_fit_nn"] == pytest.approx(out["prior_fit_nn"], rel=1e-9)
    assert scaled["prior_outside_3std"] == out["prior_outside_3std"]
    assert prior_coverage(means, stds, prior, chunk=1) == out


def test_prior_coverage_rejects_bad_inputs_with_the_fix() -> None:
    means, stds, prior = np.zeros((4, 2)), np.ones((4, 2)), np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"means must be a non-empty 2-d array"):
        prior_coverage(np.zeros(4), stds, prior)
    with pytest.raises(ValueError, match=r"stds must match means \(4, 2\)"):
        prior_coverage(means, np.ones((4, 3)), prior)
    with pytest.raises(ValueError, match=r"prior must be a non-empty \(M, 2\) array"):
        prior_coverage(means, stds, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        prior_coverage(means, stds, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="stds must be positive"):
        prior_coverage(means, 0 * stds, prior)


# --- Table 1 ------------------------------------------------------------------------------------
def _learned_job(root: Path, name: str, seed: int, init_sigma: float | None) -> Path:
    """A finished REWO run with a learned sigma (``init_sigma`` None: a config from before the
    key existed) whose CSV log carries ``train/sigma``, falling to 0.05 at the last step."""
    job = _fake_job(root, name, "rewo", 0.1, seed=seed, sigma=None)
    cfg = json.loads((job / ".hydra" / "config.yaml").read_text())
    if init_sigma is not None:
        cfg["paper"]["likelihood"]["init_sigma"] = init_sigma
    (job / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
    rows = [(s, 1e-4 * 2**s, 0.01 / (s + 1), float(s >= 2), 0.5 / (s + 1)) for s in range(4)]
    rows.append((4, 0.0016, 0.002, 1.0, 0.05))
    (job / "csv" / "metrics.csv").write_text(
        "step,rewo/beta,rewo/c_hat,rewo/train_prior,train/sigma\n"
        + "".join(",".join(map(str, row)) + "\n" for row in rows)
    )
    return job


def test_table1_row_reads_the_likelihood_and_computes_the_prior_fit_from_the_snapshot(
    tmp_path: Path,
) -> None:
    fixed = run_row(_fake_job(tmp_path, "fixed", "rewo", 0.1))
    assert fixed is not None and fixed["sigma"] == "1" and fixed["final_sigma"] == ""
    # pendulum_metrics.json predates prior_coverage: the values come from the last snapshot.
    with np.load(tmp_path / "fixed" / "figures" / "latents_step5.npz") as arrays:
        expected = prior_coverage(arrays["means"], arrays["stds"], arrays["prior"])
    assert fixed["prior_fit_nn"] == expected["prior_fit_nn"] > 0.1  # N(0, I) on a unit ring
    assert fixed["prior_outside_3std"] == expected["prior_outside_3std"] > 0.5
    # A run whose metrics carry them is read, not recomputed.
    metrics_path = tmp_path / "fixed" / "figures" / "pendulum_metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({**metrics, "prior_fit_nn": 0.25, "prior_outside_3std": 0}))
    assert run_row(tmp_path / "fixed")["prior_fit_nn"] == 0.25

    learned = run_row(_learned_job(tmp_path, "learned", 0, init_sigma=1.0))
    assert learned["sigma"] == "learned@1" and learned["final_sigma"] == 0.05
    old = run_row(_learned_job(tmp_path, "old", 0, init_sigma=None))  # GaussianLikelihood default
    assert old["sigma"] == "learned@0.1"


def test_table1_has_one_table_per_reading_and_keeps_the_old_rows(tmp_path: Path) -> None:
    """The committed CSV (rows without the new columns) plus two learned-sigma seeds."""
    csv_path = tmp_path / "pendulum_table1.csv"
    with (REPO / "results" / "pendulum_table1.csv").open(newline="") as f:
        committed = list(csv.DictReader(f))
    old_columns = list(committed[0])[: list(committed[0]).index("run") + 1]  # before the new ones
    with csv_path.open("w", newline="") as f:  # the sigma = 1 rows as written before the change
        writer = csv.DictWriter(f, fieldnames=old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r in committed if r["sigma"] == "1")
    old_rows = list(csv.DictReader(csv_path.open()))
    assert "prior_fit_nn" not in old_rows[0] and len(old_rows) == 18
    for seed in (0, 1):
        _learned_job(tmp_path / "runs", str(seed), seed, init_sigma=1.0)
    text, _ = report([tmp_path / "runs"], csv_path, None)
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == len(old_rows) + 2
    for old, new in zip(old_rows, rows, strict=False):  # the old rows are kept as they were
        assert {k: new[k] for k in old} == old and new["prior_fit_nn"] == new["final_sigma"] == ""
    assert [r["sigma"] for r in rows[-2:]] == ["learned@1", "learned@1"]
    assert all(r["prior_fit_nn"] and r["final_sigma"] == "0.05" for r in rows[-2:])

    fixed_at = text.index("## σ = 1 fixed (`1`, decision 12)")
    learned_at = text.index("## σ learned, started at 1 (`learned@1`, decision 15)")
    assert fixed_at < learned_at
    fixed, learned = text[fixed_at:learned_at], text[learned_at:]
    assert "final σ" not in fixed and "| final σ |" in learned
    # The old rows render, with a dash where they have no prior fit.
    assert "| VHP* | 1 | 30000 | 0, 1, 2 | 0.49 | 1.433 ± 0.214 | 0.984 ± 0.178 |" in fixed
    vhp_star = next(line for line in fixed.splitlines() if line.startswith("| VHP* |"))
    assert "| 0.117 ± 0.068 | 1.557 ± 0.006 | — | — | 1 / 1 / 1 | — / — / — |" in vhp_star
    rewo = next(line for line in learned.splitlines() if line.startswith("| VHP + REWO |"))
    assert rewo.startswith("| VHP + REWO | learned@1 | 5 | 0, 1 | 0.054 |")
    assert "| 0.5 / 0.5 | 0.05 / 0.05 | 2 / 2 |" in rewo  # final beta, final sigma, switch
    header, rule = learned.splitlines()[2:4]
    assert header.replace("\\|", "").count("|") == rule.count("|") == rewo.count("|")
