"""The figure callbacks: the default run's end-of-run pictures (RunFigures), the pendulum's
Fig. 2 snapshots (PendulumFigures) and Table 1 metrics (PendulumMetrics), and the figures of
``vhp_lightning.analysis.figures``, the one module that draws."""

from __future__ import annotations

import csv as csv_module
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

import vhp_lightning.callbacks.figures as figures_module
from vhp_lightning.analysis.figures import (
    plot_beta_trace,
    plot_beta_traces,
    plot_kl_per_dim,
    plot_latents_by_label,
    plot_paired_differences,
    plot_posterior_and_prior,
    plot_smoothness_per_dim,
    plot_snapshot_grid,
    plot_training_curves,
    save_figure,
)
from vhp_lightning.train import train

REPO = Path(__file__).resolve().parents[1]


def test_pendulum_callbacks_write_figures_and_metrics(compose_cfg, tmp_path: Path) -> None:
    snapshots = {"every_n_steps": 10, "n_prior_samples": 50}
    overrides = [f"callbacks.pendulum_figures.{k}={v}" for k, v in snapshots.items()]
    base = ("callbacks=pendulum", "~callbacks.progress_bar", "logger=many", "test=false")
    train(compose_cfg(*base, *overrides))
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
    # Whether p(z) covers the encoded data (analysis.pendulum.prior_coverage), in both files.
    assert {"prior_fit_nn", "prior_outside_3std"} <= set(rows[0])
    assert float(rows[-1]["prior_fit_nn"]) == metrics["prior_fit_nn"] >= 0.0
    assert 0.0 <= metrics["prior_outside_3std"] <= 1.0
    arrays = np.load(figures / "latents_step20.npz")
    assert arrays["means"].shape == arrays["stds"].shape == (len(arrays["angles"]), 2)
    assert arrays["prior"].shape == (50, 2)


def mean_radius(snap) -> dict[str, float]:
    """A toy Table 1 metric (docs/extending.md): the mean distance of the posterior means from
    the origin."""
    return {"toy_radius": float(np.linalg.norm(snap.means, axis=1).mean())}


def test_a_metric_listed_in_the_config_is_measured_at_every_snapshot(
    compose_cfg, tmp_path: Path
) -> None:
    """A Table 1 metric is a function LatentSnapshot -> {name: value} and a line in
    conf/callbacks/pendulum.yaml: its number lands in snapshots.csv and pendulum_metrics.json,
    computed on the same snapshot arrays the figures keep."""
    from omegaconf import open_dict

    cfg = compose_cfg(
        "callbacks=pendulum",
        "~callbacks.progress_bar",
        "callbacks.pendulum_figures.every_n_steps=10",
        "callbacks.pendulum_figures.n_prior_samples=50",
        "test=false",
    )
    with open_dict(cfg):
        cfg.callbacks.pendulum_metrics.metrics.append("tests.test_figures.mean_radius")
    train(cfg)
    figures = tmp_path / "figures"
    with open(figures / "snapshots.csv") as f:
        rows = list(csv_module.DictReader(f))
    assert [int(r["step"]) for r in rows] == [10, 20]
    means = np.load(figures / "latents_step20.npz")["means"]
    want = float(np.linalg.norm(means, axis=1).mean())
    assert float(rows[-1]["toy_radius"]) == pytest.approx(want, rel=1e-6)
    metrics = json.loads((figures / "pendulum_metrics.json").read_text())
    assert metrics["toy_radius"] == pytest.approx(want, rel=1e-6)
    assert list(metrics)[:4] == ["step", "beta", "c_hat", "arcsin_ols_error"]


