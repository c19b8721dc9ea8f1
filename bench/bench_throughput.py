"""Training throughput and peak memory: our Lightning loop vs a plain PyTorch loop vs pythae.

Run: ``.venv/bin/python bench/bench_throughput.py [--quick] [--repeats 3] [--threads 1]``.

For each model (``pendulum-mlp``: model=vhp, MLP nets, on 16x16 pendulum images, batch 128;
``mnist-gated``: model=vhp, gated nets, on 28x28 random binary images, batch 100; sizes, batch,
lr and REWO's constants come from the composed Hydra config) every *loop* trains in its own
subprocess:

* ``ours``: ``VHPModule`` + the ``REWO`` callback + ``pl.Trainer`` with no logger, checkpoint,
  progress bar or model summary (the training loop alone);
* ``ours-log``: the same with our default logging (``CSVLogger``, ``log_every_n_steps`` of
  ``conf/trainer/default.yaml``);
* ``plain``: the same VHP object trained by a hand-written loop: ``model.loss``, ``backward``,
  the two Adam optimisers, the REWO update of eq. 11 -- the work of ``ours`` without Lightning;
* ``ours-fused`` / ``ours-compile``: ``ours`` with the opt-in fused Adam
  (``optim/optimizer=adam_fused``), and with it the loss under ``compile=inductor`` (the first
  steps compile; they are among the untimed warm-up steps);
* ``ours-vae``: the ``ours`` loop on our one-layer ``VAE`` (same encoder/decoder/likelihood, no
  prior nets): the like-for-like partner of ``pythae-vae``;
* ``pythae-vae`` / ``pythae-iwae`` / ``pythae-vamp``: pythae's models on our encoder/decoder
  (``pythae_models.py``), trained by pythae's own ``BaseTrainer.train_step`` (one epoch of its
  loop: its DataLoader, forward, one Adam step, ``loss.item()``, its callbacks);
* ``ours-vae-fused`` / ``ours-vae-compile``: ``ours-vae`` with the same two opt-ins.

REWO runs with kappa = 1 (any C < 1 holds for data in [0, 1]) so the main phase starts at step 1:
both of our optimisers step every iteration, the expensive case of Alg. 1. Each child records
``time.perf_counter()`` and ``time.process_time()`` at the end of every step; steps/s (wall
clock) and steps per CPU-second are taken over the steps after the warm-up steps, so imports,
model building and the first steps are not timed. Peak RSS is the child's own high-water mark
(``VmHWM``), data included; the ``torch`` row is a child that only imports torch and loads the
data. *% of sgemm peak*: the matmul/convolution FLOPs of one step (forward + backward, counted by
``FlopCounterMode``; ``flops.py``) times steps per CPU-second, over the best float32 1024 x 1024
matmul rate of the same child, measured for 0.5 s before and after its timed steps. Repeats are
interleaved (the loop order rotates each repeat); the table shows medians, and "ours / loop" is
the ratio of median steps/s (< 1: ours is slower), by wall clock and by CPU time. On a shared
machine the CPU-time ratio is the steadier one: it does not count the time the process waits for
a core.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LOOPS = (
    "ours",
    "ours-log",
    "plain",
    "ours-fused",
    "ours-compile",
    "ours-vae",
    "ours-vae-fused",
    "ours-vae-compile",
    "pythae-vae",
    "pythae-iwae",
    "pythae-vamp",
)
OPT_INS = ("ours-fused", "ours-compile", "ours-vae-fused", "ours-vae-compile")
LOOP_LABELS = {
    "torch": "`import torch` + data only (RSS floor)",
    "ours": "**ours**: Trainer + VHPModule + REWO, no logger",
    "ours-log": "ours + CSVLogger (default logging)",
    "plain": "plain PyTorch loop, same VHP + REWO",
    "ours-fused": "ours, opt-in fused Adam (`optim/optimizer=adam_fused`)",
    "ours-compile": "ours, opt-ins fused Adam + `compile=inductor`",
    "ours-vae": "ours with our VAE model (no prior nets)",
    "ours-vae-fused": "ours-vae, opt-in fused Adam",
    "ours-vae-compile": "ours-vae, opt-ins fused Adam + `compile=inductor`",
    "pythae-vae": "pythae VAE, BaseTrainer",
    "pythae-iwae": "pythae IWAE, BaseTrainer",
    "pythae-vamp": "pythae VAMP, BaseTrainer",
}
PEAK_SECONDS = 0.5  # sgemm peak measured this long before and after each timed loop
BENCH_KAPPA = 1.0  # REWO's main phase from step 1 (see the module docstring)
MNIST_PIXEL_MEAN = 0.13  # random binary images with MNIST's ink density


@dataclass(frozen=True)
class Setting:
    """One benchmarked model: Hydra options, the default protocol and pythae's model sizes."""

    name: str
    dataset: str
    model: str
    warmup: int  # untimed steps of each run
    steps: int  # timed steps of each run
    repeats: int  # runs of each loop, interleaved
    iwae_samples: int  # pythae IWAE's K (decoder passes per image)
    vamp_components: int  # pythae VAMP's M pseudo-inputs
    skip: tuple[str, ...] = ()  # loops not run for this model by default


