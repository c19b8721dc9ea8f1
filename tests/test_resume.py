"""Nothing lost, nothing let in, on resume: the same batches and one metrics.csv across resumes,
the newest state resumed, used run dirs and changed hyper-parameters refused, one process per run
dir, and unwritable dirs refused before the first step."""

from __future__ import annotations

import csv
import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from vhp_lightning.datamodules.resumable import resumable_train_loader
from vhp_lightning.datamodules.splits import SplitDataModule
from vhp_lightning.io.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint
from vhp_lightning.runs.resume import resolve_ckpt_path
from vhp_lightning.runs.rundir import LOCK_NAME, RunDirError, RunDirLockedError
from vhp_lightning.train import train

# 400 training images in batches of 50: 8 steps per epoch, so N = 6 stops mid-epoch.
RUN = [
    "callbacks=default",
    "~callbacks.progress_bar",
    "callbacks.model_checkpoint.every_n_train_steps=null",
    "callbacks.model_checkpoint.every_n_epochs=1",
    "trainer.log_every_n_steps=1",
    "test=false",
    "optim.kappa=0.3",
]
N = 6


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _column(rows: list[dict[str, str]], key: str) -> list[tuple[int, str]]:
    return [(int(r["step"]), r[key]) for r in rows if r.get(key)]


@pytest.mark.parametrize("N", [N, 8], ids=["mid-epoch", "end-of-epoch"])
def test_resume_appends_every_step_once_to_one_metrics_csv(compose_cfg, tmp_path, N) -> None:
    """N steps, resume=true to 2N in the same run dir: rewo/beta and rewo/c_hat at every step
    0..2N-1 exactly once, equal to a run of 2N steps straight (the same batches, also in the
    epoch after the resumed one); one last.ckpt."""
    run, straight = tmp_path / "run", tmp_path / "straight"
    train(compose_cfg(*RUN, f"trainer.max_steps={N}", run_dir=run))
    assert [s for s, _ in _column(_rows(run), "rewo/beta")] == list(range(N))
    train(compose_cfg(*RUN, f"trainer.max_steps={2 * N}", "resume=true", run_dir=run))
    train(compose_cfg(*RUN, f"trainer.max_steps={2 * N}", run_dir=straight))
    rows = _rows(run)
    for key in ("rewo/beta", "rewo/c_hat"):
        assert [s for s, _ in _column(rows, key)] == list(range(2 * N)), key
        assert _column(rows, key) == _column(_rows(straight), key), key
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    resumed = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 2 * N
    weights = load_checkpoint(straight / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(v, weights[k]) for k, v in resumed["state_dict"].items())


class _Numbers(SplitDataModule):
    """The numbers 0..39 in batches of 4 (test helper)."""

    def __init__(self, trainer: object = None) -> None:
        super().__init__()
        self.batch_size = self.eval_batch_size = 4
        self.num_workers = 0
        self.splits = {"train": TensorDataset(torch.arange(40))}
        self.trainer = trainer


def _epochs(dl, first: int, last: int, stop: int | None = None, resume: tuple = (None, 0)):
    """``(batches, dl.state_dict())`` after epochs first..last drawn as Lightning draws them:
    ``set_epoch`` on the sampler, then ``iter()``, then ``len(dl)`` batches (``stop`` in the last
    epoch). ``resume = (state, done)``: epoch ``first`` resumes from ``state``, taken after its
    first ``done`` batches; ``load_state_dict`` and ``iter()`` come before ``set_epoch`` then
    (Lightning's ``setup_data``)."""
    (state, done), it = resume, None
    if state is not None:
        dl.load_state_dict(state)
        it = iter(dl)
    out = []
    for epoch in range(first, last + 1):
        if hasattr(dl.sampler, "set_epoch"):
            dl.sampler.set_epoch(epoch)
        it = iter(dl) if it is None else it
        n = len(dl) - (done if epoch == first else 0)
        out += [b[0].tolist() for b in itertools.islice(it, stop if epoch == last and stop else n)]
        it = None
    return out, dl.state_dict()


