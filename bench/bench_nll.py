"""Time the importance-sampled test NLL (sec. 4.3, Table 2) on the CPU.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python bench/bench_nll.py --data-dir ../shared/data``
(a few minutes at the defaults). For each model it evaluates ``--images`` MNIST test images with
``--samples`` importance samples (the paper's S = 5000), counts the FLOPs of one sample with
``torch.utils.flop_counter`` and reports images/s, achieved GFLOP/s and the fraction of a float32
matmul peak measured in the same process, plus the projected time of the full protocol
(10 000 images x 5000 samples). Rates are per CPU-second of this process (one thread by
default), which a shared machine disturbs less than the wall clock (also reported), against the
best matmul rate measured right before and after each model. Without ``--data-dir`` (or
``$VHP_DATA_DIR``) it uses random binary images: the cost does not depend on the pixel values.
Models are untrained (random weights), which does not change the cost either.

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

import vhp_lightning.io.config  # noqa: F401  (registers the resolvers)
from vhp_lightning.analysis.nll import MeanNLL, log_likelihood_batched

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import counted_flops, sgemm_peak_gflops  # noqa: E402

FULL_IMAGES, FULL_SAMPLES = 10_000, 5_000  # the paper's protocol on the MNIST test set
# (VHP nets, paper/nets=<name>; images evaluated by default): the gated-conv decoder is ~1000x
# dearer per sample.
DEFAULT_MODELS = ("gated:2", "mlp:100")


def build_model(name: str) -> torch.nn.Module:
    """The VHP with ``paper/nets=<name>`` on ``dataset=mnist`` (28x28, latent 32), untrained."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vhp_lightning.conf", version_base="1.3"):
        cfg = compose("train", overrides=["dataset=mnist", "model=vhp", f"paper/nets={name}"])
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


def flops_per_sample(model: torch.nn.Module, x: torch.Tensor, samples: int = 64) -> float:
    """FLOPs of one importance sample of one image (decoder, prior nets, encoder share)."""
    return counted_flops(lambda: model.log_likelihood(x[:1], samples, chunk_size=samples)) / samples


def bench(
    name: str, images: int, samples: int, chunk_size: int, data_dir: str | None
) -> dict[str, Any]:
    """Evaluate the NLL of ``images`` test images with S = ``samples``; one result row."""
    torch.manual_seed(0)
    model = build_model(name)
    x, source = mnist_test_images(images, data_dir)
    per_sample = flops_per_sample(model, x)
    log_likelihood_batched(model, x[:1], min(samples, 8), chunk_size)  # warm-up
    metric = MeanNLL()
    peak = sgemm_peak_gflops()
    start, cpu_start = time.perf_counter(), time.process_time()
    metric.update(log_likelihood_batched(model, x, samples, chunk_size))
    cpu_seconds = time.process_time() - cpu_start
    seconds = time.perf_counter() - start
    peak = max(peak, sgemm_peak_gflops())
    gflops = per_sample * images * samples / cpu_seconds / 1e9
    full_hours = FULL_IMAGES * FULL_SAMPLES * per_sample / (gflops * 1e9) / 3600
    return {
        "model": name,
        "images": images,
        "samples": samples,
        "chunk_size": chunk_size,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "images_per_s": images / seconds,
        "images_per_cpu_s": images / cpu_seconds,
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
        "| model | images x S | seconds (CPU) | images/CPU-s | GFLOP/sample | GFLOP/CPU-s |"
        " matmul peak GFLOP/s | % of peak | 10k x 5000 projected |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['model']} | {r['images']} x {r['samples']} | {r['seconds']:.1f}"
        f" ({r['cpu_seconds']:.1f}) | {r['images_per_cpu_s']:.3g} | {r['gflop_per_sample']:.4g} |"
        f" {r['gflops']:.1f} | "
        f"{r['peak_gflops']:.1f} | {100 * r['fraction_of_peak']:.0f}% | "
        f"{r['full_protocol_hours']:.3g} h |\n"
        for r in rows
    )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible"
    threads = rows[0]["threads"] if rows else torch.get_num_threads()
    note = (
        f"\nCPU: {machine}, torch {torch.__version__}, {threads} threads; data: "
        f"{rows[0]['data'] if rows else '-'}; untrained weights (same cost). Peak = best float32 "
        "1024x1024 matmul in the same process, before and after each model; rates per CPU-second."
        " Targets: >= 70 % of peak for the MLP (the 10k x 5000 protocol in <= 45 min),"
        " >= 50 % for the gated convolutions.\n"
    )
    return head + body + note


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="VHP nets (paper/nets=...), each optionally with ':<images>' (default: %(default)s)",
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
    rows = []
    for spec in args.models:
        name, _, n = spec.partition(":")
        images = args.images or int(n or 10)
        rows.append(bench(name, images, args.samples, args.chunk_size, args.data_dir))
        print(f"{name}: {rows[-1]['images_per_cpu_s']:.3g} images/CPU-s", file=sys.stderr)
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
