"""Resuming trusts nothing of a checkpoint file but the tensors it needs and the state this project
defines: tampered files (edited with ``torch.save``, as an attacker would) never delete or write
outside the run dir and are refused with a ``CheckpointError`` naming the entry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_resume import RUN  # the same short run of 8-step epochs
from vhp_lightning.io.checkpoint import AtomicCheckpointIO, CheckpointError, load_checkpoint
from vhp_lightning.io.trusted_state import check_optimizer_state, trusted_resume_state
from vhp_lightning.train import train

_CACHE: dict[str, Any] = {}


@pytest.fixture
def trained(compose_cfg, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 6-step run's last.ckpt, loaded once per module (each test edits a copy)."""
    if "ckpt" not in _CACHE:
        run = tmp_path_factory.mktemp("trust") / "run"
        train(compose_cfg(*RUN, "trainer.max_steps=6", run_dir=run))
        _CACHE["ckpt"] = load_checkpoint(run / "checkpoints" / "last.ckpt")
    return _CACHE["ckpt"]


def _tampered(trained: dict[str, Any], tmp_path: Path, edit: Any) -> Path:
    ckpt = torch.load(_save(trained, tmp_path / "orig.ckpt"), weights_only=True)
    edit(ckpt)
    return _save(ckpt, tmp_path / "run" / "checkpoints" / "last.ckpt")


