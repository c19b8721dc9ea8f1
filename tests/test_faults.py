"""Fault tolerance and bad input: SIGTERM + exact resume, foreign checkpoints, secrets, full disk,
and a table of bad inputs, each with the exact error a user sees."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException

from tests.test_docs import SMALL_NETS
from vhp_lightning.io.checkpoint import CheckpointError, load_checkpoint
from vhp_lightning.train import train

REPO = Path(__file__).resolve().parents[1]

# 500 training images in batches of 10: 50 steps per epoch, so an interrupt lands mid-epoch.
RESUMABLE = [
    "dataset.n_samples=600",
    "dataset.n_val=50",
    "dataset.n_test=50",
    "dataset.batch_size=10",
    "dataset.eval_batch_size=50",
    *SMALL_NETS,
    "optim.kappa=0.3",  # reachable within a few steps: the phase switch happens in the run
    "trainer.max_steps=100",
    "trainer.check_val_every_n_epoch=100",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks=default",
    "~callbacks.progress_bar",
    "callbacks.model_checkpoint.every_n_train_steps=null",
    "callbacks.model_checkpoint.every_n_epochs=1",
    "logger=csv",
    "test=false",
]


class PauseAt(pl.Callback):
    """Test helper: at ``step``, touch ``marker`` and hold training until a SIGTERM arrives, so
    the test's external signal lands at a known step in the middle of an epoch."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step != self.step:
            return
        self.marker.touch()
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.01)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "1",
    }


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pid, st in opt_a["state"].items():
            for name, tensor in st.items():
                assert torch.equal(tensor, opt_b["state"][pid][name]), (pid, name)
    scheme = next(k for k in a["callbacks"] if k.startswith("REWO"))
    assert a["callbacks"][scheme] == b["callbacks"][scheme]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_interrupt_writes_checkpoint_and_resume_equals_uninterrupted_run(
    compose_cfg, tmp_path, signum
):
    """SIGTERM or Ctrl-C at step 73 (mid-epoch 2) -> last.ckpt, exit 128 + signum; resume=true in
    the same run dir then ends bitwise equal (weights, Adam state, beta/phase) to a run never
    interrupted. A first Ctrl-C stops at the end of the step, as SIGTERM does."""
    run, marker = tmp_path / "interrupted", tmp_path / "at_step_73"
    pause = [
        "+callbacks.pause._target_=tests.test_faults.PauseAt",
        "+callbacks.pause.step=73",
        f"+callbacks.pause.marker={marker}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vhp_lightning.train", *RESUMABLE, *pause, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, out[-3000:]
    assert "checkpoint written to" in out and "resume=true" in out
    assert f"Stopped by {'Ctrl-C' if signum == signal.SIGINT else 'SIGTERM'}" in out
    assert load_checkpoint(last)["global_step"] == 73  # the interrupt's checkpoint, mid-epoch
    assert not list(last.parent.glob(".*.tmp"))  # nothing half-written

    train(compose_cfg(*RESUMABLE, "resume=true", tiny=False, run_dir=run))
    train(compose_cfg(*RESUMABLE, tiny=False, run_dir=tmp_path / "straight"))
    resumed = load_checkpoint(last)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 100
    _assert_same_run(straight, resumed)


# --- a checkpoint to break ------------------------------------------------------------------------
GOOD = ["callbacks=default", "~callbacks.progress_bar", "trainer.max_steps=2", "test=false"]


@pytest.fixture
def good_ckpt(compose_cfg, tmp_path: Path) -> Path:
    """A real last.ckpt of the tiny test setting (encoder hidden [32, 32]), 2 steps."""
    train(compose_cfg(*GOOD, run_dir=tmp_path / "good"))
    return tmp_path / "good" / "checkpoints" / "last.ckpt"


def _truncated(ckpt: Path, tmp: Path) -> Path:
    out = tmp / "truncated.ckpt"
    out.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    return out


def _not_lightning(ckpt: Path, tmp: Path) -> Path:
    out = tmp / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, out)
    return out


