"""Opening a checkpoint runs and writes nothing: the ``_target_`` allow-list
(``vhp_lightning.io.instantiate``) is derived from the classes of ``conf/``, admits the user's
own classes only when named (``VHP_TRUSTED_TARGETS``, ``trusted=``), and never a function."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra._internal.utils import _locate
from torch import nn

from tests.test_api import write_checkpoint
from vhp_lightning.api import load
from vhp_lightning.io.checkpoint import CheckpointError
from vhp_lightning.io.instantiate import (
    LEGACY_TARGETS,
    TRUST_ENV,
    UnsafeConfigError,
    allowed_targets,
    check_target,
)

REPO = Path(__file__).resolve().parents[1]
WRITES_YAML = "pytorch_lightning.core.saving.save_hparams_to_yaml"  # a Lightning function


def _targets(node: Any) -> set[str]:
    """Every ``_target_`` value anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        own = {node["_target_"]} if isinstance(node.get("_target_"), str) else set()
        return own.union(*(_targets(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_targets(v) for v in node))
    return set()


def test_allow_list_is_exactly_the_classes_of_the_shipped_configs() -> None:
    files = sorted((REPO / "conf").rglob("*.yaml"))
    used = set().union(*(_targets(yaml.safe_load(f.read_text())) for f in files))
    assert len(files) > 40
    # derived from conf/ (plus the classes only earlier checkpoints name): nothing else trusted
    assert allowed_targets() == used | LEGACY_TARGETS
    assert not LEGACY_TARGETS & used
    for name in sorted(allowed_targets()):
        assert inspect.isclass(_locate(name)), name
        check_target(name)
    model, data = allowed_targets("model"), allowed_targets("dataset")
    assert not model & data
    assert "vhp_lightning.models.vhp.VHP" in model and "vhp_lightning.nets.mlp.MLP" in model
    assert "vhp_lightning.datamodules.pendulum.PendulumDataModule" in data
    assert "vhp_lightning.callbacks.rewo.REWO" not in model | data  # a run class: never built


def test_a_new_yaml_target_is_allowed_without_a_code_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allow-list is read from the package's conf/: a class a new yaml names is on it."""
    from vhp_lightning.io import instantiate

    conf = tmp_path / "conf"
    (conf / "optim").mkdir(parents=True)
    (conf / "optim" / "mine.yaml").write_text("scheme:\n  _target_: tests.test_trust.OwnModel\n")
    monkeypatch.setattr(instantiate, "files", lambda package: conf)
    instantiate.shipped.cache_clear()
    try:
        assert "tests.test_trust.OwnModel" in allowed_targets()
        assert "tests.test_trust.OwnModel" not in allowed_targets("model")
    finally:
        instantiate.shipped.cache_clear()


@pytest.mark.parametrize(
    "target",
    [
        WRITES_YAML,
        "pytorch_lightning.utilities.cloud_io.atomic_save",  # allowed once by a prefix
        "torch.save",
        "vhp_lightning.io.checkpoint.os.system",
        "pytorch_lightning.loggers.CSVLogger.log_hyperparams",
    ],
)
def test_functions_and_unlisted_names_are_refused_by_name(target: str) -> None:
    with pytest.raises(UnsafeConfigError) as err:
        check_target(target, "model._target_")
    assert str(err.value).startswith(
        f"refusing to instantiate model._target_={target!r}: it is not on the allow-list; "
        "nothing was imported or run."
    )
    assert f"`VHP_TRUSTED_TARGETS={target}`" in str(err.value)  # the fix, for this name
    assert f"trusted=['{target}']" in str(err.value)


def _writing_node(out: Path) -> dict[str, Any]:
    return {"_target_": WRITES_YAML, "config_yaml": str(out), "hparams": {"pwned": True}}


@pytest.mark.parametrize("where", ["model", "model.encoder", "dataset", "logger.csv"])
def test_checkpoint_targeting_a_writing_function_writes_nothing(
    compose_cfg, tmp_path: Path, where: str
) -> None:
    out, path = tmp_path / "pwned.yaml", tmp_path / "evil.ckpt"

    def edit(config: dict[str, Any]) -> None:
        *parents, last = where.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = _writing_node(out)

    write_checkpoint(compose_cfg(), path, edit=edit)
    with pytest.raises(UnsafeConfigError, match=f"refusing to instantiate {where}._target_="):
        load(path)
    assert not out.exists()


def test_a_run_class_in_the_model_slot_is_not_built(compose_cfg, tmp_path: Path) -> None:
    """On the list (the config may hold it) but never built when opening a checkpoint."""
    path = tmp_path / "odd.ckpt"
    logger = {"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": str(tmp_path / "x")}
    write_checkpoint(compose_cfg(), path, edit=lambda c: c.update(model=logger))
    with pytest.raises(
        UnsafeConfigError,
        match=r"model._target_='pytorch_lightning.loggers.CSVLogger': it is not on the allow",
    ):
        load(path)
    assert not (tmp_path / "x").exists()


class OwnModel(nn.Module):
    """A user's own model class (test helper for ``trusted=``)."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.layer = nn.Linear(width, width)


def test_trusted_admits_a_class_never_a_function(compose_cfg, tmp_path: Path) -> None:
    path = tmp_path / "mine.ckpt"
    own = {"_target_": "tests.test_trust.OwnModel", "width": 3}
    write_checkpoint(compose_cfg(), path, edit=lambda c: c.update(model=own))
    with pytest.raises(UnsafeConfigError, match="OwnModel': it is not on the allow-list"):
        load(path)
    with pytest.raises(CheckpointError, match=r"do not fit the model its config builds \(Own"):
        load(path, trusted=["tests.test_trust.OwnModel"])  # built: only its weights differ
    write_checkpoint(compose_cfg(), path, edit=lambda c: c["model"].update(_target_=WRITES_YAML))
    with pytest.raises(UnsafeConfigError, match="it resolves to a function, not a class"):
        load(path, trusted=[WRITES_YAML])


def test_the_environment_trusts_classes_and_packages_never_functions(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``VHP_TRUSTED_TARGETS``: class names or ``pkg.*``, read at every check (so also by
    ``vhp_lightning.evaluate``); a ``pkg.*`` entry admits only classes defined under pkg."""
    path = tmp_path / "mine.ckpt"
    own = {"_target_": "tests.test_trust.OwnModel", "width": 3}
    write_checkpoint(compose_cfg(), path, edit=lambda c: c.update(model=own))
    for entry in ("tests.test_trust.OwnModel", "tests.*", " x.Y , tests.test_trust.*"):
        monkeypatch.setenv(TRUST_ENV, entry)
        with pytest.raises(CheckpointError, match=r"do not fit the model its config builds"):
            load(path)  # built: only its weights differ
    monkeypatch.setenv(TRUST_ENV, "tests.*")
    check_target("tests.test_trust.OwnModel")
    # an attribute leading out of the trusted package: a class, but defined elsewhere
    for outside in ("tests.test_trust.nn.Linear", "tests.test_trust.subprocess.Popen"):
        with pytest.raises(
            UnsafeConfigError, match=r"defined in .*, outside the trusted tests\.\*"
        ):
            check_target(outside)
    with pytest.raises(UnsafeConfigError, match="resolves to a function"):
        check_target("tests.test_trust.write_checkpoint")
    monkeypatch.setenv(TRUST_ENV, WRITES_YAML)
    with pytest.raises(UnsafeConfigError, match="resolves to a function"):
        check_target(WRITES_YAML)
    monkeypatch.setenv(TRUST_ENV, "tests.test_trust")  # a module, not a class and no ".*"
    with pytest.raises(UnsafeConfigError, match="it is not on the allow-list"):
        check_target("tests.test_trust.OwnModel")


def test_a_stored_download_flag_is_not_followed(compose_cfg, tmp_path: Path) -> None:
    path = tmp_path / "dl.ckpt"
    mnist = {
        "_target_": "vhp_lightning.datamodules.mnist.MNISTDataModule",
        "data_dir": str(tmp_path / "d"),
    }
    write_checkpoint(compose_cfg(), path, edit=lambda c: c.update(dataset={**mnist, "download": 1}))
    trained = load(path)
    assert trained.config.dataset.download == 1  # stored as written ...
    assert trained.datamodule().download is False  # ... but opening never downloads
    assert trained.datamodule(download=True).download is True  # unless the caller asks
    assert not (tmp_path / "d").exists()


def test_evaluate_cli_refuses_a_writing_function(compose_cfg, tmp_path: Path) -> None:
    out, ckpt = tmp_path / "pwned.yaml", tmp_path / "evil.ckpt"
    write_checkpoint(compose_cfg(), ckpt, edit=lambda c: c.update(dataset=_writing_node(out)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vhp_lightning.evaluate",
            f"ckpt_path={ckpt}",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert proc.returncode != 0
    assert f"refusing to instantiate dataset._target_='{WRITES_YAML}'" in proc.stderr
    assert not out.exists()
    assert not (tmp_path / "eval" / "metrics.json").exists()