SETTINGS = {
    # 55 steps: the CSV logger (every 50 steps) writes once inside the timed window.
    "pendulum-mlp": Setting("pendulum-mlp", "pendulum", "vhp", 5, 50, 3, 16, 500),
    # About 1 s a step on one core: per-step overheads (ours-log's included, measured on the
    # pendulum) vanish next to it, but one timed step alone is too noisy for a 5 % target (it
    # read ours / plain = 0.92 where 4 steps x 3 repeats read 0.98); pythae IWAE costs K decoder
    # passes a step (K = 16 would take about 20 s).
    # The opt-ins (fused Adam, compile) are measured on the pendulum only: next to a 1 s step of
    # convolutions the optimiser is < 1 %, and inductor would compile the gated nets for minutes.
    "mnist-gated": Setting("mnist-gated", "mnist", "vhp", 1, 3, 3, 2, 500, ("ours-log", *OPT_INS)),
}
Stamp = tuple[float, float]  # (wall clock, process CPU time) at the end of a step
# A loop's result: its per-step end times, and one forward + backward of its model on one batch
# (called once after the timed steps, to count the FLOPs of a step).
LoopResult = tuple[list[Stamp], Callable[[], object]]
QUICK = {"batch_size": {"mnist-gated": 4}, "iwae_samples": 2, "vamp_components": 10}


