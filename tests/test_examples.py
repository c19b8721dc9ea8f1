"""The scripts in ``examples/`` run end to end on a tiny budget."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Small nets and data (as tests/conftest.py's TINY), keeping the checkpoint callback.
TINY = [
    "dataset.n_samples=600",
    "dataset.n_val=100",
    "dataset.n_test=100",
    "dataset.batch_size=50",
    "dataset.eval_batch_size=100",
    "model.encoder.hidden=[32,32]",
    "model.decoder.hidden=[32,32]",
    "model.prior_encoder.hidden=[32,32]",
    "model.prior_decoder.hidden=[32,32]",
    "paper.n_importance=4",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


def test_pendulum_quickstart(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    cmd = [sys.executable, str(REPO / "examples" / "pendulum_quickstart.py")]
    cmd += ["--steps", "20", "--out", str(out), "--nodes", "100", "--neighbors", "8", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TrainedModel(VHP, data_shape=(1, 16, 16), step=20" in proc.stdout
    assert (out / "run" / "checkpoints" / "last.ckpt").is_file()
    for name in ("latent_map", "interpolation_graph", "interpolation_strip"):
        png = out / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "outputs").exists()  # everything went to --out