def test_metrics_must_be_functions_with_names_of_their_own(tmp_path: Path, monkeypatch) -> None:
    import vhp_lightning.callbacks.table1_metrics as table1_metrics
    from vhp_lightning.analysis.pendulum import LatentSnapshot

    with pytest.raises(ValueError, match="metrics must be a non-empty list of functions"):
        table1_metrics.PendulumMetrics(str(tmp_path), metrics=[])
    with pytest.raises(ValueError, match="'tests.nowhere.metric' does not name a function"):
        table1_metrics.PendulumMetrics(str(tmp_path), metrics=["tests.nowhere.metric"])
    clash = table1_metrics.PendulumMetrics(str(tmp_path), metrics=[lambda snap: {"beta": 0.0}])
    snap = LatentSnapshot(np.zeros((3, 2)), np.ones((3, 2)), np.zeros(3), np.zeros((4, 2)), None)
    monkeypatch.setattr(
        table1_metrics, "encode_split", lambda *a: (snap.means, snap.stds, snap.angles, snap.prior)
    )
    trainer = type("Trainer", (), {"global_step": 7})()
    module = type("Module", (), {"beta": 0.5, "model": None})()
    with pytest.raises(ValueError, match=r"returns names already taken: \['beta'\]"):
        clash.snapshot(trainer, module)
    assert not (tmp_path / "snapshots.csv").exists()


def test_default_run_writes_its_pictures_and_the_summary_prints_them(
    compose_cfg, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO)
    metrics = train(compose_cfg("callbacks=default", "~callbacks.progress_bar"))
    figures = tmp_path / "figures"
    names = {p.name for p in figures.iterdir()}
    assert names == {
        "latents_step20.png",  # q(z|x) means by angle, posterior std, prior over the means
        "beta_trace.png",
        "reconstructions_step20.png",  # the pendulum is image data: grids too
        "samples_step20.png",
    }
    summary = next(
        r.getMessage() for r in caplog.records if "Finished at step 20" in r.getMessage()
    )
    for name in names:
        assert f"  figure: {figures / name}\n" in summary + "\n"
    assert f"  last checkpoint: {tmp_path / 'checkpoints' / 'last.ckpt'}" in summary
    assert f"test/nll = {metrics['test/nll']:.4f} (importance-sampled, S = 100)" in summary


def test_the_trace_marks_the_switch_of_the_run(compose_cfg, monkeypatch) -> None:
    drawn = {}

    def spy(steps, betas, c_hats, kappa_sq=None, switch_step=None, title=""):
        drawn.update(steps=steps, betas=betas, kappa_sq=kappa_sq, switch=switch_step, title=title)
        return plot_beta_trace(steps, betas, c_hats, kappa_sq, switch_step, title)

    monkeypatch.setattr(figures_module, "plot_beta_trace", spy)
    # kappa = 1 (kappa^2 = 1 > any pixel error in [0, 1]): REWO switches after its first step.
    cfg = compose_cfg(
        "callbacks=default", "~callbacks.progress_bar", "optim.kappa=1.0", "test=false"
    )
    train(cfg)
    assert list(drawn["steps"]) == list(range(1, 21)) and drawn["kappa_sq"] == 1.0
    assert drawn["switch"] == 0 and "initial phase until step 0" in drawn["title"]
    assert drawn["betas"][0] == 1e-4 and drawn["betas"][-1] > 1e-4  # beta grows in the main phase


def test_prior_and_posterior_share_one_window() -> None:
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 2 * np.pi, 300)
    means = np.c_[np.cos(angles), np.sin(angles)]  # a ring of radius 1
    prior = 5 + 0.1 * rng.standard_normal((100, 2))  # a blob beside it
    fig = plot_posterior_and_prior(means, np.full_like(means, 0.1), angles, prior)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][:3]
    limits = {(ax.get_xlim(), ax.get_ylim()) for ax in axes}
    assert len(limits) == 1  # the same window on all three panels
    (x0, x1), (y0, y1) = limits.pop()
    assert x0 < -1 and y0 < -1 and x1 > 5.2 and y1 > 5.2  # holds both ring and blob
    assert axes[2].get_legend() is not None  # prior over the (grey) means
    plt.close(fig)


