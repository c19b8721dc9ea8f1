"""The image-grid callback: files at the configured steps, logged figures, RNG untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vhp_lightning.callbacks.image_grids as image_grids
import vhp_lightning.train as train_module
from vhp_lightning.analysis.figures import plot_image_grid
from vhp_lightning.callbacks.image_grids import ImageGrids, _interleave_rows
from vhp_lightning.train import train

GRIDS = ["callbacks=image_grids", "~callbacks.progress_bar"]


def test_grids_every_n_steps_and_at_fit_end(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    logged = []
    monkeypatch.setattr(image_grids, "log_image", lambda tr, key, path: logged.append(key))
    cfg = compose_cfg(
        *GRIDS,
        "callbacks.image_grids.every_n_steps=10",
        "callbacks.image_grids.n_images=6",
        "callbacks.image_grids.nrow=4",
        "test=false",
    )
    train(cfg)
    names = {p.name for p in (tmp_path / "images").iterdir()}
    assert names == {f"{k}_step{s}.png" for k in ("reconstructions", "samples") for s in (10, 20)}
    # step 20 is drawn twice (every_n_steps and fit end): same files, four log calls in all.
    assert logged.count("images/reconstructions") == 3 and logged.count("images/samples") == 3


def test_grids_leave_the_training_rng_stream_untouched(compose_cfg, tmp_path: Path) -> None:
    base = [*GRIDS, "trainer.max_steps=8", "test=false", "callbacks.image_grids.at_fit_end=false"]
    plain = train(
        compose_cfg(*base, "callbacks.image_grids.every_n_steps=0", run_dir=tmp_path / "a")
    )
    with_grids = train(
        compose_cfg(*base, "callbacks.image_grids.every_n_steps=3", run_dir=tmp_path / "b")
    )
    assert len(list((tmp_path / "b" / "images").glob("*.png"))) == 4  # steps 3 and 6
    assert plain["train/loss"] == with_grids["train/loss"]
    assert plain["val/loss"] == with_grids["val/loss"]


def test_non_image_data_is_skipped_with_a_warning() -> None:
    class DM:
        data_shape = (50,)

    class Trainer:
        datamodule = DM()
        global_step = 0

    cb = ImageGrids("unused")
    with pytest.warns(UserWarning, match="needs image data"):
        cb.draw(Trainer(), None)
    cb.draw(Trainer(), None)  # warned once, then silent


def test_the_default_callbacks_skip_non_image_data_silently(recwarn) -> None:
    class DM:
        data_shape = (50,)  # e.g. CMU's joint angles

    class Trainer:
        datamodule = DM()
        global_step = 0

    cb = ImageGrids("unused", every_n_steps=0, require_images=False)
    cb.draw(Trainer(), None)
    assert not [w for w in recwarn if "image data" in str(w.message)]
    assert cb.figure_paths == []


def test_the_last_grids_are_listed_for_the_summary(
    compose_cfg, tmp_path: Path, monkeypatch
) -> None:
    seen: list = []
    report = train_module.report
    monkeypatch.setattr(
        train_module, "report", lambda tr, sc, m: (seen.extend(tr.callbacks), report(tr, sc, m))
    )
    train(compose_cfg(*GRIDS, "callbacks.image_grids.every_n_steps=10", "test=false"))
    grids = [cb for cb in seen if isinstance(cb, ImageGrids)]
    assert len(grids) == 1  # callbacks=image_grids replaces the default's end-of-run grids
    assert grids[0].figure_paths == [
        tmp_path / "images" / "reconstructions_step20.png",
        tmp_path / "images" / "samples_step20.png",
    ]
    assert all(p.is_file() for p in grids[0].figure_paths)


def test_rows_interleave_data_and_reconstructions() -> None:
    x, r = torch.zeros(5, 1, 2, 2), torch.ones(5, 1, 2, 2)
    rows = _interleave_rows(x, r, nrow=3)
    assert rows.shape == (12, 1, 2, 2)  # 2 pairs of rows of 3 (the last padded)
    assert rows[:3].sum() == 0 and rows[3:6].min() == 1 and rows[9:11].min() == 1
    assert rows[11].sum() == 0  # padding
    fig = plot_image_grid(rows, nrow=3, title="t")
    assert fig.axes[0].get_title() == "t"


def test_bad_settings_are_explained() -> None:
    with pytest.raises(ValueError, match="split must be"):
        ImageGrids("d", split="train")
    with pytest.raises(ValueError, match="every_n_steps must be an integer >= 0"):
        ImageGrids("d", every_n_steps=-1)
