"""Every option of every config group composes and runs one `fast_dev_run` step."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from tests.test_cmu_mocap import write_cmu_fixture
from tests.test_datamodules_images import write_idx_set, write_omniglot, write_static_npz
from tests.test_image_folder import write_image_folder
from vhp_lightning.datamodules.cmu_mocap import DEFAULT_MOTIONS
from vhp_lightning.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _defaults(path: Path) -> list:
    return _yaml(path).get("defaults") or []


def discover_groups() -> list[str]:
    """The config groups a user picks an option of, read from conf/: the groups of
    conf/train.yaml's defaults list, and the subgroups their options select (``paper/nets``,
    ``optim/optimizer``, ...). Left out: a group chosen by interpolation (``paper: ${dataset}``
    follows the dataset) and ``hparams_search`` (a sweeper: tests/test_sweeps.py runs it)."""
    groups = []
    for entry in _defaults(CONF / "train.yaml"):
        if not isinstance(entry, dict):
            continue
        (key, value), *_ = entry.items()
        if key.startswith("override ") or key == "hparams_search":
            continue
        if not (isinstance(value, str) and "${" in value):
            groups.append(key)
        for option in sorted((CONF / key).glob("*.yaml")):  # subgroups, e.g. paper/nets
            for sub in _defaults(option):
                if isinstance(sub, dict):
                    name = next(iter(sub)).split("@")[0]
                    if (CONF / key / name).is_dir() and f"{key}/{name}" not in groups:
                        groups.append(f"{key}/{name}")
    return groups


GROUPS = tuple(discover_groups())
# Small-but-real settings for options outside the pendulum + MLP nets default.
FAST = ["paper.n_importance=2", "trainer.enable_progress_bar=false", "callbacks=none"]
IMAGE_DATA = ["dataset.verify=false", "dataset.batch_size=8", "dataset.eval_batch_size=8"]
# A dataset runs with its own yaml, each of these keys it has made small (generated data keeps
# n_val/n_test images of n_samples; a dataset read from files gets the fixtures of image_root).
SMALL_DATA = {
    "n_samples": 200,
    "n_val": 10,
    "n_test": 50,
    "batch_size": 4,
    "eval_batch_size": 8,
    "verify": "false",
    "download": "false",
    "max_images": "null",
}
# Datasets read from files under ${data_dir}: the fixture image_root writes each (its writer and
# folder); test_every_dataset_read_from_files_has_a_fixture checks them against conf/dataset/.
FILE_FIXTURES = {
    "mnist": "write_idx_set(root, 'mnist')",
    "fashion_mnist": "write_idx_set(root, 'fashion_mnist')",
    "mnist_static": "write_static_npz(root)",
    "omniglot": "write_omniglot(root, ...)",
    "cmu_mocap": "write_cmu_fixture(root / 'cmu_mocap', ...)",
    "image_folder": "write_image_folder(root / 'image_folder', ...)",
}


def reads_files(dataset: str) -> bool:
    """Whether conf/dataset/<dataset>.yaml reads files under ``${data_dir}``."""
    return "${data_dir}" in (CONF / "dataset" / f"{dataset}.yaml").read_text()


def dataset_overrides(dataset: str, image_root: Path) -> list[str]:
    """The small settings of ``dataset``, derived from the keys of its own yaml (SMALL_DATA),
    with ``data_dir`` pointing at the fixtures if it reads files."""
    own = _yaml(CONF / "dataset" / f"{dataset}.yaml")
    small = [f"dataset.{k}={v}" for k, v in SMALL_DATA.items() if k in own]
    return [f"data_dir={image_root}"] * reads_files(dataset) + small


def chosen_dataset(compose_cfg, override: str) -> str:
    """The dataset ``override`` (e.g. ``experiment=table2``) selects, as Hydra composes it."""
    from hydra.core.hydra_config import HydraConfig

    compose_cfg(override, tiny=False)
    return HydraConfig.get().runtime.choices["dataset"]


ALL = [(g, o) for g in GROUPS for o in options(g)]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of every dataset in FILE_FIXTURES, tiny, in the staged layout."""
    root = tmp_path_factory.mktemp("images")
    write_idx_set(root, "mnist")
    write_idx_set(root, "fashion_mnist")
    write_static_npz(root)
    write_omniglot(root, {"images_background": (2, 2, 5), "images_evaluation": (1, 2, 5)})
    write_cmu_fixture(root / "cmu_mocap", n_frames=20, motions=DEFAULT_MOTIONS)
    write_image_folder(root / "image_folder", n_per_class=5)
    return root


def overrides_for(compose_cfg, group: str, option: str, image_root: Path) -> tuple[list[str], bool]:
    """(overrides, use the tiny pendulum preset) for running ``group=option``: an option that
    brings its own dataset or nets (a dataset, an experiment, a set of nets) runs with that
    dataset's small settings (``dataset_overrides``); any other with the tiny pendulum preset."""
    if group == "trainer":
        # no GPU here: the same strategy on CPU (trainer=ddp spawns 2 gloo processes)
        return ["trainer.accelerator=cpu"], True
    if group == "dataset":
        return [*dataset_overrides(option, image_root), *FAST], False
    if group == "experiment":
        data = dataset_overrides(chosen_dataset(compose_cfg, f"experiment={option}"), image_root)
        # the experiment's own callbacks run too
        return [*data, "paper.n_importance=2", "trainer.enable_progress_bar=false"], False
    if group.startswith("paper/"):
        # the nets of the tiny preset are MLPs; conv nets adapt to the pendulum's 16x16 images
        return [*dataset_overrides("pendulum", image_root), *FAST], False
    return [], True


TABLE2_ROWS = options("table2")


@pytest.mark.parametrize("row", TABLE2_ROWS)
def test_table2_row_trains_and_scores_at_the_cpu_protocol(
    compose_cfg, image_root: Path, row: str
) -> None:
    extra = [f"data_dir={image_root}", *IMAGE_DATA, "dataset.n_val=10", *FAST]
    cfg = compose_cfg(
        "experiment=table2", f"+table2={row}", *extra, "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "test_nll_images=3", "nll_samples=4", tiny=False,
    )  # fmt: skip
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/nll"]), metrics
    assert metrics["test/nll_images"] == 3 and metrics["test/nll_se"] >= 0


def test_every_group_has_options() -> None:
    assert {"dataset", "model", "optim", "trainer", "paper/nets", "experiment"} <= set(GROUPS)
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


def test_every_dataset_read_from_files_has_a_fixture() -> None:
    """A new dataset that reads ${data_dir} needs tiny files to run here; one generated in
    memory (as the pendulum) runs from its yaml alone."""
    reading = {name for name in options("dataset") if reads_files(name)}
    assert reading == set(FILE_FIXTURES), (
        f"add a writer of tiny files to image_root and FILE_FIXTURES for: "
        f"{sorted(reading - set(FILE_FIXTURES))}; drop {sorted(set(FILE_FIXTURES) - reading)}"
    )


@pytest.mark.parametrize("group,option", ALL, ids=[f"{g}={o}" for g, o in ALL])
def test_option_composes_and_runs_fast_dev_run(
    compose_cfg, image_root: Path, group: str, option: str
) -> None:
    extra, tiny = overrides_for(compose_cfg, group, option, image_root)
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
