"""interpolation_analysis: files written, numbers finite, disconnected graphs counted."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vhp_lightning.analysis.interpolation import interpolation_analysis
from vhp_lightning.models.vhp import VHP
from vhp_lightning.nets.likelihoods import BernoulliLikelihood, GaussianLikelihood
from vhp_lightning.nets.mlp import MLP, GaussianMLP


def tiny_vhp(data_dim: int, latent: int = 2, likelihood: nn.Module | None = None) -> VHP:
    torch.manual_seed(0)
    return VHP(
        encoder=GaussianMLP(data_dim, latent, [16]),
        decoder=MLP(latent, data_dim, [16]),
        likelihood=likelihood or GaussianLikelihood(),
        prior_encoder=GaussianMLP(latent, latent, [8]),
        prior_decoder=GaussianMLP(latent, latent, [8]),
        n_importance=2,
    )


class TwoClusters(nn.Module):
    """Prior = two far-apart blobs, encoder = identity on 2-d data, decoder = linear."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 3), requires_grad=False)

    def sample_prior(self, n: int) -> torch.Tensor:
        z = 0.01 * torch.randn(n, 2)
        z[: n // 2, 0] += 100.0
        return z

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, torch.zeros_like(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_vector_data_with_class_labels(tmp_path: Path) -> None:
    model = tiny_vhp(6).train()
    x = torch.randn(40, 6)
    labels = torch.arange(40) % 3
    out = interpolation_analysis(
        model, x, labels, tmp_path, n_nodes=60, n_neighbors=8, n_graphs=2, n_pairs=5, n_strips=3
    )
    assert model.training  # mode restored
    assert out["n_interpolations"] == 10 and out["n_connected"] + out["n_disconnected"] == 10
    assert np.isfinite(out["smoothness_mean"]) and out["smoothness_mean"] >= 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"graph_paths.png", "latents_by_label.png", "interpolations.csv"} <= names
    assert {"interpolation_summary.csv", "smoothness_per_dim.csv", "strip_0.png"} <= names
    rows = read_rows(tmp_path / "interpolations.csv")
    assert len(rows) == 10 and {r["graph"] for r in rows} == {"0", "1"}
    per_dim = read_rows(tmp_path / "smoothness_per_dim.csv")
    assert len(per_dim) == 6  # one row per output dimension, mean and std over interpolations
    means = np.array([float(r["smoothness"]) for r in per_dim])
    assert all(float(r["smoothness_std"]) >= 0 for r in per_dim)
    assert means.mean() == pytest.approx(out["smoothness_mean"])  # mean over dims = Fig. 7 mean
    summary = {
        r["metric"]: float(r["value"]) for r in read_rows(tmp_path / "interpolation_summary.csv")
    }
    assert summary["smoothness_mean"] == pytest.approx(out["smoothness_mean"])


def test_images_get_strips_and_results_are_deterministic(tmp_path: Path) -> None:
    model = tiny_vhp(64, likelihood=BernoulliLikelihood())
    x = torch.rand(20, 1, 8, 8)
    kwargs = dict(n_nodes=50, n_neighbors=10, n_graphs=1, n_pairs=4, n_strips=2, seed=3)
    a = interpolation_analysis(model, x, np.linspace(0, 6, 20), tmp_path / "a", **kwargs)
    b = interpolation_analysis(model, x, None, tmp_path / "b", **kwargs)
    assert a == b  # labels only colour the plots
    assert (tmp_path / "a" / "strip_1.png").is_file()
    assert not (tmp_path / "a" / "smoothness_per_dim.csv").exists()  # images: no per-dim table


def test_disconnected_graph_is_counted_not_raised(tmp_path: Path, caplog) -> None:
    model = TwoClusters()
    x = torch.tensor([[0.0, 0.0], [100.0, 0.0]] * 5)
    labels = ["left", "right"] * 5
    out = interpolation_analysis(
        model, x, labels, tmp_path, n_nodes=40, n_neighbors=3, n_graphs=2, n_pairs=10
    )
    assert out["n_disconnected"] > 0 and out["n_connected"] > 0
    assert out["disconnected_fraction"] == out["n_disconnected"] / 20
    assert np.isfinite(out["smoothness_mean"])
    assert "no path" in caplog.text and "component" in caplog.text
    rows = read_rows(tmp_path / "interpolations.csv")
    assert {r["connected"] for r in rows} == {"True", "False"}
    assert (tmp_path / "graph_paths.png").is_file()


def test_bad_arguments_are_explained(tmp_path: Path) -> None:
    model = tiny_vhp(4)
    with pytest.raises(ValueError, match="n_graphs"):
        interpolation_analysis(
            model, torch.randn(5, 4), None, tmp_path, n_nodes=10, n_neighbors=3, n_graphs=0,
            n_pairs=1,
        )  # fmt: skip
    with pytest.raises(ValueError, match="labels must have shape"):
        interpolation_analysis(
            model, torch.randn(5, 4), [0, 1], tmp_path, n_nodes=10, n_neighbors=3, n_graphs=1,
            n_pairs=1,
        )  # fmt: skip


# --- the callback and the experiments -----------------------------------------------------------
def test_callback_writes_the_analysis_at_fit_end(compose_cfg, tmp_path: Path) -> None:
    from vhp_lightning.train import train

    cfg = compose_cfg(
        "callbacks=interpolation",
        "~callbacks.progress_bar",
        "callbacks.interpolation.n_nodes=80",
        "callbacks.interpolation.n_neighbors=8",
        "callbacks.interpolation.n_graphs=2",
        "callbacks.interpolation.n_pairs=4",
        "callbacks.interpolation.n_strips=2",
        "callbacks.interpolation.max_points=50",
        "test=false",
    )
    assert cfg.callbacks.interpolation.n_nodes == 80
    train(cfg)
    out = tmp_path / "interpolation"
    assert {"strip_0.png", "strip_1.png", "graph_paths.png", "latents_by_label.png"} <= {
        p.name for p in out.iterdir()
    }
    assert len(read_rows(out / "interpolations.csv")) == 8
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "interpolation/smoothness_mean" in header and "interpolation/n_disconnected" in header


EXPERIMENTS = {
    "cmu_interpolation": ("vhp,vampprior,iwae", (50,), (2530, 15)),
    "pendulum_interpolation": ("vhp,iwae", (1, 16, 16), (1000, 18)),
    "faces_interpolation": ("vhp,iwae", (1, 64, 64), (10000, 18)),
}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_sweeps_models_with_the_same_paper_nets(compose_cfg, name: str) -> None:
    """Every model of the sweep composes with the App. F nets and takes a training step."""
    import yaml
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[1] / "conf" / "experiment" / f"{name}.yaml"
    sweep = yaml.safe_load(conf.read_text())["hydra"]["sweeper"]["params"]["model"]
    models, data_shape, graph = EXPERIMENTS[name]
    assert sweep == models
    nets = []  # (encoder, decoder) of each model
    for model_name in sweep.split(","):
        cfg = compose_cfg(f"experiment={name}", f"model={model_name}", tiny=False)
        assert tuple(cfg.dataset.data_shape) == data_shape
        assert (
            cfg.callbacks.interpolation.n_nodes,
            cfg.callbacks.interpolation.n_neighbors,
        ) == graph
        nets.append((cfg.model.encoder, cfg.model.decoder))
        if name != "faces_interpolation":  # the conv nets take ~1 s per step on CPU
            model = instantiate(cfg.model)
            out = model.loss(torch.rand(4, *data_shape), beta=0.5)
            assert torch.isfinite(out["loss"])
    assert all(n == nets[0] for n in nets)  # the dataset's nets (paper.nets) for every model


def test_callback_collects_points_with_class_names(tmp_path: Path) -> None:
    from vhp_lightning.callbacks.interpolation import InterpolationAnalysis
    from vhp_lightning.datamodules.image_folder import ShapesDataModule

    class Trainer:
        datamodule = ShapesDataModule(n_samples=40, val_fraction=0.25, test_fraction=0.25)

    x, labels = InterpolationAnalysis(str(tmp_path), max_points=7)._collect(Trainer())
    assert x.shape == (7, 1, 64, 64)
    assert set(labels) <= {"arrow", "L", "key", "flag"} and len(labels) == 7
