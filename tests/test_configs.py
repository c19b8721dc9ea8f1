"""Every option of every config group composes and runs one `fast_dev_run` step."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from tests.test_cmu_mocap import write_cmu_fixture
from tests.test_datamodules_images import write_idx_set, write_omniglot, write_static_npz
from tests.test_image_folder import write_image_folder
from vhp_lightning.datamodules.cmu_mocap import DEFAULT_MOTIONS
from vhp_lightning.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("dataset", "paper/nets", "model", "optim", "trainer", "logger", "callbacks", "experiment")

# Small-but-real settings for options outside the pendulum + MLP nets default.
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
    if group == "paper/nets" and option != "mlp":
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


def test_datasets_describe_data_and_select_their_paper_settings(compose_cfg) -> None:
    """A dataset config holds the data only; conf/paper/<dataset>.yaml holds App. F's settings."""
    import yaml

    assert options("paper") == options("dataset")
    for name in options("dataset"):
        data = yaml.safe_load((CONF / "dataset" / f"{name}.yaml").read_text())
        assert "_target_" in data and not {"defaults", "paper", "model", "dataset"} & set(data)
    mlp, conv = "vhp_lightning.nets.mlp.GaussianMLP", "vhp_lightning.nets.conv.ConvEncoder"
    encoders = {"pendulum": mlp, "cmu_mocap": mlp, "image_folder": conv, "shapes64": conv}
    for name in options("dataset"):
        cfg = compose_cfg(f"dataset={name}", tiny=False)
        assert cfg.model.encoder == cfg.paper.nets.encoder, name
        gated = "vhp_lightning.nets.conv.GatedConvEncoder"  # the MNIST family
        assert cfg.model.encoder._target_ == encoders.get(name, gated), name


def test_nets_change_with_one_override(compose_cfg) -> None:
    cfg = compose_cfg("paper/nets=gated", "paper.nets.prior_encoder.hidden=[64]", tiny=False)
    assert cfg.model.encoder._target_.endswith("GatedConvEncoder")
    assert cfg.model.prior_encoder.hidden == [64] and cfg.model.prior_decoder.in_dim == 2
    cfg = compose_cfg("dataset=shapes64", "paper.nets.encoder.hidden=128", tiny=False)
    assert cfg.model.decoder.hidden == 128  # the conv decoder mirrors the encoder
    cfg = compose_cfg("experiment=table2", "dataset=fashion_mnist", "+table2=iwae_l2", tiny=False)
    assert cfg.model.encoder.hidden == [256, 256] and cfg.paper.kappa == 0.31
    assert cfg.model.prior_encoder._target_.endswith("GatedGaussianMLP")


def test_a_model_net_set_by_hand_is_refused_with_the_fix(compose_cfg) -> None:
    """`+model.encoder.hidden=[16]` (Hydra's hint when `model.encoder.hidden=` is refused) would
    replace the encoder by {hidden: [16]}: refused before anything is built."""
    with pytest.raises(ValueError, match=r"paper\.nets\.encoder\.hidden="):
        train(compose_cfg("+model.encoder.hidden=[16]"))


def test_a_checkpoint_from_before_paper_nets_resumes(compose_cfg) -> None:
    """Run configs written before conf/paper/nets/ hold the nets under model. only (Table 2's
    also under experiment_nets): a resume compares the model's resolved nets, not their source."""
    from vhp_lightning.io.checkpoint import config_differences
    from vhp_lightning.io.config import plain_config

    config = plain_config(compose_cfg())
    stored = copy.deepcopy(config)
    del stored["paper"]["nets"]
    stored["experiment_nets"] = {"encoder": stored["model"]["encoder"]}
    stored["run_name"] = "pendulum-vhp_mlp-rewo"
    assert config_differences(stored, config) == []
    stored["model"]["encoder"]["hidden"] = [8]
    diffs = config_differences(stored, config)
    assert diffs == ["model.encoder.hidden: checkpoint [8], now [32, 32]"]


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