def _reshaped(ckpt: Path, tmp: Path) -> Path:
    data = torch.load(ckpt, weights_only=True)
    key = next(k for k in data["state_dict"] if k.startswith("model.encoder"))
    data["state_dict"][key] = torch.zeros(7, 7)
    out = tmp / "reshaped.ckpt"
    torch.save(data, out)
    return out


# (case, overrides - {ckpt} is the path made by `make` from the good checkpoint, make, error, match)
BAD_INPUTS = [
    (
        "checkpoint of another model",
        ["ckpt_path={ckpt}", "paper.nets.encoder.hidden=[16]"],
        None,
        CheckpointError,
        "trained with another model/config; refusing to resume. Differences (checkpoint vs this "
        "run): model.encoder.hidden: checkpoint [32, 32], now [16]",
    ),
    (
        "checkpoint of other data",
        ["ckpt_path={ckpt}", "dataset.data_shape=[1,8,8]"],
        None,
        CheckpointError,
        "dataset.data_shape: checkpoint [1, 16, 16], now [1, 8, 8]",
    ),
    (
        "checkpoint tensors of the wrong shape",
        ["ckpt_path={ckpt}"],
        _reshaped,
        CheckpointError,
        "does not fit this model (shape mismatch model.encoder.body.net.0.weight: checkpoint "
        "(7, 7), model (32, 256))",
    ),
    (
        "half-written checkpoint",
        ["ckpt_path={ckpt}"],
        _truncated,
        CheckpointError,
        "is corrupt or truncated",
    ),
    (
        "plain torch file, not a checkpoint",
        ["ckpt_path={ckpt}"],
        _not_lightning,
        CheckpointError,
        "is not a Lightning checkpoint (no 'state_dict' entry)",
    ),
    (
        "ckpt_path=last in a fresh run dir",
        ["ckpt_path=last"],
        None,
        CheckpointError,
        "ckpt_path=last: this run dir has no checkpoint",
    ),
    (
        "resume=true and a ckpt_path",
        ["resume=true", "ckpt_path={ckpt}"],
        None,
        ValueError,
        "resume=true and ckpt_path=.* both given",
    ),
    ("resume not a bool", ["resume=maybe"], None, TypeError, "resume must be true or false"),
    ("seed not an integer", ["seed=abc"], None, TypeError, "seed must be an integer, got 'abc'"),
]


