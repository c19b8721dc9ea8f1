"""``callbacks/`` and ``datamodules/`` are ``vhp_lightning.callbacks`` and
``vhp_lightning.datamodules`` once installed: a user's own ``callbacks.py`` does not shadow them,
and checkpoints of earlier versions (``_target_: callbacks.rewo.REWO``) still load, evaluate and
resume."""

from __future__ import annotations

import json
from typing import Any

import torch
from hydra import compose
from omegaconf import open_dict

from tests.test_api import write_checkpoint
from vhp_lightning.api import load
from vhp_lightning.evaluate import evaluate
from vhp_lightning.io.checkpoint import load_checkpoint
from vhp_lightning.io.instantiate import current_target
from vhp_lightning.train import train

OLD = {"vhp_lightning.callbacks.": "callbacks.", "vhp_lightning.datamodules.": "datamodules."}


def _old_names(node: Any) -> Any:
    """``node`` with every ``_target_`` under the top-level package names of earlier versions."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                for new, old in OLD.items():
                    if value.startswith(new):
                        node[key] = old + value[len(new) :]
            else:
                _old_names(value)
    elif isinstance(node, list):
        for value in node:
            _old_names(value)
    return node


def _targets(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["_target_"]] if "_target_" in node else []
        return own + [t for v in node.values() for t in _targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in _targets(v)]
    return []


def test_current_target_renames_only_the_old_packages() -> None:
    assert current_target("callbacks.rewo.REWO") == "vhp_lightning.callbacks.rewo.REWO"
    assert current_target("datamodules.mnist.MNISTDataModule") == (
        "vhp_lightning.datamodules.mnist.MNISTDataModule"
    )
    for same in (
        "vhp_lightning.callbacks.rewo.REWO",
        "pytorch_lightning.callbacks.ModelCheckpoint",
    ):
        assert current_target(same) == same
    assert current_target(None) is None


def test_checkpoint_with_old_package_names_loads_and_evaluates(compose_cfg, tmp_path) -> None:
    path = tmp_path / "old.ckpt"
    write_checkpoint(compose_cfg(), path, edit=_old_names)
    stored = torch.load(path, weights_only=True)["vhp_config"]
    assert stored["dataset"]["_target_"] == "datamodules.pendulum.PendulumDataModule"
    assert stored["optim"]["scheme"]["_target_"] == "callbacks.rewo.REWO"
    targets = _targets(load_checkpoint(path)["vhp_config"])
    assert not [t for t in targets if t.startswith(("callbacks.", "datamodules."))], targets
    trained = load(path)
    assert type(trained.datamodule()).__module__ == "vhp_lightning.datamodules.pendulum"
    cfg = compose("eval", overrides=[f"ckpt_path={path}", "metrics=[nll]", "limit=8"])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    evaluate(cfg, tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["dataset"] == "vhp_lightning.datamodules.pendulum.PendulumDataModule"
    assert saved["scheme"] == "vhp_lightning.callbacks.rewo.REWO"


def test_checkpoint_with_old_package_names_resumes(compose_cfg, tmp_path) -> None:
    run = tmp_path / "run"
    steps = [
        "callbacks.model_checkpoint.every_n_train_steps=null",
        "callbacks.model_checkpoint.every_n_epochs=1",
        "~callbacks.progress_bar",
        "test=false",
    ]
    train(compose_cfg("callbacks=default", *steps, "trainer.max_steps=3", run_dir=run))
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    _old_names(ckpt["vhp_config"])
    torch.save(ckpt, last)
    cfg = compose_cfg(
        "callbacks=default", *steps, "trainer.max_steps=6", "resume=true", run_dir=run
    )
    train(cfg)
    resumed = load_checkpoint(last)
    assert resumed["global_step"] == 6
    assert resumed["vhp_config"]["optim"]["scheme"]["_target_"] == (
        "vhp_lightning.callbacks.rewo.REWO"
    )


def test_training_from_a_folder_with_its_own_callbacks_and_datamodules(run_cli, tmp_path) -> None:
    """``python -m vhp_lightning.train`` puts the working directory first on ``sys.path``: a
    user's ``callbacks.py``/``datamodules.py`` there must not be what the configs import."""
    for name in ("callbacks", "datamodules"):
        (tmp_path / f"{name}.py").write_text(
            f'raise ImportError("the user\'s own {name}.py was imported")\n'
        )
    proc = run_cli("test=false", cwd=tmp_path, tiny=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Finished at step 4" in proc.stdout + proc.stderr
