"""What a newcomer meets in the first hour: a bounded end-of-run test NLL with its projected time,
signals during the end-of-run evaluation, ``--help``, ``--cfg job --resolve``, W&B without a
login, a missing sweep plugin, and a checkpoint whose data_dir was relative."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_CLI
from vhp_lightning.io.checkpoint import load_checkpoint
from vhp_lightning.runs.preflight import WandbLoginError, check_wandb, missing_plugin
from vhp_lightning.train import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}


def _cli(*args: str, cwd: Path, module: str = "vhp_lightning.train") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


# --- the end-of-run test ------------------------------------------------------------------------
def test_test_nll_covers_test_nll_images_and_projects_its_time(compose_cfg, caplog) -> None:
    caplog.set_level(logging.INFO, logger="vhp_lightning.module")
    metrics = train(compose_cfg("test_nll_images=30", "trainer.max_steps=4"))
    assert metrics["test/nll_images"] == 30  # of the 100 test images
    assert metrics["test/nll"] > 0 and "test/loss" in metrics
    (line,) = [r.getMessage() for r in caplog.records if "End-of-run test/nll" in r.getMessage()]
    assert "on 30 of 100 test images with S = 100 importance samples: about" in line
    assert "python -m vhp_lightning.evaluate ckpt_path=" in line and "metrics=[nll]" in line


def test_test_nll_images_null_scores_every_test_image(compose_cfg) -> None:
    metrics = train(compose_cfg("test_nll_images=null", "nll_samples=3", "trainer.max_steps=2"))
    assert metrics["test/nll_images"] == 100


def test_val_loss_beta_is_the_objective_at_the_current_beta(compose_cfg) -> None:
    metrics = train(compose_cfg("test=false", "trainer.max_steps=3"))  # REWO: beta = 1e-4
    assert metrics["rewo/beta"] == pytest.approx(1e-4)
    expected = metrics["val/recon"] + 1e-4 * metrics["val/kl"]  # another z draw: close, not equal
    assert metrics["val/loss_beta"] == pytest.approx(expected, rel=2e-2)
    assert metrics["val/loss"] == pytest.approx(metrics["val/recon"] + metrics["val/kl"], rel=1e-4)
    assert metrics["val/loss"] > metrics["val/loss_beta"]


def test_default_bounds_the_end_of_run_test_nll() -> None:
    text = (Path(__file__).resolve().parents[1] / "conf" / "train.yaml").read_text()
    assert "\ntest_nll_images: 100\n" in text and "\nnll_samples: 100\n" in text


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_during_test(tmp_path: Path, signum: int) -> tuple[int, str, float]:
    """Train a tiny run whose end-of-run test/nll is long; send ``signum`` once the projection
    line is printed. Returns (exit status, output, seconds from the signal to the exit)."""
    drop = ("callbacks=none", "dataset.n_test=50", "dataset.n_samples=300")
    args = [a for a in TINY_CLI if a not in drop]
    args += [
        "dataset.n_samples=2400",
        "dataset.n_test=2000",
        "test_nll_images=null",
        "nll_samples=5000",
        "callbacks.figures=null",
        "callbacks.image_grids=null",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vhp_lightning.train", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        # A shell that starts the test suite in the background (`make test &`, nohup) makes
        # every child ignore SIGINT, and Python then never raises KeyboardInterrupt: the Ctrl-C
        # a user's terminal sends needs the default disposition, as a foreground run has.
        preexec_fn=_default_sigint,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "End-of-run test/nll" in line:
            break
    sent = time.monotonic()
    proc.send_signal(signum)
    lines += proc.stdout.readlines()
    status = proc.wait(timeout=120)
    return status, "".join(lines), time.monotonic() - sent


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")]
)
def test_signal_during_the_end_of_run_test_says_training_finished(tmp_path, signum, name) -> None:
    status, out, seconds = _signal_during_test(tmp_path, signum)
    assert status == 128 + signum, out[-3000:]
    assert seconds < 30, seconds  # within a slice of 10 images, not after the 2000-image batch
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"Stopped by {name} during the end-of-run test, after training finished at step 4" in out
    assert f"The checkpoint {ckpt} is complete: there is nothing to resume" in out
    assert f"python -m vhp_lightning.evaluate ckpt_path={ckpt} metrics=[nll]" in out
    assert "resume=true" not in out
    assert load_checkpoint(ckpt)["global_step"] == 4


# --- the command line -----------------------------------------------------------------------------
def test_help_lists_the_main_commands_and_groups(tmp_path: Path) -> None:
    out = _cli("--help", cwd=tmp_path).stdout
    assert "== Main commands ==" in out
    assert "vhp-train dataset=mnist data_dir=/path/to/data" in out
    assert "vhp-eval ckpt_path=<run dir>/checkpoints/last.ckpt metrics=[nll]" in out
    assert "optim: elbo, geco, rewo, rewo_alt, warmup" in out and "optim/optimizer: adam" in out
    assert "== Config ==" not in out  # not the whole composed config
    out = _cli("--help", cwd=tmp_path, module="vhp_lightning.evaluate").stdout
    assert "vhp-eval ckpt_path=... data_dir=/path/to/data" in out


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "--resolve"]])
def test_help_and_cfg_answer_without_importing_torch_or_lightning(tmp_path, args) -> None:
    """They took 7 s (the Lightning import) and now load neither torch nor Lightning."""
    code = (
        "import sys\n"
        f"sys.argv = ['vhp-train', *{args!r}]\n"
        "from vhp_lightning.train import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('loaded:', sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("loaded: []"), proc.stdout[-500:]


def test_cfg_resolve_prints_run_dir_paths_not_none(tmp_path: Path) -> None:
    proc = _cli("--cfg", "job", "--resolve", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "None/" not in proc.stdout
    assert "    dirpath: outputs/" in proc.stdout and "/checkpoints\n" in proc.stdout


def test_missing_sweep_plugin_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    error = missing_plugin(["optim.kappa=0.1", "hparams_search=optuna"])
    assert error is not None and "hparams_search=optuna needs the Hydra plugin" in error
    assert "pip install '.[sweep]'" in error
    assert missing_plugin(["optim.kappa=0.1"]) is None


def test_missing_sweep_plugin_on_the_command_line(tmp_path: Path) -> None:
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401

        pytest.skip("the sweep extra is installed")
    except ImportError:
        pass
    proc = _cli("-m", "hydra/launcher=slurm", cwd=tmp_path)
    assert proc.returncode == 1
    assert "hydra/launcher=slurm needs the Hydra plugin" in proc.stderr
    assert "pip install '.[sweep]'" in proc.stderr


def test_wandb_without_login_or_offline_mode_fails_early(
    compose_cfg, tmp_path, monkeypatch
) -> None:
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    cfg = compose_cfg("logger=wandb")
    with pytest.raises(WandbLoginError, match=r"WANDB_MODE=offline python -m vhp_lightning.train"):
        check_wandb(cfg)
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_wandb(cfg)  # offline: fine
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    check_wandb(cfg)  # `wandb login` wrote ~/.netrc: fine
    check_wandb(compose_cfg("logger=csv"))


def test_finished_run_stores_absolute_data_dir_and_names_the_full_nll(tmp_path: Path) -> None:
    args = [a for a in TINY_CLI if a != "callbacks=none"]
    args += ["callbacks.figures=null", "callbacks.image_grids=null", "data_dir=some/data"]
    proc = _cli(*args, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["vhp_config"]["data_dir"] == str(tmp_path / "some" / "data")
    out = proc.stdout + proc.stderr
    assert "test/nll is the mean over 50 test images with S = 100" in out
    ckpt_path = (tmp_path / "run" / "checkpoints" / "last.ckpt").resolve()
    assert f"python -m vhp_lightning.evaluate ckpt_path={ckpt_path} metrics=[nll]" in out
