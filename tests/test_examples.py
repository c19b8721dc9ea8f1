"""The scripts in ``examples/`` run end to end on a tiny budget."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pendulum_quickstart(tmp_path: Path, tiny_nets: list[str]) -> None:
    out = tmp_path / "qs"
    # Small nets and data, keeping the checkpoint callback.
    tiny = [*tiny_nets, "trainer.enable_model_summary=false", "logger=csv"]
    cmd = [sys.executable, str(REPO / "examples" / "pendulum_quickstart.py")]
    cmd += ["--steps", "20", "--out", str(out), "--nodes", "100", "--neighbors", "8", *tiny]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TrainedModel(VHP, data_shape=(1, 16, 16), step=20" in proc.stdout
    assert (out / "run" / "checkpoints" / "last.ckpt").is_file()
    for name in ("latent_map", "interpolation_graph", "interpolation_strip"):
        png = out / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "outputs").exists()  # everything went to --out
