"""Table 2 image by image: the per-image log p(x) files of ``test/nll`` and of ``evaluate``, and
the report's paired comparison against VHP + REWO (``reports/table2.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra import compose
from omegaconf import open_dict
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from tests.test_api import write_checkpoint
from vhp_lightning.analysis.nll import (
    PER_IMAGE_FILE,
    loader_indices,
    read_per_image,
    write_per_image,
)
from vhp_lightning.evaluate import evaluate
from vhp_lightning.io.instantiate import instantiate
from vhp_lightning.module import VHPModule
from vhp_lightning.report import main as report_main
from vhp_lightning.reports import read_csv
from vhp_lightning.reports.table2 import (
    KEY,
    Z95,
    current_rows,
    pair_by_index,
    paired_difference,
    paired_points,
    row_id,
    seed_interval,
    table,
)
from vhp_lightning.train import train


# --- the paired statistic ---------------------------------------------------------------------
def test_paired_difference_of_a_shift_plus_noise_has_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(90.0, 10.0, size=2000)  # the per-image spread, common to both runs
    noise = rng.normal(0.0, 0.01, size=2000)
    d = paired_difference(a, a + 0.5 + noise)
    se = float(np.std(noise, ddof=1)) / math.sqrt(2000)  # the spread of d alone, not of a
    assert d["n"] == 2000
    assert d["mean"] == pytest.approx(0.5 + noise.mean(), abs=1e-12)
    assert d["mean"] == pytest.approx(0.5, abs=1e-3)
    assert d["se"] == pytest.approx(se, rel=1e-9) and se < 3e-4
    assert (d["low"], d["high"]) == pytest.approx((d["mean"] - Z95 * se, d["mean"] + Z95 * se))
    assert d["resolved"] is True
    assert paired_difference(a + 0.5 + noise, a)["mean"] == pytest.approx(-d["mean"])


def test_identical_values_differ_by_zero_plus_minus_zero_unresolved() -> None:
    a = np.linspace(-120.0, -80.0, 50)
    d = paired_difference(a, a.copy())
    assert (d["mean"], d["se"], d["low"], d["high"]) == (0.0, 0.0, 0.0, 0.0)
    assert d["resolved"] is False and d["n"] == 50


def test_pairing_uses_the_images_both_runs_scored_only() -> None:
    index_a, a = np.arange(10), np.arange(10, dtype=float)  # images 0..9
    index_b = np.array([14, 5, 12, 6, 13, 7, 11, 8, 10, 9])  # images 5..14, unsorted
    b = index_b.astype(float) + 100.0
    index, pa, pb = pair_by_index(index_a, a, index_b, b)
    assert index.tolist() == [5, 6, 7, 8, 9]
    assert pa.tolist() == [5.0, 6.0, 7.0, 8.0, 9.0] and (pb - pa).tolist() == [100.0] * 5
    with pytest.raises(ValueError, match="no image in common"):
        pair_by_index(np.arange(3), np.zeros(3), np.arange(3, 6), np.zeros(3))
    with pytest.raises(ValueError, match="N >= 2"):
        paired_difference(np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(np.zeros(3), np.zeros(4))


# --- the per-image file -----------------------------------------------------------------------
def test_per_image_file_round_trips_float64_exactly_sorted_by_index(tmp_path: Path) -> None:
    values = torch.tensor([-88.123456789012345, -1e-300, -101.0 / 3.0], dtype=torch.float64)
    path = tmp_path / PER_IMAGE_FILE
    write_per_image(path, torch.tensor([7, 0, 3]), values)
    index, log_px = read_per_image(path)
    assert index.tolist() == [0, 3, 7] and index.dtype == np.int64
    assert log_px.tolist() == [values[1].item(), values[2].item(), values[0].item()]  # bit-exact
    assert path.read_text().splitlines()[0] == "index,log_px"
    with pytest.raises(ValueError, match="distinct"):
        write_per_image(tmp_path / "bad.csv", [1, 1], [0.0, 0.0])
    (tmp_path / "other.csv").write_text("i,v\n0,1.0\n")
    with pytest.raises(ValueError, match="header should be index,log_px"):
        read_per_image(tmp_path / "other.csv")


def test_loader_indices_sequential_ddp_shard_and_shuffled() -> None:
    data = TensorDataset(torch.zeros(5, 1))
    assert [b.tolist() for b in loader_indices(DataLoader(data, batch_size=2))] == [
        [0, 1],
        [2, 3],
        [4],
    ]
    # rank 1 of 2 reads positions 1, 3, 5 of the split padded to 6: position 5 is a copy of image
    # 0, which rank 0 scores; it is marked -1
    shard = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)
    assert [b.tolist() for b in loader_indices(DataLoader(data, 2, sampler=shard))] == [
        [1, 3],
        [-1],
    ]
    rank0 = DistributedSampler(data, num_replicas=2, rank=0, shuffle=False)
    assert [b.tolist() for b in loader_indices(DataLoader(data, 2, sampler=rank0))] == [
        [0, 2],
        [4],
    ]
    assert loader_indices(DataLoader(data, batch_size=2, shuffle=True)) is None
    assert loader_indices(DataLoader(data, 2, sampler=DistributedSampler(data, 2, 0))) is None


def test_end_of_run_test_nll_writes_one_row_per_scored_image(compose_cfg, tmp_path: Path) -> None:
    # 30 of the 100 test images in batches of 20: a whole batch, then 10 of the next
    cfg = compose_cfg("test_nll_images=30", "nll_samples=8", "dataset.eval_batch_size=20")
    metrics = train(cfg)
    index, log_px = read_per_image(tmp_path / PER_IMAGE_FILE)
    assert index.tolist() == list(range(30)) and metrics["test/nll_images"] == 30
    assert -log_px.mean() == pytest.approx(metrics["test/nll"], abs=1e-6)
    assert log_px.std(ddof=1) / math.sqrt(30) == pytest.approx(metrics["test/nll_se"], abs=1e-6)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)
def test_test_nll_under_ddp_records_each_image_once(compose_cfg, tmp_path: Path) -> None:
    # 2 ranks, 45 test images: rank 1's last position is DistributedSampler's padding copy of
    # image 0, scored by rank 0 only; the file has the true indices gathered from both ranks.
    # trainer.test alone (the untrained model): what is tested is the split and the gather.
    cfg = compose_cfg("dataset.n_test=45", "dataset.eval_batch_size=10")
    torch.manual_seed(0)
    module = VHPModule(
        instantiate(cfg.model), optimizer=instantiate(cfg.optim.optimizer), nll_samples=4
    )
    assert module.nll_per_image_path == tmp_path / PER_IMAGE_FILE  # the Hydra run dir
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_fork", logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    (metrics,) = trainer.test(module, datamodule=instantiate(cfg.dataset), verbose=False)
    index, log_px = read_per_image(tmp_path / PER_IMAGE_FILE)
    assert index.tolist() == list(range(45)) and metrics["test/nll_images"] == 45
    assert -log_px.mean() == pytest.approx(metrics["test/nll"], abs=1e-6)


def test_evaluate_nll_writes_the_per_image_file(compose_cfg, tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    write_checkpoint(compose_cfg(), ckpt)
    cfg = compose("eval", overrides=[f"ckpt_path={ckpt}", "limit=12", "n_samples=8",
                                     "batch_size=5"])  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    nll = evaluate(cfg, tmp_path / "eval")["metrics"]["nll"]
    index, log_px = read_per_image(tmp_path / "eval" / PER_IMAGE_FILE)
    assert nll["per_image"] == str(tmp_path / "eval" / PER_IMAGE_FILE)
    assert index.tolist() == list(range(12))
    assert -log_px.mean() == pytest.approx(nll["nll"], abs=1e-6)


# --- the report -------------------------------------------------------------------------------
MODELS = {  # +table2=<row> -> (model, scheme) _target_s
    "vhp_rewo": ("vhp_lightning.models.vhp.VHP", "vhp_lightning.callbacks.rewo.REWO"),
    "iwae": ("vhp_lightning.models.iwae.IWAE", "vhp_lightning.callbacks.schedules.ConstantBeta"),
    "vampprior": ("vhp_lightning.models.vampprior.VampPrior",
                  "vhp_lightning.callbacks.schedules.WarmUp"),
}  # fmt: skip


def _fake_run(
    job: Path,
    row: str,
    seed: int,
    log_px: np.ndarray,
    nll: float | None = None,
    val_loss: float = 95.5,
    wall_s: float | None = None,
) -> None:
    """A finished ``experiment=table2 +table2=<row>`` run dir on dynamic MNIST with its
    per-image file; ``nll`` (default: -mean(log_px)) is what its CSV log says, ``val_loss`` its
    one validation point (step 7), ``wall_s`` its ``run/wall_s`` (None: not logged, as before
    2026-12-07)."""
    model, scheme = MODELS[row]
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\nnll_samples: 5000\n"
        f"model: {{_target_: {model}, encoder: {{_target_: vhp_lightning.nets.mlp.GaussianMLP}}}}\n"
        f"optim: {{scheme: {{_target_: {scheme}}}}}\n"
        "dataset: {_target_: vhp_lightning.datamodules.mnist.MNISTDataModule}\n"
    )
    (job / ".hydra" / "overrides.yaml").write_text(f"- experiment=table2\n- +table2={row}\n")
    nll = -float(np.mean(log_px)) if nll is None else nll
    se = float(np.std(log_px, ddof=1)) / math.sqrt(len(log_px))
    (job / "csv").mkdir()
    wall = ("", "") if wall_s is None else (",run/wall_s", f",{wall_s!r}")
    (job / "csv" / "metrics.csv").write_text(
        f"epoch,step,val/loss,test/nll,test/nll_se,test/nll_images{wall[0]}\n"
        f"0,3,,,,{',' * bool(wall[0])}\n1,7,{val_loss},,,{',' * bool(wall[0])}\n"
        f"1,8,,{nll!r},{se!r},{float(len(log_px))}{wall[1]}\n"
    )
    write_per_image(job / PER_IMAGE_FILE, np.arange(len(log_px)), log_px)


def test_report_pairs_each_row_with_vhp_rewo_and_keeps_the_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    runs, n = tmp_path / "sweep", 200
    ref, expected = {}, {}
    for seed in (0, 1):
        ref[seed] = -(90.0 + rng.normal(0.0, 5.0, n))  # log p(x) of VHP + REWO per image
        worse = ref[seed] - 0.7 - rng.normal(0.0, 0.1, n)  # IWAE: 0.7 nats worse on each image
        _fake_run(runs / f"rewo{seed}", "vhp_rewo", seed, ref[seed])
        _fake_run(runs / f"iwae{seed}", "iwae", seed, worse)
        expected[seed] = paired_difference(-ref[seed], -worse)
    # a run whose per-image file is not the one its NLL came from: not kept, its row unpaired
    _fake_run(runs / "vamp0", "vampprior", 0, ref[0] - 0.1, nll=12.0)
    csv_path, md = tmp_path / "t2.csv", tmp_path / "t2.md"
    args = ["table2", str(runs), "--out", str(md), "--csv", str(csv_path)]
    report_main([*args, "--figures", str(tmp_path / "figures")])
    assert (tmp_path / "figures" / "table2_dynamic_mnist_mlp_8steps_train_paired.png").is_file()
    rows = read_csv(csv_path)
    assert sorted((r["row"], r["seed"]) for r in rows) == [
        ("iwae", "0"), ("iwae", "1"), ("vampprior", "0"), ("vhp_rewo", "0"), ("vhp_rewo", "1"),
    ]  # fmt: skip
    kept = (
        tmp_path
        / "t2"
        / f"table2_dynamic_mnist_mlp_8steps_seed0_iwae_train_s5000_n{n}_sweep-iwae0_"
    )
    assert read_per_image(Path(f"{kept}{PER_IMAGE_FILE}"))[0].tolist() == list(range(n))
    assert len(list((tmp_path / "t2").glob(f"*_{PER_IMAGE_FILE}"))) == 4  # not the vampprior's
    text = md.read_text()
    for seed in (0, 1):
        d = expected[seed]
        assert d["resolved"] and d["mean"] == pytest.approx(0.7, abs=0.05)
        assert f"### dynamic MNIST, seed {seed} (train): paired against VHP + REWO" in text
        assert (
            f"| {d['mean']:+.2f} ± {d['se']:.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | {n} | "
            "yes: worse |"
        ) in text
    assert "| VampPrior | 12.00 ± " in text and "| unpaired | — | — | — |" in text
    iwae_nll = [expected[s]["mean"] - float(np.mean(ref[s])) for s in (0, 1)]  # -mean log p(x)
    cell = f"{np.mean(iwae_nll):.2f} ± {np.std(iwae_nll, ddof=1):.2f} (2 seeds)"
    assert f"| IWAE (L=1) | β = 1 | 81.36 | {cell} |" in text  # mean ± std over seeds, said
    deltas = [expected[s]["mean"] for s in (0, 1)]
    over_seeds = f"| {np.mean(deltas):+.2f} ± {np.std(deltas, ddof=1):.2f} | 2 |"  # signed, as Δ
    assert "### dynamic MNIST (train): over seeds" in text and over_seeds in text
    over = seed_interval(deltas)
    assert over is not None and over["resolved"]
    assert f"{over_seeds} [{over['low']:+.2f}, {over['high']:+.2f}] | yes: worse |" in text
    assert (
        "dynamic MNIST (train): **Resolved against VHP + REWO** (the paired 95 % interval "
        "excludes 0, seed by seed): IWAE (L=1) worse on seeds 0, 1.\n"
    ) in text  # the unpaired VampPrior is not named
    kept_files = {
        tuple(r[k] for k in KEY): read_per_image(tmp_path / "t2" / f"{row_id(r)}_{PER_IMAGE_FILE}")
        for r in rows
        if r["row"] != "vampprior"
    }
    ((title, points),) = paired_points(rows, kept_files).values()  # what the figure draws
    assert title.startswith("dynamic MNIST, mlp nets, 8 steps, S = 5000, 200 test images")
    assert points == {
        "IWAE (L=1)": [(str(s), expected[s]["mean"], expected[s]["low"], expected[s]["high"])
                       for s in (0, 1)]
    }  # fmt: skip
    # the run dirs lost: the table is rebuilt, paired, from the CSV and the kept files alone
    for job in runs.iterdir():
        for path in sorted(job.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    md.unlink()
    report_main(["table2", "--out", str(md), "--csv", str(csv_path)])
    assert md.read_text() == text


def test_a_rerun_of_an_unpaired_seed_is_counted_and_the_old_row_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    log_px = {name: -(90.0 + rng.normal(0.0, 5.0, 50)) for name in ("old", "new", "iwae")}
    _fake_run(tmp_path / "old" / "rewo0", "vhp_rewo", 0, log_px["old"])
    (tmp_path / "old" / "rewo0" / PER_IMAGE_FILE).unlink()  # a run from before per-image values
    csv_path, md = tmp_path / "t2.csv", tmp_path / "t2.md"
    report_main(["table2", str(tmp_path / "old"), "--out", str(md), "--csv", str(csv_path)])
    _fake_run(tmp_path / "new" / "rewo0", "vhp_rewo", 0, log_px["new"])
    _fake_run(tmp_path / "new" / "iwae0", "iwae", 0, log_px["iwae"])
    for _ in range(2):  # reporting the same run dirs twice adds nothing
        report_main(["table2", str(tmp_path / "new"), "--out", str(md), "--csv", str(csv_path)])
    rows = read_csv(csv_path)
    assert [(r["row"], r["run"]) for r in rows] == [
        ("vhp_rewo", "old/rewo0"), ("iwae", "new/iwae0"), ("vhp_rewo", "new/rewo0"),
    ]  # fmt: skip
    text = md.read_text()
    new_nll, old_nll = -log_px["new"].mean(), -log_px["old"].mean()
    d = paired_difference(-log_px["new"], -log_px["iwae"])  # against the rerun, not the old row
    assert f"| VHP + REWO | REWO | 78.88 | {new_nll:.2f} ± " in text  # not the mean of both
    assert (
        f"| {d['mean']:+.2f} ± {d['se']:.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | 50 |" in text
    )
    assert "(train): over seeds" not in text  # one seed, run twice: not two seeds
    assert f"| {old_nll:.2f} |" in text and "| superseded by new/rewo0 |" in text
    stem = "table2_dynamic_mnist_mlp_8steps_seed0_vhp_rewo_train_s5000_n50_new-rewo0_"
    assert (tmp_path / "t2" / f"{stem}{PER_IMAGE_FILE}").is_file()
    key = [tuple(r[k] for k in KEY) for r in rows]
    assert current_rows(rows, set()) == ([rows[1], rows[2]], {key[0]: "new/rewo0"})  # the last
    assert current_rows(rows, {key[0]}) == ([rows[0], rows[1]], {key[2]: "old/rewo0"})  # paired


def test_an_invalid_row_is_kept_shown_with_its_reason_and_never_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row whose ``invalid`` cell gives a reason (written by hand into the CSV) stays in the CSV
    and in *Every run*, but no table, figure or "superseded" note counts it, even as the last
    paired run of its setting; a later report keeps the mark. Each run keeps its own curves,
    and the figure draws the counted run's."""
    from vhp_lightning.reports import table2 as table2_module

    rng = np.random.default_rng(4)
    log_px = {name: -(90.0 + rng.normal(0.0, 5.0, 50)) for name in ("old", "new")}
    csv_path, md, figures = tmp_path / "t2.csv", tmp_path / "t2.md", tmp_path / "figures"
    for name, val_loss in (("old", 95.5), ("new", 91.25)):
        _fake_run(tmp_path / name / "rewo0", "vhp_rewo", 0, log_px[name], val_loss=val_loss)
        report_main(["table2", str(tmp_path / name), "--out", str(md), "--csv", str(csv_path)])
    rows = read_csv(csv_path)
    assert [r["run"] for r in rows] == ["old/rewo0", "new/rewo0"] and rows[1]["invalid"] == ""
    curves = {
        name: tmp_path / "t2" / f"table2_dynamic_mnist_mlp_8steps_seed0_vhp_rewo_{name}-rewo0.csv"
        for name in ("old", "new")
    }
    assert [r["val_loss"] for r in read_csv(curves["old"])][-1] == "95.5"
    assert [r["val_loss"] for r in read_csv(curves["new"])][-1] == "91.25"
    reason = "scored on the first 2 000 test images, which are 0s and 1s only"
    text = csv_path.read_text().splitlines()
    assert text[0].endswith(",run,invalid") and text[2].endswith(",new/rewo0,")
    csv_path.write_text("\n".join([*text[:2], f'{text[2]}"{reason}"']) + "\n")
    drawn = []
    monkeypatch.setattr(table2_module, "plot_curves", lambda curves, *a: drawn.append(curves))
    report_main(["table2", "--out", str(md), "--csv", str(csv_path), "--figures", str(figures)])
    table_text = md.read_text()
    old_nll, new_nll = -log_px["old"].mean(), -log_px["new"].mean()
    assert f"| VHP + REWO | REWO | 78.88 | {old_nll:.2f} ± " in table_text
    assert f"| {new_nll:.2f} |" in table_text and f"| **no, invalid**: {reason} |" in table_text
    assert "superseded" not in table_text.split("## Every run")[1]  # the old row: yes
    assert drawn == [{"vhp_rewo": curves["old"]}]
    _fake_run(tmp_path / "more" / "iwae0", "iwae", 0, log_px["old"] - 1.0)
    report_main(["table2", str(tmp_path / "more"), "--out", str(md), "--csv", str(csv_path)])
    rows = read_csv(csv_path)
    assert [r["invalid"] for r in rows] == ["", reason, ""]  # appending keeps the mark
    key = [tuple(r[k] for k in KEY) for r in rows]
    assert current_rows(rows, set(key)) == ([rows[0], rows[2]], {})
    assert current_rows([rows[1]], {key[1]}) == ([], {})  # an invalid row alone: nothing counted