@pytest.mark.parametrize("world", [None, (2, 0), (2, 1)], ids=["1 process", "rank 0", "rank 1"])
def test_train_loader_resumes_in_the_interrupted_epochs_order(world) -> None:
    """The training loader stopped in epoch 1 and rebuilt from its state gives the batches of the
    uninterrupted one, in epoch 1 and after; shuffled from the run's seed (under DDP: Lightning's
    DistributedSampler order, seed + epoch)."""
    trainer = world and SimpleNamespace(
        distributed_sampler_kwargs={"num_replicas": world[0], "rank": world[1]}
    )

    def loader(seed: int = 3):
        dm = _Numbers(trainer)
        resumable_train_loader(dm, seed=seed)
        return dm.train_dataloader()

    straight, _ = _epochs(loader(), 0, 2)
    first, state = _epochs(loader(), 0, 1, stop=3)
    rest, _ = _epochs(loader(), 1, 2, resume=(state, 3))
    assert first + rest == straight
    n = len(straight) // 3
    epochs = [sum(straight[e * n : (e + 1) * n], []) for e in range(3)]
    assert all(e != sorted(e) for e in epochs) and epochs[0] != epochs[1]  # shuffled anew
    assert _epochs(loader(seed=4), 0, 2)[0] != straight
    for epoch, order in enumerate(epochs if world else ()):
        lightning = DistributedSampler(range(40), *world, shuffle=True, seed=3)
        lightning.set_epoch(epoch)
        assert order == list(lightning)


def test_rows_logged_after_the_checkpoint_are_replaced_not_repeated(compose_cfg, tmp_path):
    """A run that logged past its last checkpoint before it died: the resumed run replays those
    steps, and the CSV keeps them once (the history as of the checkpoint, then the replay)."""
    run = tmp_path / "run"
    train(compose_cfg(*RUN, f"trainer.max_steps={N}", run_dir=run))
    rows = _rows(run)
    with open(run / "csv" / "metrics.csv", "a", newline="") as f:  # steps N, N+1 after the ckpt
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        for step in (N, N + 1):
            writer.writerow({**rows[-1], "step": step, "rewo/beta": "0.5"})
    train(compose_cfg(*RUN, f"trainer.max_steps={N + 3}", "resume=true", run_dir=run))
    beta = _column(_rows(run), "rewo/beta")
    assert [s for s, _ in beta] == list(range(N + 3))
    assert "0.5" not in [b for _, b in beta]


def test_fresh_run_into_a_used_run_dir_is_refused(compose_cfg, tmp_path) -> None:
    run = tmp_path / "run"
    train(compose_cfg(*RUN, "trainer.max_steps=2", run_dir=run))
    kept = (run / "csv" / "metrics.csv", run / "checkpoints" / "last.ckpt")
    before = {p: p.read_bytes() for p in kept}
    other = tmp_path / "other"
    train(compose_cfg(*RUN, "trainer.max_steps=2", run_dir=other))
    for overrides, what in (
        ([], "a fresh run"),
        ([f"ckpt_path={other / 'checkpoints' / 'last.ckpt'}"], "resuming from"),
    ):
        with pytest.raises(RunDirError) as err:
            train(compose_cfg(*RUN, "trainer.max_steps=4", *overrides, run_dir=run))
        assert str(err.value).startswith(
            f"{run / 'checkpoints'} already holds checkpoints (last.ckpt); refusing {what}"
        )
        assert "resume=true (same hydra.run.dir)" in str(err.value)
        assert "hydra.run.dir=outputs/<new dir>" in str(err.value)
    assert {p: p.read_bytes() for p in before} == before  # log and checkpoint untouched
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]


def test_resume_true_takes_the_newest_last_checkpoint(compose_cfg, tmp_path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name, age in (("last.ckpt", 100), ("last-v1.ckpt", 10), ("step4.ckpt", 0)):
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (time.time() - age, time.time() - age))
    assert resolve_ckpt_path(compose_cfg("resume=true")) == str(folder / "last-v1.ckpt")
    assert resolve_ckpt_path(compose_cfg("ckpt_path=last")) == str(folder / "last-v1.ckpt")


@pytest.mark.parametrize(
    "overrides,listed",
    [
        (["optim.optimizer.lr=0.01"], "optim.optimizer.lr: checkpoint 0.0001, now 0.01"),
        (
            ["optim=geco"],
            "optim.scheme._target_: checkpoint 'vhp_lightning.callbacks.rewo.REWO', "
            "now 'vhp_lightning.callbacks.geco.GECO'",
        ),
        (["seed=1"], "seed: checkpoint 0, now 1"),
    ],
    ids=["lr", "scheme", "seed"],
)
def test_resume_with_changed_hyperparameters_is_refused(
    compose_cfg, tmp_path, overrides, listed
) -> None:
    run = tmp_path / "run"
    train(compose_cfg(*RUN, "trainer.max_steps=2", run_dir=run))
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes(), (run / "csv" / "metrics.csv").read_bytes()
    cfg = compose_cfg(*RUN, "trainer.max_steps=4", "resume=true", *overrides, run_dir=run)
    with pytest.raises(CheckpointError) as err:
        train(cfg)
    text = str(err.value)
    assert text.startswith(f"{last} was trained with another model/config; refusing to resume.")
    assert f"Differences (checkpoint vs this run): {listed}" in text
    assert "ckpt_path=null" in text and "RESUME_MAY_CHANGE" in text
    assert (last.read_bytes(), (run / "csv" / "metrics.csv").read_bytes()) == before


