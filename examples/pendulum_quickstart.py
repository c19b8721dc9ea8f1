"""Quick start as a library: train VHP + REWO on the pendulum, load the checkpoint, draw figures.

    python examples/pendulum_quickstart.py --steps 3000 --out quickstart
    python examples/pendulum_quickstart.py --steps 20 --out /tmp/qs dataset.n_samples=600  # smoke

Trailing ``key=value`` arguments are Hydra overrides of the training config (``conf/train.yaml``),
exactly as on the ``vhp-train`` command line. Writes into ``--out``:

* ``run/`` - the training run (``checkpoints/last.ckpt``, ``csv/metrics.csv``);
* ``latent_map.png`` - posterior means of the test images coloured by the joint angle (Fig. 2);
* ``interpolation_graph.png``, ``interpolation_strip.png`` - the graph-based interpolation
  between two opposite pendulum positions (sec. 2.3, Fig. 3-4).

A short run shows the workflow; the paper's figures come from full runs (30 000 steps and more,
``experiment=pendulum_rewo``; measured times and results in ``docs/pendulum.md``).
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import vhp_lightning
from vhp_lightning.analysis.figures import plot_graph_path, plot_image_strip, plot_latents
from vhp_lightning.train import train


def train_pendulum(steps: int, run_dir: Path, overrides: Sequence[str] = ()) -> Path:
    """Compose ``conf/train.yaml`` (VHP + REWO on the pendulum) and train; return the checkpoint.

    The same as ``vhp-train trainer.max_steps=<steps> hydra.run.dir=<run_dir> <overrides>``, run
    in this process: Hydra's compose API builds the config, ``vhp_lightning.train.train`` runs it.
    """
    base = [f"trainer.max_steps={steps}", "test=false", "trainer.enable_progress_bar=false"]
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vhp_lightning.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*base, *overrides], return_hydra_config=True)
    with open_dict(cfg):  # what `hydra.main` would do: the run dir that ${hydra:...} refers to
        cfg.hydra.runtime.output_dir = str(run_dir.resolve())
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


def test_images(model: vhp_lightning.TrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's test split, rebuilt from the config stored in the checkpoint:
    ``images: (N, 1, 16, 16)``, ``angles: (N,)`` in radians."""
    datamodule = model.datamodule()
    datamodule.setup("test")
    batches = list(datamodule.test_dataloader())
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def draw(ckpt: Path, out: Path, n_nodes: int = 1000, n_neighbors: int = 18) -> dict[str, Path]:
    """Load ``ckpt`` with ``vhp_lightning.load`` and write the latent map and an interpolation."""
    model = vhp_lightning.load(ckpt)  # no Hydra: the model is rebuilt from the checkpoint
    print(model)
    images, angles = test_images(model)
    mean, _ = model.encode(images)  # (N, latent_dim) posterior means
    names = ("latent_map", "interpolation_graph", "interpolation_strip")
    files = {name: out / f"{name}.png" for name in names}
    title = f"Posterior means, coloured by the joint angle (step {model.global_step})"
    _save(plot_latents(mean.cpu().numpy(), angles.numpy(), title=title), files["latent_map"])

    # Two opposite positions: the joint angle closest to pi/2 and the one closest to 3 pi/2.
    a, b = (int((angles - t).abs().argmin()) for t in (math.pi / 2, 3 * math.pi / 2))
    result = model.interpolate(images[a], images[b], n_nodes, n_neighbors, seed=0)
    print(f"interpolation: {len(result.path)} points, smoothness {result.smoothness['mean']:.4f}")
    _save(plot_graph_path(result.nodes, result.graph, result.path), files["interpolation_graph"])
    strip = plot_image_strip(result.decoded, image_shape=images.shape[-2:], max_images=12)
    _save(strip, files["interpolation_strip"])
    return files


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps (batches)")
    parser.add_argument("--out", type=Path, default=Path("quickstart"), help="output folder")
    parser.add_argument("--nodes", type=int, default=1000, help="graph nodes (prior samples)")
    parser.add_argument("--neighbors", type=int, default=18, help="k of the kNN graph")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. optim.kappa=0.05")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the run's closing report
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = train_pendulum(args.steps, args.out / "run", args.overrides)
    files = draw(ckpt, args.out, args.nodes, args.neighbors)
    for name, path in files.items():
        print(f"{name}: {path}")
    return files


if __name__ == "__main__":
    main()
