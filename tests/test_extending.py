"""docs/extending.md, followed: its files (a β-scheme over BetaScheme, a DataModule, a model and
their yaml) written into a temporary folder, its train command run with the real CLI (tiny
settings), the checkpoint refused until trusted, then opened and evaluated."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_CLI
from vhp_lightning.api import load
from vhp_lightning.io.instantiate import TRUST_ENV, UnsafeConfigError

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "extending.md"
FILE = re.compile(r"<!--\s*file:\s*(\S+)\s*-->\s*\n```\w*\n(.*?)\n```", re.S)
SHELL = re.compile(r"```shell\n(.*?)\n```", re.S)
TINY = [o for o in TINY_CLI if not o.startswith("callbacks=")]  # the page sets its own


def page_files() -> dict[str, str]:
    """``{path: text}`` of every block under a ``<!-- file: path -->`` line of the page."""
    return {path: body + "\n" for path, body in FILE.findall(PAGE.read_text())}


def page_command(app: str) -> list[str]:
    """The arguments of the page's ``python -m vhp_lightning.<app>`` command."""
    for block in SHELL.findall(PAGE.read_text()):
        for line in block.splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens[:3] == ["python", "-m", f"vhp_lightning.{app}"]:
                return tokens[3:]
    raise AssertionError(f"docs/extending.md has no `python -m vhp_lightning.{app}` command")


def run(app: str, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"vhp_lightning.{app}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **{k: v for k, v in os.environ.items() if k != TRUST_ENV},
            "PYTHONPATH": os.pathsep.join([str(cwd), str(REPO)]),  # `export PYTHONPATH=$PWD`
            "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "offline",
            "HYDRA_FULL_ERROR": "0",
            **env,
        },
    )


def test_the_page_names_each_addition_by_its_file_and_yaml() -> None:
    files = page_files()
    for path in (
        "toy_ext/schemes.py",
        "toy_ext/conf/optim/ramp.yaml",
        "toy_ext/data.py",
        "toy_ext/conf/dataset/ring.yaml",
        "toy_ext/conf/paper/ring.yaml",
        "toy_ext/models.py",
        "toy_ext/conf/model/wide_vae.yaml",
    ):
        assert path in files, f"docs/extending.md lacks the block of {path}"
    for case in ("## A β-scheme", "## A dataset", "## A model", "## A Table 1 metric"):
        assert case in PAGE.read_text()


def test_a_user_package_trains_loads_once_trusted_and_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path, text in page_files().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    train_args = [a for a in page_command("train") if not a.startswith("trainer.max_steps=")]
    assert "hydra.searchpath=[file://toy_ext/conf]" in train_args
    proc = run("train", [*train_args, *TINY, "hydra.run.dir=run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in tmp_path.rglob("*.ckpt"))

    # refused until trusted: by name, with the fix, before anything of toy_ext is imported
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(UnsafeConfigError) as err:
        load(ckpt)
    assert "'toy_ext." in str(err.value) and "it is not on the allow-list" in str(err.value)
    assert f"{TRUST_ENV}=toy_ext." in str(err.value) and "trusted=['toy_ext." in str(err.value)
    assert not any(m == "toy_ext" or m.startswith("toy_ext.") for m in sys.modules)
    try:
        trained = load(ckpt, trusted=["toy_ext.*"])
        assert type(trained.model).__name__ == "WidePriorVAE" and trained.data_shape == (8,)
        assert trained.config.optim.scheme._target_ == "toy_ext.schemes.Ramp"
        x = next(iter(trained.datamodule().test_dataloader()))[0][:5]
        assert torch_finite(trained.log_likelihood(x, samples=8))
        monkeypatch.setenv(TRUST_ENV, "toy_ext.*")
        assert type(load(ckpt).model).__name__ == "WidePriorVAE"
    finally:
        for name in [m for m in sys.modules if m == "toy_ext" or m.startswith("toy_ext.")]:
            del sys.modules[name]

    eval_args = [a.replace("outputs/<date>/<time>", "run") for a in page_command("evaluate")]
    eval_args += ["limit=20", "n_samples=4", "device=cpu", "hydra.run.dir=eval"]
    refused = run("evaluate", eval_args, tmp_path)
    assert refused.returncode != 0 and f"{TRUST_ENV}=toy_ext." in refused.stderr
    proc = run("evaluate", eval_args, tmp_path, **{TRUST_ENV: "toy_ext.*"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["metrics"]["active_units"], result


def torch_finite(values) -> bool:
    return all(math.isfinite(float(v)) for v in values)