def test_resume_may_change_run_length_and_outputs(compose_cfg, tmp_path) -> None:
    run = tmp_path / "run"
    train(compose_cfg(*RUN, "trainer.max_steps=2", run_dir=run))
    train(
        compose_cfg(
            *RUN,
            "trainer.max_steps=3",
            "resume=true",
            "logger=many",
            "nll_samples=3",
            "trainer.log_every_n_steps=2",
            "callbacks.model_checkpoint.every_n_train_steps=null",
            "callbacks.model_checkpoint.every_n_epochs=5",
            run_dir=run,
        )
    )
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3


def test_a_resumed_run_counts_its_earlier_sessions_in_run_wall_s(compose_cfg, tmp_path) -> None:
    """Each checkpoint stores the run's wall time so far (``vhp_wall_s``); a resumed run adds
    this session's to it, and the end-of-run test logs the sum as ``run/wall_s`` (what
    ``report table2`` takes as a row's wall time)."""
    run = tmp_path / "run"
    train(compose_cfg(*RUN, "trainer.max_steps=2", run_dir=run))
    path = run / "checkpoints" / "last.ckpt"
    stored = load_checkpoint(path)
    assert 0 < stored["vhp_wall_s"] < 600
    stored["vhp_wall_s"] = 3600.0  # as if the first session had trained for an hour
    torch.save(stored, path)
    with_test = [o for o in RUN if o != "test=false"]
    metrics = train(
        compose_cfg(*with_test, "trainer.max_steps=4", "resume=true", "nll_samples=2", run_dir=run)
    )
    assert 3600 < metrics["run/wall_s"] < 3600 + 600
    assert 3600 < float(_column(_rows(run), "run/wall_s")[-1][1]) < 3600 + 600
    assert 3600 < load_checkpoint(path)["vhp_wall_s"] <= metrics["run/wall_s"]


# --- one process per run dir ----------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from vhp_lightning.runs.rundir import run_dir_lock
with run_dir_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_process_in_a_run_dir_is_refused(compose_cfg, tmp_path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLockedError) as err:
            train(compose_cfg(*RUN, "trainer.max_steps=2", run_dir=run))
        assert str(err.value).startswith(
            f"run dir {run} is in use: pid {holder.pid} on "
        ) and "hydra.run.dir=" in str(err.value)
        assert not (run / "checkpoints").exists() and not (run / "csv").exists()
    finally:
        holder.kill()
        holder.wait()
    train(compose_cfg(*RUN, "trainer.max_steps=2", run_dir=run))  # its lock died with it
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / LOCK_NAME).exists()


def test_stale_lock_is_taken_over_and_lock_released_on_errors(compose_cfg, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("pid 999999999 on a-host-long-gone\n")  # left by a dead process
    with pytest.raises(CheckpointError, match="ckpt_path=last: this run dir has no checkpoint"):
        train(compose_cfg(*RUN, "ckpt_path=last", run_dir=run))  # fails while holding the lock
    assert not (run / LOCK_NAME).exists()  # released on the exception
    train(compose_cfg(*RUN, "trainer.max_steps=2", run_dir=run))
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / LOCK_NAME).exists()


