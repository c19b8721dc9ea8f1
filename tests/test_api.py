"""``vhp_lightning.load``: one-line loading, the documented shapes, and refusing unsafe or
mismatched checkpoints before any of their code runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import vhp_lightning
from vhp_lightning.api import TrainedModel, load
from vhp_lightning.io.checkpoint import CheckpointError, weight_mismatch
from vhp_lightning.io.instantiate import UnsafeConfigError, check_target, check_targets
from vhp_lightning.module import VHPModule

CONF = Path(__file__).resolve().parents[1] / "conf"


def write_checkpoint(
    cfg: DictConfig, path: Path, edit: Callable[[dict[str, Any]], None] | None = None
) -> VHPModule:
    """What ``trainer.save_checkpoint`` writes for a fresh ``VHPModule`` of ``cfg`` (its
    ``state_dict`` and the ``on_save_checkpoint`` entries); ``edit`` may tamper with the stored
    config first."""
    torch.manual_seed(0)
    module = VHPModule(
        model=instantiate(cfg.model),
        optimizer=instantiate(cfg.optim.optimizer),
        config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
    )
    ckpt: dict[str, Any] = {"state_dict": module.state_dict(), "global_step": 7, "epoch": 0}
    module.on_save_checkpoint(ckpt)
    if edit is not None:
        edit(ckpt["vhp_config"])
    torch.save(ckpt, path)
    return module


@pytest.fixture
def ckpt(compose_cfg, tmp_path: Path) -> tuple[Path, VHPModule]:
    """A tiny pendulum VHP checkpoint (MLP nets [32, 32], latent 2)."""
    path = tmp_path / "tiny.ckpt"
    return path, write_checkpoint(compose_cfg(), path)


def test_load_is_exported_and_restores_the_weights(ckpt) -> None:
    path, module = ckpt
    m = vhp_lightning.load(path)
    assert isinstance(m, TrainedModel) and not m.model.training
    ours, theirs = m.model.state_dict(), module.model.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert m.global_step == 7 and m.data_shape == (1, 16, 16)
    assert m.config.model._target_ == "vhp_lightning.models.vhp.VHP"
    with pytest.raises(Exception, match="read-only|ReadonlyConfig"):
        m.config.seed = 3


def test_documented_shapes(ckpt) -> None:
    m = load(ckpt[0])
    x = torch.rand(5, 1, 16, 16)
    mean, logvar = m.encode(x)
    assert mean.shape == logvar.shape == (5, 2)
    assert m.decode(mean).shape == (5, 1, 16, 16)
    assert m.sample(3).shape == (3, 1, 16, 16)
    assert m.sample_prior(3).shape == (3, 2)
    ll = m.log_likelihood(x, samples=20, chunk_size=40)  # 2 images x 20 samples per pass
    assert ll.shape == (5,) and torch.isfinite(ll).all()
    assert not ll.requires_grad


def test_log_likelihood_equals_the_models_own_estimate(ckpt) -> None:
    m = load(ckpt[0])
    x = torch.rand(4, 1, 16, 16)
    torch.manual_seed(1)
    ours = m.log_likelihood(x, samples=30, chunk_size=1000)  # one pass: same draws as below
    torch.manual_seed(1)
    torch.testing.assert_close(ours, m.model.log_likelihood(x, n_samples=30, chunk_size=30))


def test_interpolate(ckpt) -> None:
    m = load(ckpt[0])
    x = torch.rand(2, 1, 16, 16)
    result = m.interpolate(x[0], x[1], n_nodes=60, n_neighbors=8, seed=0)
    assert result.decoded.shape[1:] == (1, 16, 16) and result.path.shape[1] == 2
    assert result.decoded.shape[0] == result.path.shape[0] >= 2
    decoded_ends = m.decode(result.path[[0, -1]]).cpu().numpy()  # the data's shape, like decode
    assert decoded_ends.shape == (2, 1, 16, 16)
    assert abs(result.decoded[[0, -1]] - decoded_ends).max() < 1e-5


def test_datamodule_loaders_set_themselves_up(ckpt) -> None:
    m = load(ckpt[0])
    x, angle = next(iter(m.datamodule().test_dataloader()))  # no setup() call
    assert x.shape == (100, 1, 16, 16) and angle.shape == (100,)
    assert m.decode(m.encode(x)[0]).shape == x.shape  # decoded images in the data's shape


def test_datamodule_without_the_split_says_so() -> None:
    from vhp_lightning.datamodules.splits import SplitDataModule

    class NoTest(SplitDataModule):
        batch_size = eval_batch_size = 2
        num_workers = 0

        def setup(self, stage: str | None = None) -> None:
            self.splits = {"train": [1, 2], "val": [3]}

    assert len(NoTest().val_dataloader()) == 1
    with pytest.raises(RuntimeError, match=r"built no 'test' split \(it has: train, val\)"):
        NoTest().test_dataloader()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        node = config
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


EVIL = {
    "model": ("model._target_", "os.system"),
    "nested net": ("model.encoder._target_", "subprocess.run"),
    "unused group": ("logger.evil", {"_target_": "builtins.exec", "_args_": ["print(1)"]}),
    "attribute chain out of the project": (
        "model._target_",
        "vhp_lightning.io.checkpoint.os.system",
    ),
    "function defined outside": ("model._target_", "vhp_lightning.api.torch.load"),
    "private name": ("model._target_", "vhp_lightning.api._model_state"),
    "interpolation": ("model._target_", "${oc.env:EVIL_TARGET}"),
}


@pytest.mark.parametrize("case", list(EVIL), ids=list(EVIL))
def test_evil_config_is_refused_before_anything_runs(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    monkeypatch.setenv("EVIL_TARGET", "os.system")
    path = tmp_path / "evil.ckpt"
    write_checkpoint(compose_cfg(), path, edit=_set(*EVIL[case]))
    with pytest.raises(UnsafeConfigError, match="refusing"):
        load(path)
    assert calls == []


def test_weights_of_another_model_are_refused_naming_the_mismatch(compose_cfg, tmp_path) -> None:
    path = tmp_path / "other.ckpt"
    write_checkpoint(compose_cfg(), path, edit=_set("model.encoder.hidden", [16]))
    with pytest.raises(CheckpointError, match=r"do not fit.*encoder\..*shape|missing|unexpected"):
        load(path)


def test_weight_mismatch_names_shapes_missing_and_unexpected_keys() -> None:
    """The one report behind ``load`` and the resume check (``check_compatible``)."""
    own = {f"m{i}": torch.zeros(1) for i in range(7)} | {"a": torch.zeros(2, 3)}
    saved = {"a": torch.zeros(3, 2), "extra": torch.zeros(1)}
    assert weight_mismatch(saved, own) == (
        "shape mismatch a: checkpoint (3, 2), model (2, 3) | missing m0, m1, m2, m3, m4 (+2 more) "
        "| unexpected extra"
    )
    assert weight_mismatch(own, own) == ""


def test_checkpoint_without_a_stored_config(compose_cfg, tmp_path) -> None:
    path = tmp_path / "bare.ckpt"
    module = write_checkpoint(compose_cfg(), path)
    torch.save({"state_dict": module.state_dict()}, path)
    with pytest.raises(CheckpointError, match="stores no run config"):
        load(path)


def _targets(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["_target_"]] if isinstance(node.get("_target_"), str) else []
        return own + [t for v in node.values() for t in _targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in _targets(v)]
    return []


def test_allow_list_admits_every_target_of_the_shipped_configs() -> None:
    targets = {t for f in CONF.rglob("*.yaml") for t in _targets(yaml.safe_load(f.read_text()))}
    assert len(targets) > 20
    for target in sorted(targets):
        check_target(target)
    check_targets({"a": [{"_target_": "torch.optim.Adam"}]})
