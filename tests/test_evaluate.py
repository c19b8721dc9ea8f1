"""``vhp_lightning.evaluate``, the ``MeanNLL`` metric (also under DDP), ``test/nll`` at the end
of training, the Table 2 configs and collector.

The IS estimator itself converges to the exact log p(x) from below as S grows, on PPCA and on a
two-layer linear-Gaussian chain: ``tests/test_models.py`` (``test_ppca_wrong_encoder_converges_
from_below``, ``test_two_layer_wrong_posterior_converges_from_below``). Here the same closed form
checks what evaluation adds on top: chunking, batching and the cross-process mean.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose
from omegaconf import open_dict

from tests.test_api import write_checkpoint
from tests.test_models import Affine, ppca
from vhp_lightning.analysis.nll import MeanNLL, NLLStandardError, log_likelihood_batched
from vhp_lightning.evaluate import METRICS, check_options, evaluate
from vhp_lightning.models import VAE
from vhp_lightning.report import main as report_main
from vhp_lightning.reports import read_csv
from vhp_lightning.train import train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture
def eval_cfg(compose_cfg, tmp_path: Path):
    """``eval_cfg(*overrides)`` -> (the composed eval config, a tiny pendulum checkpoint)."""
    ckpt = tmp_path / "tiny.ckpt"
    write_checkpoint(compose_cfg(), ckpt)

    def _compose(*overrides: str):
        cfg = compose("eval", overrides=[f"ckpt_path={ckpt}", *overrides])
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg

    return _compose


# --- the metric -----------------------------------------------------------------------------
def test_ppca_exact_posterior_nll_is_exact_however_it_is_chunked() -> None:
    torch.manual_seed(0)
    decoder, likelihood, encoder, x, exact = ppca(n=12)
    model = VAE(encoder, decoder, likelihood)
    for chunk in (1, 7, 40, 1000):  # 1 sample per pass ... all 12 x 20 at once
        metric = MeanNLL()
        for xb in x.split(5):
            metric.update(log_likelihood_batched(model, xb, n_samples=20, chunk_size=chunk))
        assert int(metric.count) == 12
        torch.testing.assert_close(metric.compute(), -exact.mean(), atol=1e-6, rtol=0)


def test_ppca_wrong_encoder_nll_is_above_exact_and_closes_in() -> None:
    torch.manual_seed(0)
    decoder, likelihood, encoder, x, exact = ppca(n=128)
    wrong = Affine(encoder.weight * 0.9, encoder.bias + 0.2, encoder.logvar + 0.5)
    model = VAE(wrong, decoder, likelihood)
    gaps = []
    for s in (1, 10, 300):
        metric = MeanNLL()
        metric.update(log_likelihood_batched(model, x, s, chunk_size=2000))
        gaps.append(float(metric.compute() + exact.mean()))
    assert gaps[0] > gaps[1] > gaps[2] and abs(gaps[2]) < 0.02, gaps


def test_nll_standard_error_is_the_sample_std_over_sqrt_n_in_any_batching() -> None:
    values = torch.tensor([-80.0, -95.5, -101.25, -77.0, -88.0], dtype=torch.float64)
    expected = float(values.std(unbiased=True) / math.sqrt(len(values)))  # 4.4077...
    for split in (1, 2, 5):
        se = NLLStandardError()
        for part in values.split(split):
            se.update(part)
        assert float(se.compute()) == pytest.approx(expected, rel=1e-12)
    one = NLLStandardError()
    one.update(values[:1])
    assert float(one.compute()) == 0.0  # one image: no spread to measure


def test_mean_nll_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        MeanNLL().update(torch.zeros(2, 3))
    with pytest.raises(FloatingPointError, match="non-finite"):
        MeanNLL().update(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="n_samples"):
        log_likelihood_batched(None, torch.zeros(1), n_samples=0)


# Each rank is a plain `python -c` process (lighter than re-importing this test module under
# torch.multiprocessing.spawn): gloo over a rendezvous file, uneven shards of the same data.
_DDP_RANK = """
import sys
from pathlib import Path
import torch, torch.distributed as dist
from tests.test_models import ppca
from vhp_lightning.analysis.nll import MeanNLL, NLLStandardError, log_likelihood_batched
from vhp_lightning.models import VAE

