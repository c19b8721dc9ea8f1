"""The package installs like any other: the wheel holds the code and every Hydra config, and the
installed ``vhp-train`` composes its config from a directory outside the repository.

The fast tests build the wheel from a copy of the sources (no build isolation, no network) and
install it with ``--no-deps --target`` next to the test venv's dependencies (about 15 s). The slow
test does what a user does: a fresh venv, ``pip install <wheel>`` with all dependencies, and a
short ``vhp-train`` run from a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")

REPO = Path(__file__).resolve().parents[1]
# Source folder -> where it lands in the wheel (pyproject maps the top-level `conf/`,
# `callbacks/` and `datamodules/` into the `vhp_lightning` package).
PACKAGE_DIRS = {
    "vhp_lightning": "vhp_lightning",
    "datamodules": "vhp_lightning/datamodules",
    "callbacks": "vhp_lightning/callbacks",
    "conf": "vhp_lightning/conf",
}


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "WANDB_MODE": "offline"}
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def _run(cmd: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _copy_sources(dest: Path) -> None:
    """Copy what the build reads (pyproject's packages, readme, license) into ``dest``."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setup = project["tool"]["setuptools"]
    dirs = {setup.get("package-dir", {}).get(p, p.replace(".", "/")) for p in setup["packages"]}
    tops = {d.split("/")[0] for d in dirs}
    for top in sorted(tops):
        shutil.copytree(REPO / top, dest / top, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", project["project"].get("readme", "README.md")):
        shutil.copy2(REPO / name, dest / name)
    for lic in REPO.glob("LICEN[CS]E*"):
        shutil.copy2(lic, dest / lic.name)


def build_wheel(out: Path) -> Path:
    """Build the wheel of the current working tree into ``out``; return its path."""
    src = out / "src"
    src.mkdir(parents=True)
    _copy_sources(src)  # a copy: no build/ or egg-info in the repo, no stale build/lib files
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    _run([*cmd, "-w", str(out), str(src)], cwd=out, timeout=300)
    (wheel,) = out.glob("vhp_lightning-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_has_every_module_and_config(wheel: Path) -> None:
    names = _names(wheel)
    missing = []
    for src, dest in PACKAGE_DIRS.items():
        patterns = ("*.py", "*.yaml") if src == "conf" else ("*.py",)
        for pattern in patterns:
            for f in (REPO / src).rglob(pattern):
                if "__pycache__" not in f.parts:
                    rel = f.relative_to(REPO / src).as_posix()
                    if f"{dest}/{rel}" not in names:
                        missing.append(f"{src}/{rel} -> {dest}/{rel}")
    assert not missing, (
        "files of the working tree missing from the wheel (add the sub-package to "
        "[tool.setuptools] packages in pyproject.toml):\n" + "\n".join(missing)
    )
    assert any(n.startswith("vhp_lightning/conf/experiment/") for n in names)


def test_wheel_installs_only_the_vhp_lightning_package(wheel: Path) -> None:
    """No top-level ``callbacks``/``datamodules``: a user's ``callbacks.py`` or another
    distribution of that name would shadow them (or be shadowed)."""
    tops = {n.split("/")[0] for n in _names(wheel) if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"vhp_lightning"}, tops
    assert "vhp_lightning/py.typed" in _names(wheel)  # PEP 561: type checkers read the hints


def test_wheel_metadata_and_console_scripts(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        info = next(n.split("/")[0] for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    names = _names(wheel)
    for script, module in (("vhp-train", "train"), ("vhp-eval", "evaluate")):
        assert f"{script} = vhp_lightning.{module}:main" in entry_points
        if (REPO / "vhp_lightning" / f"{module}.py").exists():  # evaluate.py may land later
            assert f"vhp_lightning/{module}.py" in names
    for line in ("Name: vhp-lightning", "License-Expression: MIT", "Requires-Dist: torch"):
        assert line in metadata
    for extra in ("wandb", "sweep", "dev", "bench"):
        assert f"Provides-Extra: {extra}" in metadata


def test_installed_wheel_composes_default_config_outside_repo(wheel: Path, tmp_path: Path) -> None:
    """``pip install --no-deps --target`` the wheel, then ``vhp-train --cfg job`` elsewhere."""
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
    _run([*pip, "--target", str(site), str(wheel)], cwd=tmp_path, timeout=120)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The installed copy, not the repo's editable install, is what Python finds.
    find = "import importlib.util as u; print([u.find_spec(m).origin for m in %r])"
    modules = [dest.replace("/", ".") for dest in PACKAGE_DIRS.values()][:3]
    where = _run(
        [sys.executable, "-c", find % modules],
        cwd=elsewhere,
        timeout=60,
        PYTHONPATH=str(site),
    ).stdout
    assert str(REPO) not in where and where.count(str(site)) == 3, where
    out = _run(
        [str(site / "bin" / "vhp-train"), "--cfg", "job", "--resolve", "trainer.max_steps=7"],
        cwd=elsewhere,
        timeout=120,
        PYTHONPATH=str(site),
    ).stdout
    for expected in (
        "vhp_lightning.callbacks.rewo.REWO",
        "vhp_lightning.datamodules.pendulum.PendulumDataModule",
    ):
        assert expected in out
    assert "max_steps: 7" in out and "in_dim: 256" in out  # overrides and resolvers work
    assert not (elsewhere / "outputs").exists()


@pytest.mark.slow
def test_fresh_venv_pip_install_and_train(wheel: Path, tmp_path: Path) -> None:
    """A user's install: fresh venv, ``pip install <wheel>`` (with dependencies), ``vhp-train``."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout=300)
    py = venv / "bin" / "python"
    install = _run([str(py), "-m", "pip", "install", str(wheel)], cwd=tmp_path, timeout=1800)
    work = tmp_path / "somewhere"
    work.mkdir()
    cmd = [
        str(venv / "bin" / "vhp-train"),
        "trainer.max_steps=20",
        "trainer.enable_progress_bar=false",
    ]
    proc = _run(cmd, cwd=work, timeout=600)
    transcript = "\n".join(
        [
            f"$ python -m venv venv && venv/bin/python -m pip install {wheel.name}",
            install.stdout.strip().splitlines()[-1],
            f"$ cd {work} && venv/bin/vhp-train {' '.join(cmd[1:])}",
            proc.stdout.strip(),
            proc.stderr.strip(),
        ]
    )
    (tmp_path / "transcript.txt").write_text(transcript)
    print(transcript)
    (run_dir,) = (work / "outputs").glob("*/*")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert "Finished at step 20" in proc.stdout + proc.stderr
