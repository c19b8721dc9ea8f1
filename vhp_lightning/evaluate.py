"""``python -m vhp_lightning.evaluate`` / ``vhp-eval``: evaluate a checkpoint (``conf/eval.yaml``).

    python -m vhp_lightning.evaluate ckpt_path=outputs/.../checkpoints/last.ckpt   # NLL, S=5000
    python -m vhp_lightning.evaluate ckpt_path=... metrics=[nll,active_units,rate_distortion]

The entry point only: the metrics live in ``vhp_lightning/evaluation.py``, imported (with torch)
when a job runs, so ``--help`` and a wrong override answer without loading torch. The names of
``vhp_lightning.evaluation`` (``evaluate``, ``METRICS``, ...) stay importable from here.
"""

from __future__ import annotations

from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://vhp_lightning.conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the NLL (if computed) so sweepers can minimise it."""
    import matplotlib

    matplotlib.use("Agg")  # figures are written to files, never shown
    from vhp_lightning.evaluation import evaluate

    result = evaluate(cfg, HydraConfig.get().runtime.output_dir)
    nll: float | None = result["metrics"].get("nll", {}).get("nll")
    return nll


def __getattr__(name: str) -> Any:
    """``from vhp_lightning.evaluate import evaluate, METRICS, ...`` as before the split."""
    from vhp_lightning import evaluation

    try:
        return getattr(evaluation, name)
    except AttributeError:
        raise AttributeError(f"module 'vhp_lightning.evaluate' has no attribute {name!r}") from None


if __name__ == "__main__":
    main()