# --- unwritable dirs ------------------------------------------------------------------------------
def test_checkpoint_dir_that_cannot_be_written_fails_before_training(compose_cfg, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    run, ckpts = tmp_path / "run", blocker / "checkpoints"
    cfg = compose_cfg(*RUN, f"callbacks.model_checkpoint.dirpath={ckpts}", run_dir=run)
    with pytest.raises(RunDirError) as err:
        train(cfg)
    assert str(err.value).startswith(f"cannot write to {ckpts} (NotADirectoryError: ")
    assert "nothing was trained" in str(err.value)
    assert not (run / "csv").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_dir_fails_before_training(compose_cfg, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        with pytest.raises(RunDirError, match=f"cannot write to {run} .*PermissionError"):
            train(compose_cfg(*RUN, run_dir=run))
    finally:
        run.chmod(0o755)
    assert list(run.iterdir()) == []
    shutil.rmtree(run)


def _old_format(ckpt: dict) -> dict:
    """``ckpt`` as vhp-lightning wrote it before 2026-12-02: two optimisers (theta/phi and
    Theta/Phi) and its own train loader's state (epoch-start and current generator, yielded)."""
    (state,) = ckpt["optimizer_states"]
    vae, prior = state["param_groups"]
    n = len(vae["params"])
    ckpt["optimizer_states"] = [
        {"state": {i: s for i, s in state["state"].items() if i < n}, "param_groups": [vae]},
        {
            "state": {i - n: s for i, s in state["state"].items() if i >= n},
            "param_groups": [{**prior, "params": [i - n for i in prior["params"]]}],
        },
    ]
    gen = torch.Generator().get_state()
    loop = ckpt["loops"]["fit_loop"]["state_dict"]
    loop["combined_loader"] = [{"epoch_start": gen, "now": gen, "yielded": 3}]
    return ckpt


@pytest.mark.parametrize("version", ["before", 1, 3])
def test_a_checkpoint_of_another_format_is_refused_before_training(
    compose_cfg, tmp_path, version
) -> None:
    """A resume reads only this version's layout (``vhp_format``): an older one (two optimisers,
    the old loader state) or a newer one is refused, naming the format; the run dir is left as
    it was, and the weights still load for evaluation."""
    from vhp_lightning.api import load

    run = tmp_path / "run"
    train(compose_cfg(*RUN, f"trainer.max_steps={N}", run_dir=run))
    last = run / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(last)
    assert ckpt["vhp_format"] == CHECKPOINT_FORMAT == 2
    if version == "before":
        ckpt = _old_format(ckpt)
        del ckpt["vhp_format"]
    else:
        ckpt["vhp_format"] = version
    torch.save(ckpt, last)
    before = last.read_bytes()
    want = "written before 2026-12-02" if version == "before" else f"vhp_format {version}"
    with pytest.raises(CheckpointError, match=f"another format \\({want}.*resumes only format 2"):
        train(compose_cfg(*RUN, f"trainer.max_steps={N + 2}", "resume=true", run_dir=run))
    assert last.read_bytes() == before
    assert load(last).model is not None


def test_a_killed_run_resumes_from_its_step_checkpoint_and_loses_no_row(tmp_path) -> None:
    """``kill -9`` of a real training process (an OOM kill, a lost node): the step-cadence
    checkpoint is on disk; ``resume=true`` continues from it, keeps the rows up to it and moves
    the rows written after it to ``metrics.superseded-*.csv`` (nothing deleted)."""
    from tests.conftest import TINY_CLI

    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "vhp_lightning.train", *TINY_CLI, "trainer.max_steps=100000",
        "callbacks=default", "~callbacks.progress_bar", "callbacks.figures=null",
        "callbacks.model_checkpoint.every_n_train_steps=20", "trainer.log_every_n_steps=1",
        "test=false", f"hydra.run.dir={run}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (
            last.is_file() and load_checkpoint(last)["global_step"] >= 40
        ):
            time.sleep(0.5)
        time.sleep(1.0)  # a few steps past the checkpoint
    finally:
        proc.kill()  # SIGKILL: no handler runs
        proc.wait()
    step = load_checkpoint(last)["global_step"]
    assert step >= 40 and step % 20 == 0
    rows_before = _rows(run)
    steps_before = {int(r["step"]) for r in rows_before if r.get("rewo/beta")}
    assert steps_before and max(steps_before) >= step - 1
    env_args = [a for a in cmd[3:] if not a.startswith("trainer.max_steps")]
    resumed = subprocess.run(
        [*cmd[:3], *env_args, f"trainer.max_steps={step + 10}", "resume=true"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    beta_steps = [int(r["step"]) for r in _rows(run) if r.get("rewo/beta")]
    assert beta_steps == list(range(step + 10))  # each step once
    aside = list((run / "csv").glob("metrics.superseded-*.csv"))
    if max(steps_before) >= step:  # rows past the checkpoint were written before the kill
        assert len(aside) == 1
        with open(aside[0], newline="") as f:
            moved = {int(r["step"]) for r in csv.DictReader(f) if r.get("rewo/beta")}
        assert moved == {s for s in steps_before if s >= step}


def test_resume_true_without_a_checkpoint_keeps_the_old_history(compose_cfg, tmp_path) -> None:
    """The re-queue command (``resume=true``) in a run dir whose run died before its first
    checkpoint starts fresh and moves the old metrics.csv aside instead of cutting it."""
    run = tmp_path / "run"
    train(compose_cfg(*RUN, f"trainer.max_steps={N}", run_dir=run))
    old = (run / "csv" / "metrics.csv").read_text()
    shutil.rmtree(run / "checkpoints")
    train(compose_cfg(*RUN, f"trainer.max_steps={N}", "resume=true", run_dir=run))
    (aside,) = (run / "csv").glob("metrics.superseded-*.csv")
    assert aside.read_text() == old
    assert [int(r["step"]) for r in _rows(run) if r.get("rewo/beta")] == list(range(N))


def test_a_moved_run_dir_resumes_with_its_history(compose_cfg, tmp_path) -> None:
    """``mv``/``cp -r`` of a run dir, then resume: the rows before the checkpoint stay (the stored
    row count names the file by its place in the run dir, not by its absolute path)."""
    first, moved = tmp_path / "first", tmp_path / "elsewhere" / "moved"
    train(compose_cfg(*RUN, f"trainer.max_steps={N}", run_dir=first))
    moved.parent.mkdir()
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    train(compose_cfg(*RUN, f"trainer.max_steps={2 * N}", "resume=true", run_dir=moved))
    assert [int(r["step"]) for r in _rows(moved) if r.get("rewo/beta")] == list(range(2 * N))


def _snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run dir but its lock, with its bytes."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def test_a_refused_command_changes_nothing_in_the_run_dir(run_cli, tmp_path) -> None:
    """The real command line (Hydra writes its record before the job starts): a refused fresh
    run into a used run dir, a refused resume with another config (`+table1=geco` into a REWO
    run, another lr) and a refused second process leave .hydra/, train.log, metrics.csv and the
    checkpoint byte for byte as they were."""
    run = tmp_path / "run"
    base = ["callbacks=default", "~callbacks.progress_bar", "callbacks.figures=null",
            "test=false", f"hydra.run.dir={run}"]  # fmt: skip
    from tests.conftest import TINY_CLI

    tiny = [a for a in TINY_CLI if a != "callbacks=none"]
    first = run_cli(*tiny, *base, "+table1=rewo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _snapshot(run)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", "train.log"} <= set(before)
    refused = [
        run_cli(*tiny, *base, "+table1=rewo", cwd=tmp_path),  # fresh run into a used run dir
        run_cli(*tiny, *base, "+table1=geco", "resume=true", cwd=tmp_path),
        run_cli(*tiny, *base, "optim.optimizer.lr=0.01", "resume=true", cwd=tmp_path),
    ]
    assert [p.returncode for p in refused] == [1, 1, 1]
    assert "already holds checkpoints" in refused[0].stdout + refused[0].stderr
    assert "refusing to resume" in refused[1].stdout + refused[1].stderr
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        locked = run_cli(*tiny, *base, "+table1=rewo", "resume=true", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert locked.returncode == 1 and "is in use" in locked.stdout + locked.stderr
    assert _snapshot(run) == before


def test_extending_a_finished_run_equals_a_straight_run_with_validation(
    compose_cfg, tmp_path
) -> None:
    """A run that ended mid-epoch at max_steps = 20 (8 steps per epoch), extended to 36 with
    validation after every epoch and every 3rd: the same validation steps, epochs and weights as
    a straight 36-step run (Lightning counts the cut epoch as completed; the resume continues it).
    """
    for every in (1, 3):
        run, straight = tmp_path / f"run{every}", tmp_path / f"straight{every}"
        args = [*RUN, f"trainer.check_val_every_n_epoch={every}"]
        train(compose_cfg(*args, "trainer.max_steps=20", run_dir=run))
        train(compose_cfg(*args, "trainer.max_steps=36", "resume=true", run_dir=run))
        train(compose_cfg(*args, "trainer.max_steps=36", run_dir=straight))
        val = [(r["step"], r["epoch"], r["val/loss"]) for r in _rows(run) if r.get("val/loss")]
        want = [
            (r["step"], r["epoch"], r["val/loss"]) for r in _rows(straight) if r.get("val/loss")
        ]
        assert val == want and len(want) >= 36 // (8 * every)
        a = load_checkpoint(run / "checkpoints" / "last.ckpt")
        b = load_checkpoint(straight / "checkpoints" / "last.ckpt")
        assert a["epoch"] == b["epoch"]
        assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())


def test_a_resume_that_changes_the_numbers_is_announced(compose_cfg, tmp_path, caplog) -> None:
    run = tmp_path / "run"
    train(compose_cfg(*RUN, f"trainer.max_steps={N}", run_dir=run))
    with caplog.at_level("WARNING"):
        train(compose_cfg(*RUN, "trainer.max_steps=8", "num_threads=2", "resume=true", run_dir=run))
    assert "Resuming with num_threads: checkpoint 1, now 2: allowed, but" in caplog.text
