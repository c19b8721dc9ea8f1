"""The benchmark scripts run end to end and write their tables (no timing assertions)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from vhp_lightning.callbacks.rewo import rewo_beta_update

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("beta", [1e-4, 0.3, 1.0])
@pytest.mark.parametrize("delta", [-0.5, -1e-3, 0.0, 2e-3, 50.0])
def test_plain_loop_beta_update_is_eq_11(beta: float, delta: float) -> None:
    """The plain loop restates eq. 11 (to stay Lightning-free); it must equal REWO's."""
    ours = _load("bench_throughput").rewo_beta(beta, delta, nu=5.0, tau=3.0)
    assert math.isclose(ours, rewo_beta_update(beta, delta, nu=5.0, tau=3.0), rel_tol=1e-12)


def test_run_all_quick_writes_results(tmp_path: Path) -> None:
    """``run_all.py --quick`` on the pendulum model: header, throughput and graph tables."""
    out = tmp_path / "RESULTS.md"
    loops = ["ours", "plain"]  # each loop is a process (~10 s of imports); pythae: see below
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "run_all.py"),
        "--quick",
        "--out",
        str(out),
        "--skip",
        "nll",
        "--models",
        "pendulum-mlp",
        "--loops",
        *loops,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "CPU:" in text and "Load average" in text and "torch" in text
    assert "_Failed" not in text, text
    header = (
        "| model | loop | batch | threads | steps/s | images/s | steps/s min-max | steps/CPU-s "
        "| ours / loop (wall) | ours / loop (CPU) | GFLOP/step | % of sgemm peak (CPU) "
        "| peak RSS (MiB) |"
    )
    assert header in text
    rows = [line for line in text.splitlines() if line.startswith("| pendulum-mlp |")]
    assert len(rows) == len(loops) + 1  # + the `import torch` floor
    assert all(line.count("|") == header.count("|") for line in rows)
    assert "| latent dim | nodes | neighbours | build graph (ms) |" in text
    assert "ours / plain = **" in text
    assert "of the sgemm peak" in text and "(target >= 75 %)" in text  # issue 13's step target


def test_pythae_adapters_train(tmp_path: Path) -> None:
    """pythae's VAE / IWAE / VAMP run forward + backward on our nets (bench-only dependency)."""
    pytest.importorskip("pythae")
    import torch

    from vhp_lightning.nets import MLP, GaussianMLP

    build_pythae = _load("pythae_models").build_pythae
    x = torch.rand(4, 1, 4, 4)
    for kind in ("vae", "iwae", "vamp"):
        model = build_pythae(
            kind,
            GaussianMLP(16, 2, (8,)),
            MLP(2, 16, (8,)),
            (1, 4, 4),
            latent_dim=2,
            bernoulli=kind == "vae",
            iwae_samples=3,
            vamp_components=5,
        )
        out = model({"data": x})
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert all(p.grad is not None for p in model.encoder.parameters())


def test_gpu_benchmark_runs_every_row_on_cpu_with_a_tiny_budget(tmp_path: Path) -> None:
    # bench/gpu.sh is for a GPU machine; its tiny budget runs the same code paths on the CPU.
    out = tmp_path / "gpu.md"
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--device", "cpu", "--budget", "tiny",
         "--out", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [
        line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows[1:]] == [
        "pendulum VHP + REWO, eager",
        "pendulum VHP + REWO, compile=eager",
        "MNIST gated VHP + REWO, eager",
        "NLL, pendulum MLP VHP, S = 8",
        "NLL, MNIST gated VHP, S = 8",
        "pendulum run end to end, 4 steps",
    ]
    for row in rows[1:]:
        assert float(row.split(" | ")[1]) > 0, row  # a number, not "failed: ..."