def _save(ckpt: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def _resume(compose_cfg: Any, ckpt: Path, steps: int = 12) -> dict[str, float]:
    run = ckpt.parent.parent
    return train(compose_cfg(*RUN, f"trainer.max_steps={steps}", f"ckpt_path={ckpt}", run_dir=run))


def _model_checkpoint_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    (key,) = [k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint")]
    return ckpt["callbacks"][key]


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_stored_last_model_path_outside_the_run_is_never_deleted(
    compose_cfg, trained, tmp_path, kind
) -> None:
    """The attack of the reliability report: ``last_model_path`` edited to ``local:///<dir>`` (or
    a file elsewhere) and ``dirpath`` removed. Lightning would delete it recursively at the next
    ``last.ckpt`` save; the resume trains on and the victim is untouched."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("precious")
    target = victim if kind == "folder" else victim / "data.txt"

    def edit(ckpt: dict[str, Any]) -> None:
        state = _model_checkpoint_state(ckpt)
        state["last_model_path"] = f"local://{target}" if kind == "folder" else str(target)
        state["best_k_models"] = {str(victim / "data.txt"): torch.tensor(0.0)}
        state["kth_best_model_path"] = str(victim / "data.txt")
        state.pop("dirpath")

    ckpt = _tampered(trained, tmp_path, edit)
    metrics = _resume(compose_cfg, ckpt)
    assert (victim / "data.txt").read_text() == "precious"
    assert load_checkpoint(ckpt)["global_step"] == 12
    assert metrics  # the run finished


def test_checkpoint_io_deletes_only_its_own_ckpt_files(tmp_path, caplog) -> None:
    root = tmp_path / "checkpoints"
    root.mkdir()
    own = root / "step5.ckpt"
    own.write_bytes(b"x")
    outside = tmp_path / "other.ckpt"
    outside.write_bytes(b"x")
    folder = root / "sub.ckpt"
    folder.mkdir()
    not_ckpt = root / "notes.txt"
    not_ckpt.write_text("x")
    io = AtomicCheckpointIO(root=root)
    with caplog.at_level(logging.WARNING):
        for path in (outside, folder, not_ckpt, f"local://{root}", f"file://{own}"):
            io.remove_checkpoint(path)
    assert outside.exists() and folder.is_dir() and not_ckpt.exists() and own.exists()
    assert caplog.text.count("Not deleting") == 5
    io.remove_checkpoint(own)
    assert not own.exists()


def test_unknown_entries_and_model_checkpoint_state_are_dropped(trained, tmp_path) -> None:
    ckpt = torch.load(_save(trained, tmp_path / "a.ckpt"), weights_only=True)
    ckpt["hyper_parameters"] = {"lr": 10.0}
    ckpt["MyDataModule"] = {"path": "/etc"}
    kept = trusted_resume_state(ckpt)
    assert "hyper_parameters" not in kept and "MyDataModule" not in kept
    assert not [k for k in kept["callbacks"] if k.startswith("ModelCheckpoint")]
    assert set(kept["callbacks"]) == {"RNGStateCallback", "LogHistory", "REWO", "RunFigures"}
    assert torch.equal(
        kept["state_dict"]["model.decoder.net.0.weight"],
        trained["state_dict"]["model.decoder.net.0.weight"],
    )


def test_a_resume_logs_what_it_dropped_once(compose_cfg, trained, tmp_path, caplog) -> None:
    """``train`` checks the file before fitting and Lightning then loads it: the dropped entries
    are named in one log line, not one per read."""

    def edit(ckpt: dict[str, Any]) -> None:
        ckpt["hyper_parameters"] = {"lr": 10.0}

    ckpt = _tampered(trained, tmp_path, edit)
    with caplog.at_level(logging.INFO, logger="vhp_lightning.io.trusted_state"):
        _resume(compose_cfg, ckpt, steps=8)
    lines = [r.getMessage() for r in caplog.records if "Not restored from" in r.getMessage()]
    assert len(lines) == 1
    assert 'hyper_parameters, callbacks["ModelCheckpoint{' in lines[0]


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def edit(ckpt: dict[str, Any]) -> None:
        node = ckpt
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


LOOP = ("loops", "fit_loop")
LOADER = (*LOOP, "state_dict", "combined_loader", 0)
SAMPLER = (*LOADER, "_sampler_iter_state", "sampler_iter_state")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("global_step",), -3, "global_step must be an integer >= 0, got -3"),
        (("global_step",), 5, "loops: 6 optimiser steps completed, but global_step is 5"),
        ((*LOOP, "epoch_progress", "total", "ready"), "1", "must be an integer >= 0, got '1'"),
        (("vhp_beta", "beta"), float("nan"), "vhp_beta['beta'] must be a finite number"),
        (("vhp_wall_s",), -1.0, "vhp_wall_s must be a number of seconds in [0, 3.2e8], got -1.0"),
        (("vhp_wall_s",), "1 h", "vhp_wall_s must be a number of seconds in [0, 3.2e8], got '1 h'"),
        (("callbacks", "REWO", "beta"), 5e13, "the REWO state['beta'] must lie in (0, 1e12]"),
        (("callbacks", "REWO", "step"), 2.5, "the REWO state['step'] must be an integer >= 0"),
        (("callbacks", "REWO", "c_hat"), "low", "the REWO state['c_hat'] must be empty or >= 0"),
        (
            ("callbacks", "RNGStateCallback", "torch"),
            torch.zeros(3, dtype=torch.uint8),
            "the RNG state['torch'] must be a torch.uint8 tensor of shape (5056,)",
        ),
        (
            ("callbacks", "RNGStateCallback", "python"),
            (3, (1, 2), None),
            "the RNG state['python'][1] must be a list of 625 entries",
        ),
        (("callbacks", "LogHistory", "csv/metrics.csv"), -1, "rows of csv/metrics.csv must be"),
        ((*LOADER, "_num_yielded"), -5, "the train loader's state['_num_yielded'] must be an"),
        ((*LOADER, "_num_yielded"), 10**9, "the train loader's state _num_yielded = 1000000000"),
        (
            (*SAMPLER, "generator"),
            torch.zeros(7, dtype=torch.uint8),
            "['generator'] must be a torch.uint8 tensor of shape (5056,)",
        ),
        ((*SAMPLER, "yielded"), None, "['yielded'] must be an integer >= 0, got None"),
        ((*LOADER, "_sampler_iter_state"), "x", "['_sampler_iter_state'] must have keys"),
        (("callbacks", "RunFigures", "trace"), [[1, "/etc"]], "state['trace'] must be a list of"),
    ],
    ids=lambda v: None,
)
def test_a_tampered_state_is_refused_naming_the_entry(
    compose_cfg, trained, tmp_path, path, value, message
) -> None:
    ckpt = _tampered(trained, tmp_path, _set(path, value))
    with pytest.raises(CheckpointError) as err:
        _resume(compose_cfg, ckpt)
    assert message in str(err.value)
    assert "start fresh with ckpt_path=null" in str(err.value)


def test_stored_optimiser_hyperparameters_must_match_the_config(trained, tmp_path) -> None:
    """A stored lr would silently replace the configured one (torch takes the group's values)."""
    params = [torch.nn.Parameter(torch.zeros(s.shape)) for s in _shapes(trained)]
    split = len(trained["optimizer_states"][0]["param_groups"][0]["params"])
    opt = torch.optim.Adam([{"params": params[:split]}, {"params": params[split:]}], lr=1e-4)
    check_optimizer_state(trained, opt)  # the run's own state fits
    ckpt = torch.load(_save(trained, tmp_path / "a.ckpt"), weights_only=True)
    ckpt["optimizer_states"][0]["param_groups"][0]["lr"] = 10.0
    with pytest.raises(CheckpointError, match=r"group 0 has other hyperparameters \(lr: "):
        check_optimizer_state(ckpt, opt)
    ckpt = torch.load(_save(trained, tmp_path / "b.ckpt"), weights_only=True)
    ckpt["optimizer_states"][0]["state"][0]["exp_avg"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match=r"optimizer state 0\['exp_avg'\] has shape \(2, 2\)"):
        check_optimizer_state(ckpt, opt)


def _shapes(ckpt: dict[str, Any]) -> list[torch.Tensor]:
    """The parameters in optimiser order: the moment of each index that has one (the prior nets
    have none yet: REWO's initial phase), else a stand-in."""
    groups, state = (
        ckpt["optimizer_states"][0]["param_groups"],
        ckpt["optimizer_states"][0]["state"],
    )
    n = sum(len(g["params"]) for g in groups)
    return [state[i]["exp_avg"] if i in state else torch.zeros(1) for i in range(n)]