# --- parent: compose configs, spawn children, aggregate -----------------------------------------
def resolve_setting(setting: Setting, batch_size: int | None = None) -> dict[str, Any]:
    """Compose ``train.yaml`` with the setting's dataset/model; return what the children need."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import vhp_lightning.io.config  # noqa: F401  (registers the ``prod`` resolver)

    overrides = [
        f"dataset={setting.dataset}",
        f"model={setting.model}",
        "optim=rewo",
        f"optim.kappa={BENCH_KAPPA}",
    ]
    if batch_size:
        overrides.append(f"dataset.batch_size={batch_size}")
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vhp_lightning.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        fused = compose("train", overrides=[*overrides, "optim/optimizer=adam_fused"])
    GlobalHydra.instance().clear()
    likelihood = str(cfg.model.likelihood["_target_"])
    return {
        "setting": setting.name,
        "dataset": setting.dataset,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "scheme": OmegaConf.to_container(cfg.optim.scheme, resolve=True),
        "lr": float(cfg.optim.optimizer.lr),
        "optimizer": OmegaConf.to_container(cfg.optim.optimizer, resolve=True),
        "optimizer_fused": OmegaConf.to_container(fused.optim.optimizer, resolve=True),
        "batch_size": int(cfg.dataset.batch_size),
        "data_shape": [int(d) for d in cfg.dataset.data_shape],
        "latent_dim": int(cfg.paper.latent_dim),
        "bernoulli": likelihood.endswith("BernoulliLikelihood"),
        "log_every_n_steps": int(cfg.trainer.log_every_n_steps),
    }


def make_data(dataset: str, n: int, data_shape: list[int], seed: int = 0) -> torch.Tensor:
    """``(n, *data_shape)`` training images: rendered pendulums or random binary 'MNIST'."""
    gen = torch.Generator().manual_seed(seed)
    if dataset == "pendulum":
        from vhp_lightning.datamodules.pendulum import render_pendulum

        return render_pendulum(torch.rand(n, generator=gen) * 2 * math.pi, size=data_shape[-1])
    probs = torch.full((n, *data_shape), MNIST_PIXEL_MEAN)
    return torch.bernoulli(probs, generator=gen)


def run_child(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one loop in a fresh interpreter (``OMP_NUM_THREADS`` set); return its result."""
    tag = f"{spec['setting']}-{spec['loop']}-{spec['repeat']}"
    spec_path, log_path = workdir / f"{tag}.spec.json", workdir / f"{tag}.log"
    spec_path.write_text(json.dumps({**spec, "workdir": str(workdir)}))
    threads = str(spec["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)]
    with log_path.open("w") as log:
        code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    result_path = _result_path(spec_path)
    if code != 0 or not result_path.exists():
        raise RuntimeError(f"{tag} failed (exit {code}):\n{log_path.read_text()[-3000:]}")
    return json.loads(result_path.read_text())


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """All models x loops x repeats, interleaved; one aggregated row per (model, loop)."""
    loops = list(dict.fromkeys(args.loops))
    if any(loop.startswith("pythae") for loop in loops) and not importlib.util.find_spec("pythae"):
        print("pythae is not installed: skipping its loops (pip install -e '.[bench]')")
        loops = [loop for loop in loops if not loop.startswith("pythae")]
    settings = [SETTINGS[name] for name in args.models]
    raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="vhp-bench-") as tmp:
        workdir = Path(tmp)
        specs = {s.name: _spec(s, args, workdir) for s in settings}
        for name, spec in specs.items():
            raw[(name, "torch")] = [run_child({**spec, "loop": "torch", "repeat": 0}, workdir)]
        for repeat in range(max(spec["repeats"] for spec in specs.values())):
            order = loops[repeat % len(loops) :] + loops[: repeat % len(loops)]
            for name, spec in specs.items():
                if repeat >= spec["repeats"]:
                    continue
                for loop in order:
                    if loop in spec["skip"]:
                        continue
                    result = run_child({**spec, "loop": loop, "repeat": repeat}, workdir)
                    raw.setdefault((name, loop), []).append(result)
                    print(
                        f"  [{repeat + 1}/{spec['repeats']}] {name:13s} {loop:12s} "
                        f"{result['steps_per_s']:8.3f} steps/s {result['peak_rss_mib']:6.0f} MiB",
                        flush=True,
                    )
    return aggregate(raw, specs)


def _spec(setting: Setting, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """What every child of ``setting`` needs: resolved config, protocol, data file."""
    batch = QUICK["batch_size"].get(setting.name) if args.quick else None
    spec = resolve_setting(setting, batch)
    spec["warmup"] = args.warmup or (1 if args.quick else setting.warmup)
    spec["steps"] = args.steps or (2 if args.quick else setting.steps)
    spec["repeats"] = args.repeats or (1 if args.quick else setting.repeats)
    spec["iwae_samples"] = args.iwae_samples or (
        QUICK["iwae_samples"] if args.quick else setting.iwae_samples
    )
    spec["vamp_components"] = args.vamp_components or (
        QUICK["vamp_components"] if args.quick else setting.vamp_components
    )
    spec["threads"], spec["seed"] = args.threads, 0
    spec["skip"] = [] if args.loops_given else list(setting.skip)
    n = spec["batch_size"] * (spec["warmup"] + spec["steps"])
    data_path = workdir / f"{setting.name}.data.pt"
    torch.save(make_data(setting.dataset, n, spec["data_shape"]), data_path)
    spec["data_path"] = str(data_path)
    return spec


def aggregate(
    raw: dict[tuple[str, str], list[dict[str, Any]]], specs: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Medians per (setting, loop) and ratios against ``ours`` of the same setting."""
    rows = []
    for (setting, loop), results in raw.items():
        timed = [r for r in results if math.isfinite(r["steps_per_s"])]
        rates = [r["steps_per_s"] for r in timed]
        cpu_rates = [r["steps_per_cpu_s"] for r in timed]
        # Counted FLOPs at the process's CPU-time rate over its own sgemm peak, per run.
        fractions = [r["gflop_per_step"] * r["steps_per_cpu_s"] / r["peak_gflops"] for r in timed]
        peaks = [r["peak_gflops"] for r in timed]
        spec = specs[setting]
        rows.append(
            {
                "model": setting,
                "loop": loop,
                "batch": spec["batch_size"],
                "threads": spec["threads"],
                "warmup": spec["warmup"],
                "steps": spec["steps"],
                "repeats": len(results),
                "iwae_samples": spec["iwae_samples"],
                "vamp_components": spec["vamp_components"],
                "steps_per_s": statistics.median(rates) if rates else None,
                "steps_per_s_min": min(rates) if rates else None,
                "steps_per_s_max": max(rates) if rates else None,
                "images_per_s": statistics.median(rates) * spec["batch_size"] if rates else None,
                "steps_per_cpu_s": statistics.median(cpu_rates) if rates else None,
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in results),
                "gflop_per_step": timed[0]["gflop_per_step"] if timed else None,
                "peak_gflops": statistics.median(peaks) if rates else None,
                "fraction_of_peak": statistics.median(fractions) if rates else None,
            }
        )
    for row in rows:
        ours = next((r for r in rows if r["model"] == row["model"] and r["loop"] == "ours"), None)
        for key, name in (("steps_per_s", "ours_over_loop"), ("steps_per_cpu_s", "ours_over_cpu")):
            have = ours and ours[key] and row[key]
            row[name] = ours[key] / row[key] if have else None
    order = {name: i for i, name in enumerate(["torch", *LOOPS])}
    return sorted(rows, key=lambda r: (list(SETTINGS).index(r["model"]), order[r["loop"]]))


COLUMNS = (
    "model",
    "loop",
    "batch",
    "threads",
    "steps/s",
    "images/s",
    "steps/s min-max",
    "steps/CPU-s",
    "ours / loop (wall)",
    "ours / loop (CPU)",
    "GFLOP/step",
    "% of sgemm peak (CPU)",
    "peak RSS (MiB)",
)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows of ``run`` as one markdown table."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 2 + "---:|" * (len(COLUMNS) - 2)]
    for r in rows:
        spread = (
            f"{r['steps_per_s_min']:.3g}-{r['steps_per_s_max']:.3g}" if r["steps_per_s"] else "-"
        )
        cells = [
            r["model"],
            LOOP_LABELS[r["loop"]],
            str(r["batch"]),
            str(r["threads"]),
            num(r["steps_per_s"], ".3g"),
            num(r["images_per_s"], ".0f"),
            spread,
            num(r["steps_per_cpu_s"], ".3g"),
            num(r["ours_over_loop"], ".2f"),
            num(r["ours_over_cpu"], ".2f"),
            num(r["gflop_per_step"], ".3g"),
            "-" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.0f} %",
            num(r["peak_rss_mib"], ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- child: one loop in one process -------------------------------------------------------------
def child_main(spec_path: str) -> None:
    """Train one loop as ``spec`` says; write ``{steps_per_s, ...}`` beside the spec."""
    from flops import counted_flops, sgemm_peak_gflops  # bench/ is sys.path[0] of a child

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(int(spec["threads"]))
    # Every loop runs as our train CLI does by default (flush_denormal: true in conf/train.yaml):
    # the comparison is of the loops, not of the CPU's denormal handling.
    torch.set_flush_denormal(True)
    torch.manual_seed(int(spec["seed"]))
    data = torch.load(spec["data_path"], weights_only=True)
    result: dict[str, Any] = {"loop": spec["loop"], "steps_per_s": math.nan, "steps_per_cpu_s": 0}
    if spec["loop"] == "torch":
        result["peak_rss_mib"] = peak_rss_mib()
    else:
        peak = sgemm_peak_gflops(seconds=PEAK_SECONDS)  # before and after the loop: the best
        times, one_step = CHILD_LOOPS[spec["loop"]](spec, data)
        result["peak_rss_mib"] = peak_rss_mib()  # before the measurements below allocate
        warmup = int(spec["warmup"])
        if len(times) != warmup + int(spec["steps"]):
            raise RuntimeError(f"expected {warmup + spec['steps']} steps, timed {len(times)}")
        result["steps_per_s"], result["steps_per_cpu_s"] = rates(times, warmup)
        result["peak_gflops"] = max(peak, sgemm_peak_gflops(seconds=PEAK_SECONDS))
        result["gflop_per_step"] = counted_flops(one_step) / 1e9
    tmp = Path(spec_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(_result_path(Path(spec_path)))


def rates(times: list[Stamp], warmup: int) -> tuple[float, float]:
    """Steps per second and per CPU-second over the steps after the first ``warmup`` (>= 1)."""
    (wall0, cpu0), (wall1, cpu1) = times[warmup - 1], times[-1]
    return (len(times) - warmup) / (wall1 - wall0), (len(times) - warmup) / (cpu1 - cpu0)


def _result_path(spec_path: Path) -> Path:
    return spec_path.with_name(spec_path.name.replace(".spec.json", ".result.json"))


def peak_rss_mib() -> float:
    """This process's peak resident set size (``VmHWM``; reset at ``exec``, unlike the
    ``ru_maxrss`` a parent sees, which can include the forked parent's pages)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_stamp() -> Stamp:
    """(wall clock, CPU time of this process) at the end of a step."""
    return time.perf_counter(), time.process_time()


def _loader(spec: dict[str, Any], data: torch.Tensor) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(data)
    return torch.utils.data.DataLoader(dataset, batch_size=spec["batch_size"], shuffle=True)


def build_model(spec: dict[str, Any], vae: bool = False) -> torch.nn.Module:
    """The setting's VHP, or (``vae``) our VAE on the same encoder, decoder and likelihood."""
    from hydra.utils import instantiate

    if not vae:
        return instantiate(spec["model"])
    from vhp_lightning.models.vae import VAE

    return VAE(*(instantiate(spec["model"][k]) for k in ("encoder", "decoder", "likelihood")))


def plain_optimizers(spec: dict[str, Any], model: torch.nn.Module) -> list[torch.optim.Optimizer]:
    """The config's optimiser over theta/phi, and a second one over Theta/Phi if the model has
    a learned prior."""
    from hydra.utils import instantiate

    groups = [list(model.vae_parameters()), list(model.prior_parameters())]
    return [instantiate(spec["optimizer"])(params) for params in groups if params]


def train_ours(
    spec: dict[str, Any],
    data: torch.Tensor,
    log: bool = False,
    vae: bool = False,
    fused: bool = False,
    compiled: bool = False,
) -> LoopResult:
    """``pl.Trainer.fit`` of ``VHPModule`` + ``REWO`` (on the VHP, or on our VAE with the same
    encoder/decoder if ``vae``) with the config's optimiser (``conf/optim/optimizer/
    adam_fused.yaml`` if ``fused``; the loss under ``torch.compile``'s inductor if
    ``compiled``); per-step end times."""
    import warnings

    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import CSVLogger

    from vhp_lightning.module import VHPModule

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")

    class StepClock(pl.Callback):
        def __init__(self) -> None:
            self.times: list[Stamp] = []

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            self.times.append(step_stamp())

    clock = StepClock()
    model = build_model(spec, vae)
    optimizer = instantiate(spec["optimizer_fused" if fused else "optimizer"])
    backend = "inductor" if compiled else None
    module = VHPModule(model, optimizer=optimizer, compile_backend=backend)
    logger = CSVLogger(spec["workdir"], name=f"csv-{spec['setting']}") if log else False
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=int(spec["warmup"]) + int(spec["steps"]),
        max_epochs=-1,
        logger=logger,
        log_every_n_steps=spec["log_every_n_steps"],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[instantiate(spec["scheme"]), clock],
    )
    trainer.fit(module, train_dataloaders=_loader(spec, data))
    x = data[: spec["batch_size"]]
    return clock.times, lambda: model.loss(x, beta=module.beta)["loss"].backward()


def train_plain(spec: dict[str, Any], data: torch.Tensor, vae: bool = False) -> LoopResult:
    """The same VHP (or, if ``vae``, our VAE) and Alg. 1 by hand: the config's Adam optimisers
    (``plain_optimizers``), eq. 11 for beta; per-step end times.

    The beta update is eq. 11/12 as in ``callbacks/rewo.py`` (restated here so that this process
    does not import Lightning, which ``vhp_lightning.callbacks`` does); ``tests/test_bench.py``
    checks that the two agree.
    """
    model = build_model(spec, vae)
    vae_opt, *prior_opts = plain_optimizers(spec, model)
    scheme = spec["scheme"]
    kappa_sq, alpha = float(scheme["kappa"]) ** 2, float(scheme["alpha"])
    beta, train_prior, c_hat = float(scheme["beta_init"]), False, None
    times: list[Stamp] = []
    model.train()
    for (x,) in _loader(spec, data):
        parts = model.loss(x, beta=beta)
        for opt in (vae_opt, *prior_opts):
            opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        vae_opt.step()
        if train_prior:
            for opt in prior_opts:
                opt.step()
        c_ba = float(parts["constraint"])
        c_hat = c_ba if c_hat is None else (1 - alpha) * c_ba + alpha * c_hat
        train_prior = train_prior or c_hat < kappa_sq
        if train_prior:
            beta = rewo_beta(beta, c_hat - kappa_sq, float(scheme["nu"]), float(scheme["tau"]))
        times.append(step_stamp())
    x = data[: spec["batch_size"]]
    return times, lambda: model.loss(x, beta=beta)["loss"].backward()


def rewo_beta(beta: float, delta: float, nu: float, tau: float) -> float:
    """Eq. 11: beta * exp(nu * f_beta * delta), f_beta of eq. 12, clamped to [1e-12, 1]."""
    f_beta = -1.0 if delta > 0 else math.tanh(tau * (beta - 1.0))
    return math.exp(min(max(math.log(beta) + nu * f_beta * delta, math.log(1e-12)), 0.0))


def train_pythae(spec: dict[str, Any], data: torch.Tensor) -> LoopResult:
    """pythae's ``BaseTrainer.train_step`` (one epoch) on our nets; per-step end times."""
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class StepClock(TrainingCallback):
        def __init__(self) -> None:
            self.times: list[Stamp] = []

        def on_train_step_end(self, training_config: Any, **kwargs: Any) -> None:
            self.times.append(step_stamp())

    model = build_pythae_model(spec, spec["loop"].removeprefix("pythae-"))
    clock = StepClock()
    config = BaseTrainerConfig(
        output_dir=str(Path(spec["workdir"]) / "pythae"),
        per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["lr"],
        num_epochs=1,
        no_cuda=True,
    )
    dataset = BaseDataset(data, torch.zeros(len(data)))
    trainer = BaseTrainer(model, dataset, training_config=config, callbacks=[clock])
    trainer.prepare_training()
    trainer.train_step(epoch=1)
    x = data[: spec["batch_size"]]
    return clock.times, lambda: model({"data": x}).loss.backward()


def build_pythae_model(spec: dict[str, Any], kind: str) -> torch.nn.Module:
    """pythae's ``kind`` model (``vae`` | ``iwae`` | ``vamp``) on the setting's encoder/decoder."""
    from hydra.utils import instantiate
    from pythae_models import build_pythae  # bench/ is sys.path[0] of a child

    return build_pythae(
        kind,
        instantiate(spec["model"]["encoder"]),
        instantiate(spec["model"]["decoder"]),
        spec["data_shape"],
        spec["latent_dim"],
        spec["bernoulli"],
        iwae_samples=spec.get("iwae_samples", 16),
        vamp_components=spec.get("vamp_components", 500),
    )


CHILD_LOOPS = {
    "ours": train_ours,
    "ours-log": lambda spec, data: train_ours(spec, data, log=True),
    "plain": train_plain,
    "ours-fused": lambda spec, data: train_ours(spec, data, fused=True),
    "ours-compile": lambda spec, data: train_ours(spec, data, fused=True, compiled=True),
    "ours-vae": lambda spec, data: train_ours(spec, data, vae=True),
    "ours-vae-fused": lambda spec, data: train_ours(spec, data, vae=True, fused=True),
    "ours-vae-compile": lambda spec, data: train_ours(
        spec, data, vae=True, fused=True, compiled=True
    ),
    "pythae-vae": train_pythae,
    "pythae-iwae": train_pythae,
    "pythae-vamp": train_pythae,
}


# --- CLI ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 repeat, 2 timed steps, tiny pythae"
    )
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--loops", nargs="+", default=None, choices=list(LOOPS), help="default: all but skips"
    )
    parser.add_argument("--repeats", type=int, default=None, help="default: per model")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps, >= 1")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per loop")
    parser.add_argument("--iwae-samples", type=int, default=None, help="pythae IWAE's K")
    parser.add_argument("--vamp-components", type=int, default=None, help="pythae VAMP's M")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.loops_given = args.loops is not None
    args.loops = args.loops or list(LOOPS)
    if args.warmup is not None and args.warmup < 1:
        parser.error("--warmup must be >= 1 (the end of the last untimed step starts the clock)")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark, print its markdown table, return its rows."""
    args = parse_args(argv)
    if args.child:
        child_main(args.child)
        return []
    rows = run(args)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