def test_integer_labels_get_class_colours_not_an_angle_scale() -> None:
    means = np.random.default_rng(0).standard_normal((50, 2))
    fig = plot_posterior_and_prior(means, np.ones_like(means), np.arange(50) % 5, means)
    assert fig.axes[0].collections[0].get_cmap().name == "tab10"
    assert any(ax.get_ylabel() == "label" for ax in fig.axes)
    plt.close(fig)


def test_beta_trace_marks_the_switch() -> None:
    steps = np.arange(1, 101)
    fig = plot_beta_trace(steps, np.full(100, 1e-4), np.full(100, 1e-3), 4e-4, switch_step=40)
    ax_beta, ax_c = fig.axes
    assert [line.get_xdata()[0] for line in ax_beta.lines[1:]] == [40]  # the dotted mark
    labels = [t.get_text() for t in ax_c.get_legend().get_texts()]
    assert labels == ["C_t", "kappa^2", "main phase (step 40)"]
    plt.close(fig)
    fig = plot_beta_trace(steps, np.ones(100), np.ones(100))  # no bound, no switch: no marks
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[1].lines) == 1
    plt.close(fig)


def test_the_pictures_can_be_turned_off(compose_cfg, tmp_path: Path) -> None:
    off = ["callbacks.figures=null", "callbacks.image_grids=null", "trainer.max_steps=3"]
    train(compose_cfg("callbacks=default", "~callbacks.progress_bar", "test=false", *off))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "figures").exists()