@pytest.mark.parametrize(
    "overrides,make,error,match", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_table(compose_cfg, good_ckpt, tmp_path, overrides, make, error, match) -> None:
    ckpt = make(good_ckpt, tmp_path) if make else good_ckpt
    run = tmp_path / "run"
    with pytest.raises(error, match=match if ".*" in match else re.escape(match)):
        train(compose_cfg(*GOOD, *(o.format(ckpt=ckpt) for o in overrides), run_dir=run))
    assert not (run / "checkpoints").exists()  # refused before anything was written


def test_resume_true_without_checkpoint_starts_fresh_then_resumes(compose_cfg, tmp_path) -> None:
    run = tmp_path / "run"
    train(compose_cfg(*GOOD, "resume=true", run_dir=run))  # nothing to resume: a fresh run
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    train(compose_cfg(*GOOD, "resume=true", "trainer.max_steps=4", run_dir=run))
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4


def test_missing_data_files_name_the_fix(compose_cfg, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="MNIST files not found: .* Fix: pass data_dir="):
        train(
            compose_cfg(
                "dataset=mnist", f"data_dir={tmp_path}", "trainer.fast_dev_run=true", tiny=False
            )
        )


def test_invalid_precision_names_the_choices(compose_cfg) -> None:
    with pytest.raises(InstantiationException, match="Precision 'bf17' is invalid. Allowed"):
        train(compose_cfg("trainer.precision=bf17"))


def test_nan_mid_training_stops_before_the_bad_update(compose_cfg, monkeypatch, tmp_path):
    import vhp_lightning.datamodules.pendulum as pendulum
    from vhp_lightning.module import NonFiniteLossError

    render = pendulum.render_pendulum

    def with_a_nan(angles: torch.Tensor, **kwargs: object) -> torch.Tensor:
        images = render(angles, **kwargs)
        images[123, 0, 5, 5] = float("nan")  # one training image
        return images

    monkeypatch.setattr(pendulum, "render_pendulum", with_a_nan)
    # Record every parameter just before each step: the refused step must leave them as they were.
    from vhp_lightning.module import VHPModule

    step, seen = VHPModule.training_step, {}

    def recording_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        seen["module"] = self
        seen["before"] = {k: v.detach().clone() for k, v in self.state_dict().items()}
        return step(self, batch, batch_idx)

    monkeypatch.setattr(VHPModule, "training_step", recording_step)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at global step \d+ "):
        train(compose_cfg(*GOOD, "trainer.max_steps=20"))
    after = seen["module"].state_dict()
    assert all(torch.equal(after[k], v) for k, v in seen["before"].items())
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


def test_disk_full_on_checkpoint_write(compose_cfg, good_ckpt, monkeypatch) -> None:
    """ENOSPC half-way through writing: a clear error, no temp file, last.ckpt untouched."""
    import vhp_lightning.io.checkpoint as checkpoint

    before = good_ckpt.read_bytes()

    def disk_full(ckpt: dict, f) -> None:  # type: ignore[no-untyped-def]
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write", disk_full)
    run = good_ckpt.parents[1]
    cfg = compose_cfg(*GOOD, "resume=true", "trainer.max_steps=4", run_dir=run)
    with pytest.raises(CheckpointError, match="no space left on device .* previous, intact state"):
        train(cfg)
    assert good_ckpt.read_bytes() == before
    assert sorted(p.name for p in good_ckpt.parent.iterdir()) == ["last.ckpt"]


def test_secrets_never_reach_saved_configs_checkpoints_or_logs(tmp_path) -> None:
    """A secret config key on the command line and WANDB_API_KEY in the environment: neither
    value is in any file of the run dir (.hydra/, checkpoint, CSV, TensorBoard, W&B offline)."""
    pytest.importorskip("wandb")
    cli_secret, env_secret = "s3cr3t-CLI-7b1d", "s3cr3t-ENV-93fa"
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vhp_lightning.train",
            *RESUMABLE,
            "trainer.max_steps=3",
            "logger=[csv,tensorboard,wandb]",
            f"+secrets.api_token={cli_secret}",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        env={**_env(), "WANDB_API_KEY": env_secret},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli_secret not in proc.stdout + proc.stderr
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and list(run.glob("wandb/offline-run-*"))
    for path in files:
        data = path.read_bytes()
        assert cli_secret.encode() not in data, path
        assert env_secret.encode() not in data, path
    saved = (run / ".hydra" / "config.yaml").read_text()
    assert "api_token: <redacted>" in saved
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["vhp_config"]["secrets"] == {
        "api_token": "<redacted>"
    }


@pytest.mark.parametrize(
    "message",
    [
        "[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: "
        "PytorchStreamWriter failed writing file data/3: file write failed "
        "(No space left on device)",
        "[enforce fail at inline_container.cc:858] . unexpected pos 11534272 vs 11534160",
    ],
    ids=["file-write-failed", "unexpected-pos-only"],
)
def test_torch_runtime_error_on_a_full_disk_is_one_clear_error(
    compose_cfg, good_ckpt, monkeypatch, message
):
    """A real full disk reaches us as torch's RuntimeError (its stream writer), not as OSError:
    the same CheckpointError naming the file, no temp file, the previous last.ckpt intact."""
    before = good_ckpt.read_bytes()

    def disk_full(obj: object, f, *args: object, **kwargs: object) -> None:  # type: ignore[no-untyped-def]
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError(message)

    monkeypatch.setattr(torch, "save", disk_full)
    run = good_ckpt.parents[1]
    cfg = compose_cfg(*GOOD, "resume=true", "trainer.max_steps=4", run_dir=run)
    with pytest.raises(CheckpointError) as err:
        train(cfg)
    assert str(err.value).startswith(
        f"could not write checkpoint {good_ckpt}: no space left on device (RuntimeError: "
    )
    assert "last.ckpt on disk (if any) is the previous, intact state" in str(err.value)
    assert "resume with resume=true" in str(err.value)
    assert good_ckpt.read_bytes() == before
    assert sorted(p.name for p in good_ckpt.parent.iterdir()) == ["last.ckpt"]


def test_atomic_writes_keep_the_old_file_whole_on_any_failure(tmp_path: Path) -> None:
    """The one writer of results, curves and checkpoints: all or nothing, the usual mode."""
    from vhp_lightning.io.files import atomic_open, write_json, write_text

    path = tmp_path / "new" / "rows.csv"
    write_text(path, "a,b\n1,2\n")  # creates the folder
    assert path.read_text() == "a,b\n1,2\n"
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    for error in (KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(type(error)), atomic_open(path) as f:
            f.write("a,b\n3,")
            raise error
        assert path.read_text() == "a,b\n1,2\n"
        assert sorted(p.name for p in path.parent.iterdir()) == ["rows.csv"]
    write_json(tmp_path / "m.json", {"nll": 88.5, "n": 2})
    assert (tmp_path / "m.json").read_text() == '{\n  "nll": 88.5,\n  "n": 2\n}\n'
    with pytest.raises(ValueError, match="mode 'w' or 'wb', not 'a'"), atomic_open(path, "a"):
        pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("every", [1000, 1])
def test_a_nan_stop_says_truly_what_is_on_disk(run_cli, tmp_path, every) -> None:
    """The NaN stop names the newest checkpoint and its step, or says that none was written."""
    run = tmp_path / "run"
    from tests.conftest import TINY_CLI

    proc = run_cli(
        *[a for a in TINY_CLI if a != "callbacks=none"], "trainer.max_steps=50",
        "optim.optimizer.lr=1e12", "~callbacks.progress_bar", "callbacks.figures=null",
        f"callbacks.model_checkpoint.every_n_train_steps={every}", f"hydra.run.dir={run}",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "non-finite loss inf at global step 1 " in proc.stderr + proc.stdout
    text = proc.stderr + proc.stdout
    if every == 1000:
        assert "No checkpoint was written before it" in text
        assert "the first comes at step 1000" in text
        assert not (run / "checkpoints").exists() or not list((run / "checkpoints").iterdir())
    else:
        last = run / "checkpoints" / "last.ckpt"
        assert f"The last good state is {last} (step 1): resume with ckpt_path={last}" in text


BAD_INPUTS = [
    (["optim.kappa=abc"], "optim.kappa: input should be a valid number"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 trains nothing"),
    (
        ["dataset.n_val=0"],
        "dataset.n_val must be an integer >= 1 or null (the dataset's default), got 0. The "
        "validation split must hold at least one example",
    ),
    (["hydra.run.dir=" + "r" * 300], "has 300 bytes, more than the 255 a file system allows"),
    (["hydra.run.dir=a_file/run"], "a_file is a file, not a folder"),
    (
        ["callbacks.model_checkpoint.every_n_epochs=5"],
        "sets every_n_train_steps and every_n_epochs: Lightning saves on one cadence",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[a[0][:30] for a, _ in BAD_INPUTS])
def test_a_bad_input_is_refused_early_in_one_message(run_cli, tmp_path, args, message) -> None:
    """Refused before torch and Lightning are imported (``-X importtime`` lists every import),
    with the message and no traceback, exit status 1, and no run dir contents."""
    (tmp_path / "a_file").write_text("x")
    env_args = ["-X", "importtime", "-m", "vhp_lightning.train", *args]
    proc = subprocess.run(
        [sys.executable, *env_args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-2000:]
    assert message in out
    assert "Traceback" not in out
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "pytorch_lightning" not in imported
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("config.yaml"))


def test_vhp_eval_help_answers_without_torch(tmp_path) -> None:
    """``vhp-eval --help`` (the entry point is light; the metrics load only for a job)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "vhp_lightning.evaluate", "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "vhp-eval" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "pytorch_lightning" not in imported