rank, init_file, out_dir = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
torch.manual_seed(0)  # the same data on every rank
decoder, likelihood, encoder, x, _ = ppca(n=12)
shard = x[:7] if rank == 0 else x[7:]  # uneven: the mean must weight each shard by its size
metric, se = MeanNLL(), NLLStandardError()
log_px = log_likelihood_batched(VAE(encoder, decoder, likelihood), shard, 20, 50)
metric.update(log_px)
se.update(log_px)
torch.save((metric.compute(), se.compute()), out_dir / f"{rank}.pt")
dist.destroy_process_group()
"""


def test_mean_nll_under_ddp_equals_one_process(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", _DDP_RANK, str(r), str(tmp_path / "init"), str(tmp_path)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in (0, 1)
    ]
    for proc in ranks:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    torch.manual_seed(0)
    decoder, likelihood, encoder, x, exact = ppca(n=12)
    single, single_se = MeanNLL(), NLLStandardError()
    log_px = log_likelihood_batched(VAE(encoder, decoder, likelihood), x, 20, 50)
    single.update(log_px)
    single_se.update(log_px)
    for rank in (0, 1):
        mean, se = torch.load(tmp_path / f"{rank}.pt")
        torch.testing.assert_close(mean, single.compute())
        torch.testing.assert_close(se, single_se.compute())
    assert float(single_se.compute()) > 0
    torch.testing.assert_close(single.compute(), -exact.mean(), atol=1e-6, rtol=0)


# --- evaluate ---------------------------------------------------------------------------------
def test_evaluate_writes_metrics_json(eval_cfg, tmp_path: Path) -> None:
    cfg = eval_cfg(
        "metrics=[nll,active_units,rate_distortion]", "limit=30", "n_samples=16",
        "chunk_size=64", "batch_size=8",
    )  # fmt: skip
    out = tmp_path / "eval"
    result = evaluate(cfg, out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    assert saved["n_images"] == 30 and saved["model"] == "vhp_lightning.models.vhp.VHP"
    nll = saved["metrics"]["nll"]
    assert nll["n_images"] == 30 and nll["n_samples"] == 16 and nll["nll"] == nll["nll"]
    assert 0 < nll["nll_se"] < nll["nll"]  # standard error over the 30 images
    units = saved["metrics"]["active_units"]
    assert units["latent_dim"] == 2 and len(units["variance_per_dim"]) == 2
    assert 0 <= units["active_units"] <= 2 and len(units["zeta_kl_per_dim"]) == 2
    assert Path(units["zeta_kl_figure"]).is_file()
    rd = saved["metrics"]["rate_distortion"]
    assert rd["rate"] > 0 and rd["negative_elbo"] == pytest.approx(rd["rate"] + rd["distortion"])
    # the IS estimate is at least the beta = 1 bound, up to Monte Carlo noise of 30 images
    assert nll["nll"] <= rd["negative_elbo"] + 5.0


def test_summary_shows_integer_results(eval_cfg, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="vhp_lightning.evaluate")
    result = evaluate(eval_cfg("metrics=[active_units]", "limit=20"), tmp_path / "eval")
    units = result["metrics"]["active_units"]
    summary = [r.getMessage() for r in caplog.records if "written to" in r.getMessage()][0]
    assert f"active_units={units['active_units']}" in summary
    assert "latent_dim=2" in summary and "threshold=0.01" in summary


def test_missing_data_names_the_data_dir_option_of_eval(compose_cfg, tmp_path: Path) -> None:
    ckpt = tmp_path / "mnist.ckpt"
    data = tmp_path / "gone"
    write_checkpoint(compose_cfg("dataset=mnist", f"data_dir={data}", tiny=False), ckpt)
    cfg = compose("eval", overrides=[f"ckpt_path={ckpt}", "limit=5"])
    with open_dict(cfg):
        cfg.pop("hydra", None)
        cfg.data_dir = None  # VHP_DATA_DIR may be set where the tests run
    with pytest.raises(FileNotFoundError) as err:
        evaluate(cfg, tmp_path / "out")
    message = str(err.value)
    assert f"The checkpoint stores data_dir={data}" in message
    assert f"python -m vhp_lightning.evaluate ckpt_path={ckpt} data_dir=<folder>" in message
    assert "dataset.download" not in message.split("). The checkpoint")[1]  # no train-only keys


@pytest.mark.parametrize(
    "override,message",
    [
        ("metrics=[nl]", "Unknown metric 'nl'. Choose one of: nll"),
        ("split=tset", "Unknown split 'tset'"),
        ("n_samples=0", "n_samples must be an integer >= 1"),
        ("limit=0", "limit must be an integer >= 1 or null"),
    ],
)
def test_bad_options_fail_early(eval_cfg, override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_options(eval_cfg(override))


def test_ckpt_path_is_required(compose_cfg) -> None:
    cfg = compose("eval")
    with open_dict(cfg):
        cfg.pop("hydra", None)
    with pytest.raises(ValueError, match="ckpt_path is required"):
        check_options(cfg)


def test_evil_checkpoint_is_refused_by_evaluate(compose_cfg, tmp_path: Path) -> None:
    ckpt = tmp_path / "evil.ckpt"
    write_checkpoint(compose_cfg(), ckpt, edit=lambda c: c["dataset"].update(_target_="os.system"))
    cfg = compose("eval", overrides=[f"ckpt_path={ckpt}"])
    with pytest.raises(ValueError, match=r"refusing to instantiate dataset._target_='os.system'"):
        evaluate(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_interpolation_metric_is_registered(eval_cfg, tmp_path: Path) -> None:
    assert "interpolation" in METRICS
    pytest.importorskip("vhp_lightning.analysis.interpolation")
    cfg = eval_cfg(
        "metrics=[interpolation]", "limit=40", "interpolation.n_nodes=60",
        "interpolation.n_neighbors=8", "interpolation.n_graphs=1", "interpolation.n_pairs=2",
        "interpolation.n_strips=1",
    )  # fmt: skip
    result = evaluate(cfg, tmp_path / "interp")["metrics"]["interpolation"]
    assert result and all(isinstance(v, float) for v in result.values())


@pytest.mark.slow  # a fresh interpreter importing Lightning: ~10-30 s on a loaded 2-core machine
def test_cli_writes_metrics_json_in_the_run_dir(compose_cfg, tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    write_checkpoint(compose_cfg(), ckpt)
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "vhp_lightning.evaluate", f"ckpt_path={ckpt}", "limit=10",
         "n_samples=8", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["metrics"]["nll"]["n_images"] == 10


# --- training: test/nll at the end ------------------------------------------------------------
def test_train_logs_test_nll_and_its_checkpoint_evaluates(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        "trainer.max_steps=10", "callbacks=default", "trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint.every_n_train_steps=null",
        "callbacks.model_checkpoint.every_n_epochs=1", "dataset.n_samples=300",
        "dataset.n_val=50", "dataset.n_test=50",
    )  # fmt: skip
    metrics = train(cfg)
    assert "test/nll" in metrics and metrics["test/nll"] == metrics["test/nll"]
    assert 0 < metrics["test/nll_se"] < metrics["test/nll"] / 10  # over the 50 test images
    ckpt = next(tmp_path.rglob("last.ckpt"))
    eval_cfg = compose("eval", overrides=[f"ckpt_path={ckpt}", "n_samples=100", "batch_size=50"])
    result = evaluate(eval_cfg, tmp_path / "eval")
    assert result["n_images"] == 50
    # the same estimator (S = 100, module default) on the same 50 test images
    assert result["metrics"]["nll"]["nll"] == pytest.approx(metrics["test/nll"], abs=2.0)


# --- Table 2 ----------------------------------------------------------------------------------
ROWS = {  # +table2=<row> -> (model class, beta scheme class)
    "vhp_rewo": ("VHP", "REWO"),
    "vhp_geco": ("VHP", "GECO"),
    "vampprior": ("VampPrior", "WarmUp"),
    "iwae": ("IWAE", "ConstantBeta"),
    "iwae_l2": ("IWAE2", "ConstantBeta"),
}


def test_table2_row_group_and_both_protocols_compose(compose_cfg) -> None:
    assert sorted(p.stem for p in (CONF / "table2").glob("*.yaml")) == sorted(ROWS)
    for experiment, encoder, steps, warmup in (
        ("table2", "GaussianMLP", 20000, 10),
        ("table2_gated", "GatedConvEncoder", 500000, 100),
    ):
        for row, (model, scheme) in ROWS.items():
            for dataset, kappa in (("mnist", 0.18), ("fashion_mnist", 0.31)):
                cfg = compose_cfg(
                    f"experiment={experiment}", f"+table2={row}", f"dataset={dataset}", tiny=False
                )
                assert cfg.model._target_.rsplit(".", 1)[1] == model
                assert cfg.optim.scheme._target_.rsplit(".", 1)[1] == scheme
                assert cfg.model.encoder._target_.rsplit(".", 1)[1] == encoder
                assert cfg.trainer.max_steps == steps and cfg.dataset.batch_size == 100
                assert cfg.paper.latent_dim == 32 and cfg.dataset.data_shape == [1, 28, 28]
                if scheme in ("REWO", "GECO"):
                    assert cfg.optim.scheme.kappa == kappa  # the dataset's kappa, rows alike
                if scheme == "WarmUp":
                    assert cfg.optim.scheme.warmup_epochs == warmup
    cfg = compose_cfg("experiment=table2", "+table2=iwae", tiny=False)
    assert cfg.nll_samples == 5000 and cfg.test_nll_images == 2000
    assert cfg.model.encoder.in_dim == 784 and cfg.model.decoder.out_dim == 784


def _fake_eval(root: Path, name: str, model: str, scheme: str, dataset: str, nll: float) -> None:
    (root / name).mkdir(parents=True)
    data = {"model": model, "scheme": scheme, "dataset": dataset, "global_step": 9,
            "checkpoint": str(root / "nowhere" / "checkpoints" / "last.ckpt"),
            "seconds": {"nll": 61.0},
            "metrics": {"nll": {"nll": nll, "nll_se": 0.5, "n_samples": 5000,
                                "n_images": 10000}}}  # fmt: skip
    (root / name / "metrics.json").write_text(json.dumps(data))


def _fake_train_run(job: Path) -> None:
    """A finished REWO training run of experiment=table2: config, beta trace, val and test."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(  # the package names of earlier versions
        "seed: 1\nnll_samples: 5000\n"
        "experiment_nets: {encoder: {_target_: vhp_lightning.nets.mlp.GaussianMLP}}\n"
        "model: {_target_: vhp_lightning.models.vhp.VHP, encoder: '${experiment_nets.encoder}'}\n"
        "optim: {scheme: {_target_: callbacks.rewo.REWO}}\n"
        "dataset: {_target_: datamodules.mnist.MNISTDataModule, eval_batch_size: 100}\n"
    )
    (job / "csv").mkdir()
    lines = ["epoch,step,rewo/beta,rewo/train_prior,val/loss,test/nll,test/nll_se,test/nll_images"]
    for step in range(8):  # 4 steps per epoch; the main phase from step 3 on
        beta = 1e-4 if step < 3 else min(1.0, 1e-4 * 30 ** (step - 2))
        lines.append(f"{step // 4},{step},{beta},{int(step >= 3)},,,,")
    lines += ["1,7,,,95.5,,,", "1,8,,,,88.125,0.375,200.0"]
    (job / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_table2_report_appends_rows_and_puts_ours_beside_the_paper(tmp_path: Path) -> None:
    vhp, rewo = "vhp_lightning.models.vhp.VHP", "vhp_lightning.callbacks.rewo.REWO"
    runs = tmp_path / "runs"
    _fake_eval(runs, "a", vhp, rewo, "vhp_lightning.datamodules.mnist.MNISTDataModule", 79.5)
    _fake_eval(runs, "b", "vhp_lightning.models.iwae.IWAE2",
               "vhp_lightning.callbacks.schedules.ConstantBeta",
               "vhp_lightning.datamodules.mnist.FashionMNISTDataModule", 230.25)  # fmt: skip
    _fake_train_run(runs / "sweep" / "0")
    csv_path, md, figures = tmp_path / "t2.csv", tmp_path / "t2.md", tmp_path / "figs"
    args = ["table2", str(runs), "--out", str(md), "--csv", str(csv_path)]
    report_main([*args, "--figures", str(figures)])
    rows = {(r["row"], r["source"]): r for r in read_csv(csv_path)}
    assert len(rows) == 3
    train = rows["vhp_rewo", "train"]
    assert train["dataset"] == "dynamic MNIST" and train["nets"] == "mlp" and train["seed"] == "1"
    assert train["steps"] == "8" and train["epochs"] == "2.0" and train["switch_step"] == "3"
    assert float(train["final_beta"]) == 1.0 and train["objective"] == "REWO"
    assert (train["nll"], train["nll_se"], train["images"]) == ("88.125", "0.375", "200")
    assert rows["iwae_l2", "evaluate"]["dataset"] == "Fashion-MNIST"
    assert rows["iwae_l2", "evaluate"]["nll_se"] == "0.5"
    text = md.read_text()
    assert "## mlp nets, 8 training steps, S = 5000, 200 test images" in text
    assert "| VHP + REWO | REWO | 78.88 | 88.12 ± 0.38 |" in text
    assert "## ? nets, 9 training steps, S = 5000, 10000 test images" in text  # no run dir
    assert "| IWAE (L=2) | β = 1 | 80.66 | not run | 225.39 | 230.25 ± 0.50 |" in text
    figure = figures / "table2_dynamic_mnist_mlp_8steps_seed1.png"
    assert figure.stat().st_size > 10_000
    # the run's curves are kept beside the CSV: every 50th step, each phase change, the last step
    curves = tmp_path / "t2" / "table2_dynamic_mnist_mlp_8steps_seed1_vhp_rewo_sweep-0.csv"
    kept = [
        (r["step"], float(r["beta"]), r["train_prior"], r["val_loss"]) for r in read_csv(curves)
    ]
    assert kept == [("0", 1e-4, "0.0", ""), ("3", pytest.approx(3e-3), "1.0", ""),
                    ("7", 1.0, "1.0", "95.5")]  # fmt: skip
    # a rerun adds nothing and keeps every row (and curve file) as it was
    before, before_curves = csv_path.read_text(), curves.read_text()
    report_main(args)
    assert csv_path.read_text() == before and curves.read_text() == before_curves
    # the figure is redrawn from results/ alone, once the run dirs are gone
    shutil.rmtree(runs)
    figure.unlink()
    report_main(["table2", "--out", str(md), "--csv", str(csv_path), "--figures", str(figures)])
    assert figure.stat().st_size > 10_000
    # the table is rebuilt from the CSV alone, without the runs
    md.unlink()
    report_main(["table2", "--out", str(md), "--csv", str(csv_path)])
    assert md.read_text() == text


def test_results_reach_the_chosen_logger(eval_cfg, tmp_path: Path) -> None:
    """``vhp-eval logger=csv``: the numeric results as eval/<metric>/<name> at the checkpoint's
    step; no logger by default (metrics.json is the record)."""
    import csv

    assert eval_cfg().logger == {}
    out = tmp_path / "eval"
    cfg = eval_cfg("metrics=[active_units]", "limit=20", "logger=csv", f"logger.csv.save_dir={out}")
    result = evaluate(cfg, out)
    with open(out / "csv" / "metrics.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    units = result["metrics"]["active_units"]["active_units"]
    assert float(row["eval/active_units/active_units"]) == units
    assert int(row["step"]) == result["global_step"]
