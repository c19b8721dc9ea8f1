"""GPU benchmark: training steps/s (eager, compiled), NLL images/s and the 30 000-step run.

Run on a machine with one GPU: ``bash bench/gpu.sh`` (about 5-8 minutes on an H200-class GPU;
writes ``bench/GPU_RESULTS.md``). ``--budget tiny --device cpu`` runs every measurement on a few
steps on the CPU (what ``tests/test_bench.py`` does), so the script is tested without a GPU.

Rows:

* ``pendulum VHP + REWO``: steps/s of our Trainer + VHPModule + REWO loop (App. F MLPs, batch
  128, K = 16; kappa = 1 so the main phase, both optimisers, runs from step 1), eager and with
  ``compile=inductor``;
* ``MNIST gated VHP``: the same on the gated-conv nets (batch 100, random binary images);
* ``NLL``: importance-sampled log p(x) (S = 5000 on GPU) of both models, images/s;
* ``30 000-step pendulum run``: ``python -m vhp_lightning.train trainer=gpu test=false`` end to
  end as a user runs it (start-up, data, validation, checkpoints and figures included).
  Target on an H200-class GPU: under 2 minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Budget:
    """How much each measurement runs."""

    warmup: int
    steps: int
    nll_images: int
    nll_samples: int
    end_to_end_steps: int
    compile_backend: str = "inductor"
    tiny_overrides: tuple[str, ...] = ()


BUDGETS = {
    "full": Budget(warmup=30, steps=300, nll_images=200, nll_samples=5000, end_to_end_steps=30_000),
    "tiny": Budget(
        warmup=2,
        steps=3,
        nll_images=2,
        nll_samples=8,
        end_to_end_steps=4,
        compile_backend="eager",  # the wiring only: inductor needs a minute to compile on a CPU
        tiny_overrides=(
            "dataset.n_samples=400",
            "dataset.n_val=50",
            "dataset.n_test=50",
            "nll_samples=2",
        ),
    ),
}
# name: (config overrides, batch size, data shape); the MNIST nets run on random binary images,
# so no data files are needed.
SETTINGS = {
    "pendulum": (["dataset=pendulum"], 128, (1, 16, 16)),
    "mnist-gated": (["dataset=mnist"], 100, (1, 28, 28)),
}


def _compose(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import vhp_lightning.io.config  # noqa: F401  (resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_module("vhp_lightning.conf", version_base="1.3"):
        return compose("train", overrides=overrides)


def _model_config(setting: str) -> tuple[Any, int, tuple[int, ...]]:
    overrides, batch, shape = SETTINGS[setting]
    return _compose([*overrides, "optim.kappa=1.0"]), batch, shape


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps_per_s(
    setting: str, device: torch.device, budget: Budget, compile_backend: str | None = None
) -> float:
    """Steps/s of ``pl.Trainer.fit`` on VHPModule + REWO over random data on ``device``."""
    import warnings

    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from vhp_lightning.module import VHPModule

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    cfg, batch, shape = _model_config(setting)
    torch.manual_seed(0)
    data = (torch.rand(batch * 8, *shape) < 0.3).float()
    module = VHPModule(
        instantiate(cfg.model),
        optimizer=instantiate(cfg.optim.optimizer),
        compile_backend=compile_backend,
    )
    stamps: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
            if trainer.global_step in (budget.warmup, budget.warmup + budget.steps):
                _sync(device)
                stamps.append(time.perf_counter())

    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        max_steps=budget.warmup + budget.steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[instantiate(cfg.optim.scheme), Clock()],
    )
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data), batch_size=batch, shuffle=True, drop_last=True
    )
    trainer.fit(module, train_dataloaders=loader)
    return budget.steps / (stamps[1] - stamps[0])


@torch.no_grad()
def nll_images_per_s(setting: str, device: torch.device, budget: Budget) -> float:
    """Images/s of the importance-sampled log p(x) (S = ``budget.nll_samples``)."""
    from hydra.utils import instantiate

    cfg, _, shape = _model_config(setting)
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).eval()
    x = (torch.rand(budget.nll_images, *shape, device=device) < 0.3).float()
    model.log_likelihood(x[:1], n_samples=min(budget.nll_samples, 100))  # warm-up
    _sync(device)
    start = time.perf_counter()
    for i in range(len(x)):
        model.log_likelihood(x[i : i + 1], n_samples=budget.nll_samples, chunk_size=1000)
    _sync(device)
    return len(x) / (time.perf_counter() - start)


def end_to_end_seconds(device: torch.device, budget: Budget, workdir: Path) -> float:
    """Wall time of the default pendulum run as a user starts it (``trainer=gpu`` on a GPU)."""
    trainer = "trainer=gpu" if device.type == "cuda" else "trainer=default"
    cmd = [
        sys.executable,
        "-m",
        "vhp_lightning.train",
        trainer,
        f"trainer.max_steps={budget.end_to_end_steps}",
        "test=false",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={workdir / time.strftime('end_to_end_%Y%m%d-%H%M%S')}",
        *budget.tiny_overrides,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=3600)
    return time.perf_counter() - start


def run(device: torch.device, budget: Budget, workdir: Path) -> list[tuple[str, str, str]]:
    """All rows: (what, value, unit)."""
    rows: list[tuple[str, str, str]] = []

    def add(what: str, fn: Callable[[], float], unit: str, fmt: str = ".1f") -> None:
        try:
            rows.append((what, format(fn(), fmt), unit))
        except Exception as err:  # a failed row is reported, the others still run
            rows.append((what, f"failed: {type(err).__name__}: {str(err)[:120]}", ""))
        print(f"{rows[-1][0]}: {rows[-1][1]} {rows[-1][2]}", flush=True)

    backend = budget.compile_backend
    add("pendulum VHP + REWO, eager", lambda: train_steps_per_s("pendulum", device, budget),
        "steps/s")  # fmt: skip
    add(f"pendulum VHP + REWO, compile={backend}",
        lambda: train_steps_per_s("pendulum", device, budget, backend), "steps/s")  # fmt: skip
    add("MNIST gated VHP + REWO, eager",
        lambda: train_steps_per_s("mnist-gated", device, budget), "steps/s")  # fmt: skip
    add(f"NLL, pendulum MLP VHP, S = {budget.nll_samples}",
        lambda: nll_images_per_s("pendulum", device, budget), "images/s")  # fmt: skip
    add(f"NLL, MNIST gated VHP, S = {budget.nll_samples}",
        lambda: nll_images_per_s("mnist-gated", device, budget), "images/s", ".3f")  # fmt: skip
    add(f"pendulum run end to end, {budget.end_to_end_steps} steps",
        lambda: end_to_end_seconds(device, budget, workdir), "s")  # fmt: skip
    return rows


def table(rows: list[tuple[str, str, str]], device: torch.device, budget: str) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    lines = [
        "# GPU benchmark (`bash bench/gpu.sh`)",
        "",
        f"- Device: {device} ({name or 'cpu'}); torch {torch.__version__}; budget `{budget}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| what | value | unit |",
        "|---|---:|---|",
        *(f"| {what} | {value} | {unit} |" for what, value, unit in rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "GPU_RESULTS.md")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vhp-gpu-bench"))
    args = parser.parse_args(argv)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if device.type == "cpu" and args.budget == "full":
        parser.error("the full budget is for a GPU (hours on a CPU); use --budget tiny")
    os.environ.setdefault("WANDB_MODE", "offline")
    args.workdir.mkdir(parents=True, exist_ok=True)
    text = table(run(device, BUDGETS[args.budget], args.workdir), device, args.budget)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text + f"\nwritten to {args.out}")
    return args.out


if __name__ == "__main__":
    main()
