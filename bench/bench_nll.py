"""Time the importance-sampled test NLL (sec. 4.3, Table 2) on the CPU.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python bench/bench_nll.py --data-dir ../shared/data``
(a few minutes at the defaults). For each model it evaluates ``--images`` MNIST test images with
``--samples`` importance samples (the paper's S = 5000), counts the FLOPs of one sample with
``torch.utils.flop_counter`` and reports images/s, achieved GFLOP/s and the fraction of a float32
matmul peak measured in the same process, plus the projected time of the full protocol
(10 000 images x 5000 samples). Without ``--data-dir`` (or ``$VHP_DATA_DIR``) it uses random
binary images: the cost does not depend on the pixel values. Models are untrained (random
weights), which does not change the cost either.

``main(argv) -> list[dict]`` is what ``bench/run_all.py`` calls.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

import vhp_lightning.io.config  # noqa: F401  (registers the resolvers)
from vhp_lightning.analysis.nll import MeanNLL, log_likelihood_batched

FULL_IMAGES, FULL_SAMPLES = 10_000, 5_000  # the paper's protocol on the MNIST test set
# (model config, images evaluated by default): the gated-conv decoder is ~1000x dearer per sample.
DEFAULT_MODELS = ("vhp_gated:2", "vhp_mlp:100")


def build_model(name: str) -> torch.nn.Module:
    """``model=<name>`` composed with ``dataset=mnist`` (28x28 Bernoulli, latent 32), untrained."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vhp_lightning.conf", version_base="1.3"):
        cfg = compose("train", overrides=["dataset=mnist", f"model={name}"])
        model = instantiate(cfg.model)
    GlobalHydra.instance().clear()
    return model.eval()


def mnist_test_images(n: int, data_dir: str | None) -> tuple[torch.Tensor, str]:
    """The first ``n`` binarised MNIST test images ``(n, 1, 28, 28)`` and where they came from."""
    if data_dir and (Path(data_dir) / "mnist").is_dir():
        from vhp_lightning.datamodules.mnist import MNISTDataModule

        dm = MNISTDataModule(data_dir=data_dir, eval_batch_size=n)
        dm.setup("test")
        return next(iter(dm.test_dataloader()))[0], f"MNIST test set ({data_dir})"
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 1, 28, 28, generator=g) < 0.13).float(), "random binary images"


def matmul_peak_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """Best float32 ``n x n`` matmul rate over ~``seconds`` (2 n^3 FLOPs each), GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def flops_per_sample(model: torch.nn.Module, x: torch.Tensor, samples: int = 64) -> float:
    """FLOPs of one importance sample of one image (decoder, prior nets, encoder share)."""
    with FlopCounterMode(display=False) as counter:
        model.log_likelihood(x[:1], n_samples=samples, chunk_size=samples)
    return counter.get_total_flops() / samples


def bench(
    name: str, images: int, samples: int, chunk_size: int, data_dir: str | None, peak: float
) -> dict[str, Any]:
    """Evaluate the NLL of ``images`` test images with S = ``samples``; one result row."""
    torch.manual_seed(0)
    model = build_model(name)
    x, source = mnist_test_images(images, data_dir)
    per_sample = flops_per_sample(model, x)
    log_likelihood_batched(model, x[:1], min(samples, 8), chunk_size)  # warm-up
    metric = MeanNLL()
    start = time.perf_counter()
    metric.update(log_likelihood_batched(model, x, samples, chunk_size))
    seconds = time.perf_counter() - start
    gflops = per_sample * images * samples / seconds / 1e9
    full_hours = FULL_IMAGES * FULL_SAMPLES * per_sample / (gflops * 1e9) / 3600
    return {
        "model": name,
        "images": images,
        "samples": samples,
        "chunk_size": chunk_size,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "gflop_per_sample": per_sample / 1e9,
        "gflops": gflops,
        "peak_gflops": peak,
        "fraction_of_peak": gflops / peak,
        "full_protocol_hours": full_hours,
        "nll": float(metric.compute()),
        "data": source,
        "threads": torch.get_num_threads(),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | images x S | seconds | images/s | GFLOP/sample | GFLOP/s | matmul peak GFLOP/s"
        " | % of peak | 10k x 5000 projected |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['model']} | {r['images']} x {r['samples']} | {r['seconds']:.1f} | "
        f"{r['images_per_s']:.3g} | {r['gflop_per_sample']:.4g} | {r['gflops']:.1f} | "
        f"{r['peak_gflops']:.1f} | {100 * r['fraction_of_peak']:.0f}% | "
        f"{r['full_protocol_hours']:.3g} h |\n"
        for r in rows
    )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible"
    threads = rows[0]["threads"] if rows else torch.get_num_threads()
    note = (
        f"\nCPU: {machine}, torch {torch.__version__}, {threads} threads; data: "
        f"{rows[0]['data'] if rows else '-'}; untrained weights (same cost). Peak = best float32 "
        "1024x1024 matmul in the same process.\n"
    )
    return head + body + note


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="model configs, each optionally with ':<images>' (default: %(default)s)",
    )
    parser.add_argument("--images", type=int, default=None, help="images for every model")
    parser.add_argument("--samples", type=int, default=FULL_SAMPLES, help="S (default 5000)")
    parser.add_argument("--chunk-size", type=int, default=1000, help="images x samples per pass")
    parser.add_argument("--data-dir", default=os.environ.get("VHP_DATA_DIR"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as vhp_lightning.evaluate does by default
    peak = matmul_peak_gflops()
    rows = []
    for spec in args.models:
        name, _, n = spec.partition(":")
        images = args.images or int(n or 10)
        rows.append(bench(name, images, args.samples, args.chunk_size, args.data_dir, peak))
        print(f"{name}: {rows[-1]['images_per_s']:.3g} images/s", file=sys.stderr)
    table = markdown(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(table)
        os.replace(tmp, args.out)
    return rows


if __name__ == "__main__":
    main()
