"""Time the VampPrior's mixture log-density in its two forms, and the VampPrior's test NLL.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_mixture.py [--quick]`` (about a minute).

1. The kernel: ``mixture_log_prob`` (elementwise ``(N, M, D)``, what training uses) against
   ``mixture_log_prob_expanded`` (two float64 matmuls, what ``VampPrior.log_likelihood`` uses) at
   the Table 2 shape N = 20 000 rows, M = 500 components, D = 32; the two alternate, median of
   the repeats, per CPU-second of this process; with the largest difference to a float64
   elementwise reference.
2. End to end: ``VampPrior.log_likelihood`` (``model=vampprior`` with ``paper/nets=mlp`` on
   ``dataset=mnist``, untrained: the cost does not depend on the weights) on random binary images
   with S = 5000, once with ``log_prior`` forced to the elementwise form (the code before
   2026-12-07) and once as shipped.

``main(argv) -> list[dict]`` is what ``bench/run_all.py`` calls.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

import vhp_lightning.io.config  # noqa: F401  (registers the resolvers)
from vhp_lightning.models import vampprior
from vhp_lightning.models.vampprior import mixture_log_prob, mixture_log_prob_expanded


def cpu_seconds(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def kernel_rows(n: int, m: int, d: int, repeats: int) -> list[dict[str, Any]]:
    """Both forms on random inputs of the given shape, alternating; one row each."""
    g = torch.Generator().manual_seed(0)
    z = 1.5 * torch.randn(n, d, generator=g)
    means, logvars = torch.randn(m, d, generator=g), 1.5 * torch.randn(m, d, generator=g) - 1
    ref = mixture_log_prob(z.double(), means.double(), logvars.double())
    forms = {"elementwise (float32)": mixture_log_prob, "expanded (float64 matmuls)":
             mixture_log_prob_expanded}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in forms}
    for _ in range(repeats):
        for name, fn in forms.items():
            times[name].append(cpu_seconds(lambda fn=fn: fn(z, means, logvars)))
    return [
        {
            "what": f"mixture, {n} x {m} x {d}",
            "form": name,
            "cpu_s": statistics.median(times[name]),
            "max_abs_diff": float((fn(z, means, logvars).double() - ref).abs().max()),
        }
        for name, fn in forms.items()
    ]


def vampprior_model() -> torch.nn.Module:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vhp_lightning.conf", version_base="1.3"):
        cfg = compose("train", overrides=["dataset=mnist", "model=vampprior", "paper/nets=mlp"])
        model = instantiate(cfg.model)
    GlobalHydra.instance().clear()
    return model.eval()


def nll_rows(images: int, samples: int) -> list[dict[str, Any]]:
    """``VampPrior.log_likelihood`` of ``images`` random binary images, both forms."""
    torch.manual_seed(0)
    model = vampprior_model()
    x = (torch.rand(images, 1, 28, 28) < 0.13).float()
    rows, values = [], {}
    original = vampprior.mixture_log_prob_expanded
    for name, form in (("elementwise (float32)", mixture_log_prob), ("expanded", original)):
        vampprior.mixture_log_prob_expanded = form  # what log_prior calls inside log_likelihood
        try:
            torch.manual_seed(1)
            start = time.process_time()
            values[name] = model.log_likelihood(x, n_samples=samples)
            seconds = time.process_time() - start
        finally:
            vampprior.mixture_log_prob_expanded = original
        rows.append({"what": f"VampPrior NLL, {images} images x S = {samples}", "form": name,
                     "cpu_s": seconds, "max_abs_diff": None})  # fmt: skip
    rows[-1]["max_abs_diff"] = float(
        (values["expanded"] - values["elementwise (float32)"]).abs().max()
    )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "| what | form | CPU seconds (median) | old / new | largest difference (nats) |",
        "|---|---|---:|---:|---:|",
    ]
    for i, r in enumerate(rows):
        ratio = f"{rows[i - 1]['cpu_s'] / r['cpu_s']:.1f}x" if i % 2 else ""
        diff = "" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2g}"
        out.append(f"| {r['what']} | {r['form']} | {r['cpu_s']:.2f} | {ratio} | {diff} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, one repeat")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as vhp_lightning.evaluate does by default
    if args.quick:
        rows = kernel_rows(2000, 50, 32, 1) + nll_rows(1, 200)
    else:
        rows = kernel_rows(20_000, 500, 32, 5) + nll_rows(5, 5000)
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
