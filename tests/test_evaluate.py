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
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose
from omegaconf import open_dict

from tests.test_api import write_checkpoint
from tests.test_models import Affine, ppca
from vhp_lightning.evaluate import METRICS, check_options, evaluate
from vhp_lightning.metrics import MeanNLL, log_likelihood_batched
from vhp_lightning.models import VAE
from vhp_lightning.report import main as report_main
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
from vhp_lightning.metrics import MeanNLL, log_likelihood_batched
from vhp_lightning.models import VAE

rank, init_file, out_dir = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
torch.manual_seed(0)  # the same data on every rank
decoder, likelihood, encoder, x, _ = ppca(n=12)
shard = x[:7] if rank == 0 else x[7:]  # uneven: the mean must weight each shard by its size
metric = MeanNLL()
metric.update(log_likelihood_batched(VAE(encoder, decoder, likelihood), shard, 20, 50))
torch.save(metric.compute(), out_dir / f"{rank}.pt")
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
    single = MeanNLL()
    single.update(log_likelihood_batched(VAE(encoder, decoder, likelihood), x, 20, 50))
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(tmp_path / f"{rank}.pt"), single.compute())
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
    pytest.importorskip("vhp_lightning.interpolation_report")
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
        "callbacks.model_checkpoint.every_n_epochs=1", "dataset.n_samples=300",
        "dataset.n_val=50", "dataset.n_test=50",
    )  # fmt: skip
    metrics = train(cfg)
    assert "test/nll" in metrics and metrics["test/nll"] == metrics["test/nll"]
    ckpt = next(tmp_path.rglob("last.ckpt"))
    eval_cfg = compose("eval", overrides=[f"ckpt_path={ckpt}", "n_samples=100", "batch_size=50"])
    result = evaluate(eval_cfg, tmp_path / "eval")
    assert result["n_images"] == 50
    # the same estimator (S = 100, module default) on the same 50 test images
    assert result["metrics"]["nll"]["nll"] == pytest.approx(metrics["test/nll"], abs=2.0)


# --- Table 2 ----------------------------------------------------------------------------------
TABLE2 = sorted(p.stem for p in (CONF / "experiment").glob("table2_*.yaml"))


def test_twenty_table2_experiments_compose(compose_cfg) -> None:
    rows = [n for n in TABLE2 if not n.startswith("table2_cpu_")]
    assert len(rows) == 20
    for name in rows:
        cfg = compose_cfg(f"experiment={name}", tiny=False)
        assert cfg.model._target_.startswith("vhp_lightning.models.")
        assert cfg.paper.latent_dim == 32 and cfg.dataset.data_shape == [1, 28, 28]
    cfg = compose_cfg("experiment=table2_mnist_vhp_geco", tiny=False)
    assert cfg.optim.scheme._target_ == "vhp_lightning.callbacks.geco.GECO"
    assert cfg.model._target_ == "vhp_lightning.models.vhp.VHP"
    cfg = compose_cfg("experiment=table2_omniglot_iwae_l2", tiny=False)
    assert cfg.model._target_.endswith("IWAE2") and "Omniglot" in cfg.dataset._target_


def test_cpu_budget_sweeps_the_four_models(compose_cfg) -> None:
    cfg = compose_cfg("experiment=table2_cpu_budget", "model=iwae_l2", tiny=False)
    assert cfg.model._target_.endswith("IWAE2") and cfg.dataset._target_.endswith("MNISTDataModule")
    assert cfg.nll_samples == 100 and cfg.trainer.limit_test_batches == 2
    cfg = compose_cfg("experiment=table2_cpu_mlp", "model=vampprior", tiny=False)
    assert cfg.model.encoder._target_.endswith("GaussianMLP") and cfg.model.encoder.in_dim == 784
    assert cfg.nll_samples == 500 and cfg.trainer.limit_test_batches == 10


def _fake_eval(root: Path, name: str, model: str, scheme: str, dataset: str, nll: float) -> None:
    (root / name).mkdir(parents=True)
    data = {"model": model, "scheme": scheme, "dataset": dataset, "global_step": 9,
            "metrics": {"nll": {"nll": nll, "n_samples": 5000, "n_images": 10000}}}  # fmt: skip
    (root / name / "metrics.json").write_text(json.dumps(data))


def test_table2_report_puts_ours_beside_the_paper(tmp_path: Path) -> None:
    vhp, rewo = "vhp_lightning.models.vhp.VHP", "vhp_lightning.callbacks.rewo.REWO"
    _fake_eval(tmp_path, "a", vhp, rewo, "vhp_lightning.datamodules.mnist.MNISTDataModule", 79.5)
    _fake_eval(tmp_path, "b", "vhp_lightning.models.iwae.IWAE2",
               "vhp_lightning.callbacks.schedules.ConstantBeta",
               "vhp_lightning.datamodules.mnist.FashionMNISTDataModule", 230.25)  # fmt: skip
    job = tmp_path / "sweep" / "0"  # a training run with test/nll in its CSV log
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(  # the package names of earlier versions
        "model: {_target_: vhp_lightning.models.vampprior.VampPrior}\n"
        "optim: {scheme: {_target_: callbacks.rewo.REWO}}\n"
        "dataset: {_target_: datamodules.mnist.MNISTDataModule, eval_batch_size: 100}\n"
        "trainer: {limit_test_batches: 2}\nnll_samples: 100\n"
    )
    (job / "csv").mkdir()
    (job / "csv" / "metrics.csv").write_text("step,train/recon,test/nll\n5,1.0,\n40,,88.125\n")
    out = report_main(["table2", str(tmp_path), "--out", str(tmp_path / "t2.md")])
    text = out.read_text()
    assert "| VHP + REWO | 78.88 | 79.50 |" in text
    assert "| IWAE (L=2) | 80.66 | not run | 82.83 | not run | 225.39 | 230.25 |" in text
    assert "| VampPrior | dynamic MNIST | 88.12 | 100 | 200 | 40 | REWO | train test/nll" in text
