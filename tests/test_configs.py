"""Every option of every config group composes and runs one `fast_dev_run` step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.test_cmu_mocap import write_cmu_fixture
from tests.test_datamodules_images import write_idx_set, write_omniglot, write_static_npz
from tests.test_image_folder import write_image_folder
from vhp_lightning.datamodules.cmu_mocap import DEFAULT_MOTIONS
from vhp_lightning.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("dataset", "model", "optim", "trainer", "logger", "callbacks", "experiment")

# Small-but-real settings for options outside the pendulum + vhp_mlp default.
FAST = ["paper.n_importance=2", "trainer.enable_progress_bar=false", "callbacks=none"]
IMAGE_DATA = ["dataset.verify=false", "dataset.batch_size=8", "dataset.eval_batch_size=8"]
PENDULUM_SMALL = [
    "dataset.n_samples=200", "dataset.n_val=50", "dataset.n_test=50",
    "dataset.batch_size=8", "dataset.eval_batch_size=8",
]  # fmt: skip
# Datasets read from the fixtures under image_root (CMU motions, 64x64 images), small batches;
# and the experiments built on them.
FIXTURE_DATA = {
    "cmu_mocap": ["dataset.batch_size=8", "dataset.eval_batch_size=8"],
    "image_folder": ["dataset.batch_size=4", "dataset.eval_batch_size=4"],
    "shapes64": ["dataset.n_samples=40", "dataset.batch_size=4", "dataset.eval_batch_size=4"],
}
FIXTURE_EXPERIMENTS = {
    "cmu_interpolation": FIXTURE_DATA["cmu_mocap"],
    "faces_interpolation": FIXTURE_DATA["image_folder"],  # reads ${data_dir}/image_folder
    "pendulum_interpolation": PENDULUM_SMALL,
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL = [(g, o) for g in GROUPS for o in options(g)]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST, Fashion-MNIST, static MNIST and Omniglot fixtures in the staged layout."""
    root = tmp_path_factory.mktemp("images")
    write_idx_set(root, "mnist")
    write_idx_set(root, "fashion_mnist")
    write_static_npz(root)
    write_omniglot(root, {"images_background": (2, 2, 5), "images_evaluation": (1, 2, 5)})
    write_cmu_fixture(root / "cmu_mocap", n_frames=20, motions=DEFAULT_MOTIONS)
    write_image_folder(root / "image_folder", n_per_class=5)
    return root


def overrides_for(group: str, option: str, image_root: Path) -> tuple[list[str], bool]:
    """(overrides, use the tiny pendulum preset) for running ``group=option``."""
    if group == "dataset" and option in FIXTURE_DATA:
        return [f"data_dir={image_root}", *FIXTURE_DATA[option], *FAST], False
    if group == "experiment" and option in FIXTURE_EXPERIMENTS:
        fast = ["paper.n_importance=2", "trainer.enable_progress_bar=false"]
        return [f"data_dir={image_root}", *FIXTURE_EXPERIMENTS[option], *fast], False
    if group == "experiment" and option.startswith("table2"):
        # Table 2 runs (gated-conv nets on the MNIST family) on tiny generated IDX/npz fixtures
        n_val = [] if "mnist_static" in option else ["dataset.n_val=10"]
        return [f"data_dir={image_root}", *IMAGE_DATA, *n_val, *FAST, "trainer.max_steps=2"], False
    if group == "trainer" and option in ("gpu", "ddp"):
        # no GPU here: the same strategy on CPU (trainer=ddp spawns 2 gloo processes)
        return ["trainer.accelerator=cpu"], True
    if group == "dataset" and option != "pendulum":
        n_val = [] if option == "mnist_static" else ["dataset.n_val=10"]
        return [f"data_dir={image_root}", *IMAGE_DATA, *n_val, *FAST], False
    if group == "model" and option != "vhp_mlp":
        return [*PENDULUM_SMALL, *FAST], False  # the conv nets adapt to 16x16 images
    if group == "experiment":
        return ["trainer.max_steps=20"], True
    return [], True


TABLE2_ROWS = options("table2")


