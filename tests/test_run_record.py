"""A run dir's record read back (``vhp_lightning.runs.record``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vhp_lightning.runs.record import read_config, read_overrides, record_path


def test_the_config_and_the_overrides_of_a_run_dir(tmp_path: Path) -> None:
    record = record_path(tmp_path)
    record.mkdir()
    config = {"seed": 1, "optim": {"kappa": "${paper.kappa}"}}
    (record / "config.yaml").write_text(yaml.safe_dump(config))
    (record / "overrides.yaml").write_text(yaml.safe_dump(["+table2=vhp_rewo", "seed=1"]))
    assert record_path(tmp_path, "config.yaml") == tmp_path / ".hydra" / "config.yaml"
    assert read_config(tmp_path) == config  # interpolations unresolved
    assert read_overrides(tmp_path) == ["+table2=vhp_rewo", "seed=1"]


def test_a_folder_without_a_record(tmp_path: Path) -> None:
    assert read_overrides(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        read_config(tmp_path)