def test_a_rows_wall_time_is_the_runs_run_wall_s_when_it_logged_one(tmp_path: Path) -> None:
    """``run/wall_s`` (summed over a resumed run's sessions) is the row's wall time; a run from
    before it existed falls back to its files' times (seconds, not an hour here)."""
    log_px = -(90.0 + np.random.default_rng(5).normal(0.0, 5.0, 20))
    _fake_run(tmp_path / "runs" / "resumed", "vhp_rewo", 0, log_px, wall_s=4321.6)
    _fake_run(tmp_path / "runs" / "older", "vhp_rewo", 1, log_px)
    csv_path = tmp_path / "t2.csv"
    report_main(["table2", str(tmp_path / "runs"), "--out", str(tmp_path / "t2.md"), "--csv",
                 str(csv_path)])  # fmt: skip
    wall = {r["run"]: r["wall_s"] for r in read_csv(csv_path)}
    assert wall["runs/resumed"] == "4322" and 0 <= int(wall["runs/older"]) < 60


def test_the_table_says_on_which_seeds_a_difference_is_resolved_and_which_way() -> None:
    rng = np.random.default_rng(3)
    base = {"dataset": "dynamic MNIST", "nets": "mlp", "steps": "20000", "samples": "5000",
            "images": "400", "source": "train", "objective": "", "nll_se": "0.5", "epochs": "40",
            "final_beta": "", "switch_step": "", "wall_s": ""}  # fmt: skip
    rows, per_image = [], {}
    shift = {0: 0.5, 1: 0.0, 2: -0.5}  # IWAE vs REWO: worse, a tie, better
    for seed, delta in shift.items():
        ref = -(90.0 + rng.normal(0.0, 5.0, 400))
        for row, log_px in (("vhp_rewo", ref), ("iwae", ref - delta - rng.normal(0, 0.1, 400))):
            r = {**base, "row": row, "seed": str(seed), "run": f"{row}{seed}"}
            r["nll"] = str(-log_px.mean())
            rows.append(r)
            per_image[tuple(r[k] for k in KEY)] = (np.arange(400), log_px)
    text = table(rows, per_image)
    assert (
        "(the paired 95 % interval excludes 0, seed by seed): IWAE (L=1) worse on seed 0, "
        "not resolved on seed 1, better on seed 2.\n"
    ) in text


def test_the_interval_over_seeds_is_students_t_with_n_minus_1_degrees_of_freedom() -> None:
    d = seed_interval([1.0, 2.0, 3.0])  # mean 2, std 1, n 3: t(0.975, 2) = 4.3027
    half = 4.302652729749462 / math.sqrt(3)
    assert d is not None and (d["mean"], d["std"], d["n"]) == (2.0, 1.0, 3)
    assert (d["low"], d["high"]) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-12)
    assert not d["resolved"]  # 2 - 2.48 < 0: three seeds this far apart do not resolve it
    two = seed_interval([2.06, 2.26])  # t(0.975, 1) = 12.706: two seeds need a tight pair
    assert (
        two is not None
        and two["resolved"]
        and two["low"]
        == pytest.approx(2.16 - 12.706204736174707 * math.sqrt(0.02) / math.sqrt(2), abs=1e-9)
    )
    assert seed_interval([0.8]) is None and seed_interval([]) is None  # no spread from one seed