@pytest.mark.parametrize("row", TABLE2_ROWS)
def test_table2_row_trains_and_scores_at_the_cpu_protocol(
    compose_cfg, image_root: Path, row: str
) -> None:
    extra, _ = overrides_for("experiment", "table2", image_root)
    cfg = compose_cfg(
        "experiment=table2", f"+table2={row}", *extra, "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "test_nll_images=3", "nll_samples=4", tiny=False,
    )  # fmt: skip
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/nll"]), metrics
    assert metrics["test/nll_images"] == 3 and metrics["test/nll_se"] >= 0


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize("group,option", ALL, ids=[f"{g}={o}" for g, o in ALL])
def test_option_composes_and_runs_fast_dev_run(
    compose_cfg, image_root: Path, group: str, option: str
) -> None:
    extra, tiny = overrides_for(group, option, image_root)
    cfg = compose_cfg(f"{group}={option}", *extra, "trainer.fast_dev_run=true", tiny=tiny)
    metrics = train(cfg)
    # The step really trained: a finite training loss, and the scheme's beta in its range.
    assert math.isfinite(metrics["train/loss"]), metrics
    betas = [v for k, v in metrics.items() if k.endswith("/beta")]
    assert len(betas) == 1 and 0.0 <= betas[0] <= 1e12, metrics


def test_default_config_is_the_paper_pendulum_setting(compose_cfg) -> None:
    cfg = compose_cfg(tiny=False)
    assert cfg.model._target_ == "vhp_lightning.models.vhp.VHP"
    assert cfg.model.encoder.hidden == [256, 256, 256, 256] and cfg.model.encoder.out_dim == 2
    assert cfg.model.likelihood._target_.endswith("GaussianLikelihood")
    assert cfg.optim.scheme.kappa == 0.02 and cfg.optim.scheme.nu == 5.0
    assert cfg.optim.optimizer.lr == 1e-4 and cfg.model.n_importance == 16
    assert cfg.dataset.n_samples == 15000


def test_mnist_command_is_the_paper_mnist_setting(compose_cfg) -> None:
    """`python -m vhp_lightning.train dataset=mnist optim=rewo` = App. F MNIST, no overrides."""
    cfg = compose_cfg("dataset=mnist", "optim=rewo", tiny=False)
    assert cfg.model._target_ == "vhp_lightning.models.vhp.VHP"
    assert cfg.model.encoder._target_.endswith("GatedConvEncoder")
    assert cfg.model.decoder._target_.endswith("GatedConvDecoder")
    assert cfg.model.encoder.out_dim == 32 and cfg.model.n_importance == 16
    assert cfg.model.likelihood._target_.endswith("BernoulliLikelihood")
    assert cfg.optim.scheme._target_ == "vhp_lightning.callbacks.rewo.REWO"
    assert cfg.optim.scheme.kappa == 0.18 and cfg.optim.scheme.nu == 1.0
    assert cfg.optim.optimizer.lr == 5e-4
    assert cfg.dataset._target_ == "vhp_lightning.datamodules.mnist.MNISTDataModule"


def test_fashion_brings_its_own_kappa(compose_cfg) -> None:
    assert compose_cfg("dataset=fashion_mnist", tiny=False).optim.scheme.kappa == 0.31


def test_explicit_override_beats_dataset_default(compose_cfg) -> None:
    cfg = compose_cfg("dataset=mnist", "model=vae", "optim.kappa=0.05", tiny=False)
    assert cfg.optim.scheme.kappa == 0.05 and cfg.model._target_.endswith("VAE")
    cfg = compose_cfg("paper.lr=3e-4", tiny=False)
    assert cfg.optim.optimizer.lr == 3e-4


def test_cmu_interpolation_runs_at_kappa_0_1_and_the_dataset_keeps_app_f(compose_cfg) -> None:
    """Decision 14: the experiment's REWO uses kappa = 0.1; dataset=cmu_mocap alone keeps 0.02."""
    cfg = compose_cfg("experiment=cmu_interpolation", tiny=False)
    assert (cfg.optim.kappa, cfg.optim.scheme.kappa, cfg.paper.likelihood.sigma) == (0.1, 0.1, None)
    assert compose_cfg("dataset=cmu_mocap", tiny=False).optim.scheme.kappa == 0.02
