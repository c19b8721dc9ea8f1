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
from vhp_lightning.io.checkpoint import CheckpointError, load_checkpoint
from vhp_lightning.train import (
    LOCK_NAME,
    RunDirError,
    RunDirLockedError,
    resolve_ckpt_path,
    train,
)

# 400 training images in batches of 50: 8 steps per epoch, so N = 6 stops mid-epoch.
RUN = [
    "callbacks=default",
    "~callbacks.progress_bar",
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
            "callbacks.model_checkpoint.every_n_epochs=5",
            run_dir=run,
        )
    )
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3


# --- one process per run dir ----------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from vhp_lightning.train import _run_dir_lock
with _run_dir_lock(Path(sys.argv[1])):
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


def test_a_checkpoint_of_the_old_format_resumes_with_a_warning(compose_cfg, tmp_path, caplog):
    """Optimiser state, weights and step come back exactly; the old loader state, which
    torchdata's loader would refuse with an AssertionError, is dropped with a warning."""
    run = tmp_path / "run"
    train(compose_cfg(*RUN, f"trainer.max_steps={N}", run_dir=run))
    last = run / "checkpoints" / "last.ckpt"
    new = load_checkpoint(last)
    torch.save(_old_format(load_checkpoint(last)), last)
    with caplog.at_level("WARNING"):
        train(compose_cfg(*RUN, f"trainer.max_steps={N + 2}", "resume=true", run_dir=run))
    assert "train-loader state is of the format written before 2026-12-02" in caplog.text
    resumed = load_checkpoint(last)
    assert resumed["global_step"] == N + 2
    (opt,) = resumed["optimizer_states"]
    (before,) = new["optimizer_states"]
    assert [g["params"] for g in opt["param_groups"]] == [
        g["params"] for g in before["param_groups"]
    ]
    # Adam's step count continued from the merged state: N steps before, 2 after.
    assert int(opt["state"][0]["step"]) == int(before["state"][0]["step"]) + 2