def test_library_modules_leave_the_backend_to_the_entry_point(tmp_path: Path) -> None:
    """Importing the figure modules selects no backend (a notebook keeps its own); without a
    display and without MPLBACKEND, matplotlib falls back to Agg and the figures still save."""
    modules = (
        "vhp_lightning.analysis.figures, vhp_lightning.analysis.interpolation, "
        "vhp_lightning.reports.rate_distortion"
    )
    code = f"import matplotlib, {modules}, vhp_lightning.callbacks.figures; "
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY")}
    chosen = subprocess.run(
        [sys.executable, "-c", code + "print(matplotlib.get_backend())"],
        env={**env, "MPLBACKEND": "svg"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert chosen.returncode == 0 and chosen.stdout.strip() == "svg", chosen.stderr
    save = "import numpy as np; "
    save += "from vhp_lightning.analysis.figures import plot_posterior_and_prior as p; "
    save += "z = np.random.rand(5, 2); p(z, np.ones((5, 2)), np.arange(5.0), z).savefig(%r)"
    headless = subprocess.run(
        [sys.executable, "-c", save % str(tmp_path / "fig.png")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert headless.returncode == 0, headless.stderr
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_figures_go_to_image_loggers_and_their_subclasses_only(tmp_path: Path) -> None:
    """log_image picks loggers by class (a user's subclass counts), CSV gets nothing."""
    from types import SimpleNamespace

    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class MyWandb(WandbLogger):  # no W&B run: only the call is recorded
        def __init__(self) -> None:
            self.images: list[tuple[str, list[str], int]] = []

        def log_image(self, key: str, images: list, step: int | None = None, **kw) -> None:  # type: ignore[override]
            self.images.append((key, images, step))

    class MyTensorBoard(TensorBoardLogger):
        pass

    tb, wb = MyTensorBoard(tmp_path / "tb"), MyWandb()
    trainer = SimpleNamespace(loggers=[CSVLogger(tmp_path / "csv"), tb, wb], global_step=7)
    png = save_figure(plt.figure(), tmp_path / "fig.png")
    figures_module.log_image(trainer, "pendulum/latents", png)  # type: ignore[arg-type]
    tb.experiment.flush()
    events = EventAccumulator(tb.log_dir)
    events.Reload()
    assert events.Tags()["images"] == ["pendulum/latents"]
    assert events.Images("pendulum/latents")[0].step == 7
    assert wb.images == [("pendulum/latents", [str(png)], 7)]
    assert not list((tmp_path / "csv").rglob("*.png"))


def test_one_module_draws_every_figure() -> None:
    """pyplot is imported by ``analysis/figures.py`` only; the callbacks, reports and entry
    points gather data and call it (entry points may select a backend, nothing more)."""
    sources = [*REPO.glob("vhp_lightning/**/*.py"), *REPO.glob("callbacks/*.py")]
    drawing = sorted(
        str(p.relative_to(REPO))
        for p in sources
        if "pyplot" in p.read_text() or ".savefig(" in p.read_text()
    )
    assert drawing == ["vhp_lightning/analysis/figures.py"]


def test_several_runs_share_one_trace_figure() -> None:
    steps = np.arange(1, 11)
    runs = {
        "REWO": (steps, np.full(10, 1e-4), np.full(10, 1e-3)),
        "GECO": (steps, *np.ones((2, 10))),
    }
    fig = plot_beta_traces(runs, kappa_sq=4e-4, switch_steps={"REWO": 5, "GECO": None})
    ax_beta, ax_c = fig.axes
    assert [t.get_text() for t in ax_beta.get_legend().get_texts()] == ["REWO", "GECO"]
    switch = ax_beta.lines[2]  # after the two runs: REWO's switch, in REWO's colour
    assert switch.get_xdata()[0] == 5 and switch.get_color() == ax_beta.lines[0].get_color()
    assert [t.get_text() for t in ax_c.get_legend().get_texts()] == ["kappa^2"]
    plt.close(fig)


def test_report_figures_take_plain_arrays(tmp_path: Path) -> None:
    steps = np.array([0, 10, 20])
    curves = {"VHP + REWO": {"val_loss": (steps, np.array([200.0, 120.0, 110.0])),
                             "beta": (steps, np.array([1e-4, 1e-4, 0.5])),
                             "train_prior": (steps, np.array([0.0, 0.0, 1.0]))}}  # fmt: skip
    fig = plot_training_curves(curves, "a title")
    assert fig.axes[1].lines[-1].get_xdata()[0] == 20  # REWO's switch, dotted
    bars = {"VHP": (np.ones(3), np.zeros(3)), "IWAE": (2 * np.ones(3), np.ones(3))}
    figures = [fig, plot_smoothness_per_dim(bars, ["a", "b", "c"]), plot_kl_per_dim(np.ones(4))]
    for k, fig in enumerate(figures):
        assert save_figure(fig, tmp_path / "new" / f"{k}.png").stat().st_size > 0
        assert not plt.fignum_exists(fig.number)  # save_figure closed it


def test_paired_differences_draw_each_seed_at_its_mean_with_its_interval() -> None:
    points = {
        "VampPrior": [("0", 0.8, 0.6, 1.0), ("1", 0.5, 0.2, 0.9)],
        "IWAE (L=1)": [("1", -0.3, -0.5, -0.1)],  # seed 0 not paired
    }
    fig = plot_paired_differences(points, "VHP + REWO", "a title")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["VampPrior", "IWAE (L=1)"]
    seed0, seed1 = ax.containers  # one errorbar set per seed, in the legend's order
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["seed 0", "seed 1"]
    assert seed0.lines[0].get_xdata().tolist() == [0.8]
    assert seed1.lines[0].get_xdata().tolist() == [0.5, -0.3]
    assert seed0.lines[0].get_ydata()[0] < 0 < seed1.lines[0].get_ydata()[0] < 0.5  # side by side
    ends = [seg[:, 0].tolist() for seg in seed1.lines[2][0].get_segments()]
    assert np.allclose(ends, [[0.2, 0.9], [-0.5, -0.1]])  # each bar spans its 95 % interval
    assert "NLL(VHP + REWO)" in ax.get_xlabel()
    plt.close(fig)


# --- readable figures ---------------------------------------------------------------------------
def _ring(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    angles = np.random.default_rng(seed).uniform(0, 2 * np.pi, n)
    return np.c_[np.cos(angles), np.sin(angles)], angles


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _colour_bar_labels(fig) -> list[str]:
    return [ax.get_ylabel() or ax.get_xlabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _assert_titles_readable(fig) -> None:
    """Every title and the suptitle lie inside the figure, and no two titles overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [ax.title for ax in fig.axes if ax.get_title()]
    texts += [fig._suptitle] if fig._suptitle is not None else []
    boxes = [t.get_window_extent(renderer) for t in texts]
    page = fig.bbox
    for text, box in zip(texts, boxes, strict=True):
        inside = box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y1 <= page.y1 + 1
        assert inside, f"title {text.get_text()!r} is cut: {box} outside {page}"
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), "two titles overlap"


def test_posterior_std_panel_is_visible_on_white_and_every_panel_names_its_axes() -> None:
    means, angles = _ring()
    stds = np.random.default_rng(1).uniform(0.05, 0.3, means.shape)
    fig = plot_posterior_and_prior(means, stds, angles, means + 0.1)
    panels = _panels(fig)
    assert panels[1].collections[0].get_cmap().name == "viridis"  # not white-to-grey on white
    assert "posterior std (mean over latent dims)" in _colour_bar_labels(fig)
    assert "joint angle (rad)" in _colour_bar_labels(fig)
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in panels] == [("$z_1$", "$z_2$")] * 3
    plt.close(fig)


def test_long_latent_titles_are_neither_cut_nor_overlapping() -> None:
    """MNIST-like: a 16-d latent (PCA note), ten classes; the note goes to the suptitle once."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    means = 3 * rng.standard_normal((10, 16))[labels] + rng.standard_normal((500, 16))
    prior = rng.standard_normal((300, 16))
    long = "step 20000, beta = 0.0001, a deliberately long run title that goes on and on"
    figures = [
        plot_posterior_and_prior(means, np.ones_like(means), labels, prior, long),
        plot_latents_by_label(means, labels, prior, [str(k) for k in range(10)], long),
    ]
    for fig in figures:
        assert "PCA of the 16-d latent" in fig._suptitle.get_text()
        assert all(ax.get_xlabel() == "PC 1" and ax.get_ylabel() == "PC 2" for ax in _panels(fig))
        _assert_titles_readable(fig)
        plt.close(fig)


def test_latents_by_label_names_the_angle_and_shares_one_window() -> None:
    means, angles = _ring()
    prior = 3 + 0.1 * np.random.default_rng(2).standard_normal((300, 2))  # far beside the ring
    fig = plot_latents_by_label(means, angles, prior)
    assert _colour_bar_labels(fig) == ["angle (rad)"]  # not "label"
    posterior, samples = _panels(fig)
    assert posterior.get_xlim() == samples.get_xlim() and posterior.get_ylim() == samples.get_ylim()
    assert posterior.get_xlim()[1] > 3 and posterior.get_xlim()[0] < -1  # holds ring and blob
    assert (posterior.get_xlabel(), posterior.get_ylabel()) == ("$z_1$", "$z_2$")
    plt.close(fig)
    fig = plot_latents_by_label(means, np.degrees(angles), prior, colour_label="angle (deg)")
    assert _colour_bar_labels(fig) == ["angle (deg)"]
    plt.close(fig)


def test_snapshot_grid_keeps_a_long_column_title_inside_the_figure() -> None:
    means, angles = _ring(200)
    snapshot = {"means": means, "prior": means + 0.05, "angles": angles}
    columns = {
        "VHP + REWO": [snapshot] * 2,
        "VHP + REWO, ELBO in 2nd layer (App. B.4)": [snapshot] * 2,
    }
    fig = plot_snapshot_grid([10, 20], columns)
    _assert_titles_readable(fig)
    assert "joint angle (rad) of the q(z|x) means" in _colour_bar_labels(fig)
    panels = _panels(fig)
    assert panels[-1].get_xlabel() == "$z_1$" and panels[0].get_ylabel().endswith("$z_2$")
    plt.close(fig)


def test_strip_titles_say_what_their_numbers_are() -> None:
    import torch

    from vhp_lightning.analysis.graph import build_graph
    from vhp_lightning.analysis.interpolation import _label_change, _strip_figures

    angles = np.array([5.11, 0.0158, 1.0])
    assert _label_change(angles, None, 0, 1, "angle (rad)") == ", angle 5.11 → 0.02 rad"
    assert _label_change(np.array([0, 3]), None, 0, 1, "angle (rad)") == ", class 0 → 3"
    assert _label_change(np.array([0, 1]), ["walk", "run"], 0, 1, "x") == ", walk → run"
    assert _label_change(None, None, 0, 1, "angle (rad)") == ""

    class Linear:  # decodes a 2-d latent to a 4 x 4 image
        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(z @ torch.ones(2, 16, dtype=z.dtype))

    nodes, _ = _ring(200)
    means, labels = _ring(20, seed=3)
    first = (nodes, build_graph(nodes, 8), torch.as_tensor(nodes))
    rng = np.random.default_rng(0)
    figures = dict(_strip_figures(Linear(), means, labels, None, first, 8, 1, (4, 4), rng))
    title = figures["strip_0"]._suptitle.get_text().replace("\n", " ")
    assert title.startswith("path between data points ") and " rad: " in title
    assert "smoothness factor" in title
    _assert_titles_readable(figures["strip_0"])
    for fig in figures.values():
        plt.close(fig)


def _whisker_ends(ax) -> np.ndarray:
    """Every end point ``(x, y)`` of the error bars of ``ax``."""
    segments = [s for c in ax.collections for s in c.get_segments()]
    return np.concatenate(segments)


def test_fig7_whiskers_stop_at_zero_and_the_figure_says_what_they_are() -> None:
    mean = np.array([0.01, 0.05, 0.002] * 10)
    bars = {"VHP": (mean, 3 * mean), "IWAE": (2 * mean, 0.5 * mean)}  # std above the mean
    few = plot_smoothness_per_dim(bars)
    named = plot_smoothness_per_dim(bars, [f"joint{d}.rx" for d in range(30)])
    for fig, value_axis in ((few, 1), (named, 0)):  # vertical bars: y; horizontal bars: x
        ax = fig.axes[0]
        ends = _whisker_ends(ax)[:, value_axis]
        assert ends.min() >= 0.0 and np.isclose(ends.max(), 4 * mean.max())
        assert "whisker: ± 1 std, clipped at 0" in fig._supxlabel.get_text()
        plt.close(fig)


def test_fig7_tick_labels_stay_readable_with_50_dimensions() -> None:
    mean = np.linspace(0.01, 0.1, 50)
    unnamed = plot_smoothness_per_dim({"": (mean, 0.5 * mean)})
    unnamed.canvas.draw()
    ax = unnamed.axes[0]
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]
    assert len(shown) <= 11
    plt.close(unnamed)

    channels = [f"bone{d // 3}.r{'xyz'[d % 3]}" for d in range(50)]
    named = plot_smoothness_per_dim({"VHP": (mean, mean), "IWAE": (mean, mean)}, channels)
    named.canvas.draw()
    renderer = named.canvas.get_renderer()
    labels = named.axes[0].get_yticklabels()  # one horizontal name per row
    assert [t.get_text() for t in labels] == channels
    assert all(t.get_rotation() == 0 and t.get_fontsize() >= 8 for t in labels)
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:], strict=False))
    _assert_titles_readable(named)
    plt.close(named)


def test_beta_traces_add_a_sigma_panel_when_sigma_is_learned() -> None:
    from vhp_lightning.analysis.figures import plot_beta_traces

    steps = np.arange(10)
    traces = {"a": (steps, np.full(10, 1e-3), np.full(10, 1e-2))}
    assert len(plot_beta_traces(traces).axes) == 2
    fig = plot_beta_traces(traces, sigmas={"a": (steps, np.linspace(1, 0.5, 10))})
    assert len(fig.axes) == 3 and fig.axes[2].get_ylabel() == "likelihood sigma"
    assert fig.axes[2].get_xlabel() == "step" and fig.axes[1].get_xlabel() == ""
