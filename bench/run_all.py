"""Run every benchmark and write ``bench/RESULTS.md`` (what ``make bench`` runs).

Run: ``.venv/bin/python bench/run_all.py [--quick] [--out bench/RESULTS.md] [--threads 1]``.
About ten minutes on two shared CPU cores (``--quick``: a smoke run of a minute or two).

Sections, one markdown table each: training throughput and peak RSS (``bench_throughput.py``),
NLL evaluation throughput (``bench_nll.py``, skipped with a note if absent), the VampPrior's
mixture density in its two forms (``bench_mixture.py``), graph building
(``bench_graph.py``), then the gaps (``bench_gaps.py``): the speed targets judged on the rows of
the sections before, each met or its gap with the profile that explains it. The header names
the machine, the command, the date and the load average before and after, since absolute numbers
mean nothing without them; the ratios come from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import os
import platform
import shlex
import sys
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import bench_gaps  # noqa: E402
import bench_throughput  # noqa: E402
from bench_gaps import TARGETS  # noqa: E402

SECTIONS = ("throughput", "nll", "mixture", "graph", "gaps")
Results = dict[str, list[dict[str, Any]]]  # a section's rows, for the gaps section


# --- the machine --------------------------------------------------------------------------------
def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (the platform's processor string elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1/5/15-minute load averages."""
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_lines(threads: int) -> list[str]:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    return [
        f"- CPU: {cpu_model()}, {cores} cores usable{mem}; {platform.system()} "
        f"{platform.release()}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, pytorch-lightning "
        f"{package_version('pytorch-lightning')}, pythae {package_version('pythae')}",
        f"- Threads: {threads} per benchmark process, denormals flushed to zero as in our CLIs "
        "(torch.set_num_threads, OMP_NUM_THREADS, "
        "BLAS thread pools)",
    ]


# --- the sections -------------------------------------------------------------------------------
def throughput_section(args: argparse.Namespace, results: Results) -> str:
    argv = ["--threads", str(args.threads), *(["--quick"] if args.quick else [])]
    if args.models:
        argv += ["--models", *args.models]
    if args.loops:
        argv += ["--loops", *args.loops]
    rows = results["throughput"] = bench_throughput.main(argv)
    first = {r["model"]: r for r in rows if r["loop"] == "ours"}
    protocol = "; ".join(
        f"{m}: batch {r['batch']}, {r['warmup']} untimed + {r['steps']} timed steps x "
        f"{r['repeats']} repeats, pythae IWAE K = {r['iwae_samples']}, VAMP M = "
        f"{r['vamp_components']}"
        for m, r in first.items()
    )
    return "\n".join(
        [
            "## Training throughput and peak memory",
            "",
            f"`bench/bench_throughput.py {shlex.join(argv)}`. {protocol}.",
            "",
            summary(rows),
            "",
            bench_throughput.table(rows),
            "",
            "- *ours / loop*: median steps/s of ours divided by the loop's (< 1: ours is slower;"
            " > 1: faster), by wall clock and by the process's CPU time (*steps/CPU-s*: steps"
            " per CPU-second, which does not count waiting for a core, so it is the steadier"
            " number on a shared machine). Every loop is a separate process; loops alternate,"
            " and their order rotates every repeat, so background load hits all of them alike.",
            "- Same networks everywhere (`model=vhp` with the dataset's nets, `conf/paper/nets/`"
            " mlp / gated), the config's optimiser (`conf/optim/optimizer/adam.yaml`) for ours and"
            " plain, pythae's default Adam at the same lr. REWO with kappa = 1, so its main phase"
            " (both optimisers step) runs from step 1. `plain` is the same VHP object, loss and"
            " two Adam optimisers with eq. 11 in a hand-written loop: ours / plain is the cost of"
            " Lightning + our module + callback.",
            "- pythae: its models on *our* encoder/decoder (`bench/pythae_models.py`), trained by"
            " `BaseTrainer.train_step` after `prepare_training()` (pythae's own loop: its"
            " DataLoader, forward, one Adam step over all parameters, `loss.item()`, its"
            " callbacks incl. the tqdm bar that it always adds). `BaseTrainer.train()` was not"
            " used because it adds per-epoch model saving and file logging, which we exclude"
            " for ours too. pythae's models are one-latent-layer models: VAE (one decoder pass),"
            " IWAE (K decoder passes per image), VAMP (M pseudo-inputs through the encoder every"
            " step); VHP adds K = 16 importance samples through its two prior nets, so ours /"
            " pythae mixes model cost with framework cost. `ours-vae` (our VAE, same nets,"
            " through the same Lightning loop) against `pythae-vae` is the like-for-like pair.",
            "- mnist-gated runs 3 timed steps (about 1 s each on an idle core) and skips"
            " `ours-log`: per-step overheads such as logging are measured on the pendulum, where"
            " steps are short enough for them to show.",
            "- Peak RSS: the process's `VmHWM`, data included; the `torch` row is the floor"
            " (import torch, load the data). Lightning's import alone costs ~300 MiB of it:"
            " `lightning_fabric` imports torchmetrics, which imports torchvision (whose"
            " `ops.roi_align` imports `torch._dynamo` and with it triton and sympy, ~170 MiB) and"
            " `scipy.signal` (~65 MiB); our own modules add < 10 MiB.",
        ]
    )


def summary(rows: list[dict[str, Any]]) -> str:
    """One line per model: the headline ratios ours / plain and ours / pythae, the like-for-like
    VAE pair, how close a step of ours (and of plain) comes to the same-process sgemm peak and
    the peak RSS against the plain loop, each with its target."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        parts = [
            f"ours / {r['loop']} = **{r['ours_over_loop']:.2f}** (CPU {r['ours_over_cpu']:.2f})"
            + (f" (target >= {TARGETS['plain']} by CPU)" if r["loop"] == "plain" else "")
            for r in rows
            if r["model"] == model and r["loop"] not in ("torch", "ours") and r["ours_over_loop"]
        ]
        lines.append(f"- {model}, steps/s ratios by wall clock (by CPU time): " + ", ".join(parts))
        pair = {r["loop"]: r for r in rows if r["model"] == model}
        if "ours-vae" in pair and "pythae-vae" in pair and pair["pythae-vae"]["steps_per_s"]:
            a, b = pair["ours-vae"], pair["pythae-vae"]
            lines.append(
                f"- {model}, the same VAE in both frameworks: ours-vae / pythae-vae = "
                f"**{a['steps_per_s'] / b['steps_per_s']:.2f}** "
                f"(CPU {a['steps_per_cpu_s'] / b['steps_per_cpu_s']:.2f})"
                f" (target >= {TARGETS['vae']})"
            )
        ours, plain = pair.get("ours"), pair.get("plain")
        if ours and ours["fraction_of_peak"] is not None:
            also = (
                f"; plain loop {100 * plain['fraction_of_peak']:.0f} %"
                if plain and plain["fraction_of_peak"] is not None
                else ""
            )
            target = f" (target >= {TARGETS['step']} %)" if model == "pendulum-mlp" else ""
            lines.append(
                f"- {model}, a step of ours against the hardware: {ours['gflop_per_step']:.3g}"
                f" GFLOP (matmul/conv, forward + backward) x {ours['steps_per_cpu_s']:.3g}"
                f" steps/CPU-s = **{100 * ours['fraction_of_peak']:.0f} %** of the sgemm peak"
                f" ({ours['peak_gflops']:.0f} GFLOP/s, same process){target}{also}"
            )
        if ours and plain:
            rss, rss_plain = ours["peak_rss_mib"], plain["peak_rss_mib"]
            lines.append(
                f"- {model}, peak RSS ours / plain = **{rss / rss_plain:.2f}** ({rss:.0f} /"
                f" {rss_plain:.0f} MiB; target <= {TARGETS['rss']})"
            )
    return "\n".join(lines)


def nll_section(args: argparse.Namespace, results: Results) -> str:
    head = ["## NLL evaluation throughput", ""]
    if not (BENCH_DIR / "bench_nll.py").exists():
        return "\n".join([*head, "_Skipped: `bench/bench_nll.py` is not there yet._"])
    argv = ["--threads", str(args.threads)]
    argv += ["--images", "1", "--samples", "20"] if args.quick else ["--samples", "1000"]
    bench_nll = importlib.import_module("bench_nll")
    rows = results["nll"] = bench_nll.main(argv)
    render = getattr(bench_nll, "markdown", None)
    body = render(rows) if render else generic_table(rows)
    return "\n".join([*head, f"`bench/bench_nll.py {shlex.join(argv)}`", "", body.strip()])


def mixture_section(args: argparse.Namespace, results: Results) -> str:
    import bench_mixture

    argv = ["--threads", str(args.threads), *(["--quick"] if args.quick else [])]
    rows = results["mixture"] = bench_mixture.main(argv)
    return "\n".join(
        [
            "## VampPrior mixture density: elementwise against matmuls",
            "",
            f"`bench/bench_mixture.py {shlex.join(argv)}`: `mixture_log_prob` (training) and"
            " `mixture_log_prob_expanded` (inside `VampPrior.log_likelihood`, since 2026-12-07),"
            " alternating, median CPU seconds; the difference to a float64 elementwise reference"
            " (kernel rows) and between the two NLLs (end-to-end row).",
            "",
            bench_mixture.markdown(rows),
        ]
    )


def graph_section(args: argparse.Namespace, results: Results) -> str:
    import bench_graph
    from threadpoolctl import threadpool_limits

    nodes, neighbors, repeats = (200, 10, 2) if args.quick else (1000, 18, 20)
    with threadpool_limits(args.threads):
        bench_graph.bench(2, 100, 5, repeats=2)  # warm-up: imports, first calls
        timings = {dim: bench_graph.bench(dim, nodes, neighbors, repeats) for dim in (2, 32)}
    lines = [
        "## Graph building and search (sec. 2.3)",
        "",
        f"`bench_graph.bench(dim, {nodes}, {neighbors}, repeats={repeats})`: kNN graph over"
        " standard-normal nodes and one A* path; median of the repeats.",
        "",
        "| latent dim | nodes | neighbours | build graph (ms) | A* path (ms) | total (ms)"
        " | path points |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dim, r in timings.items():
        lines.append(
            f"| {dim} | {nodes} | {neighbors} | {1e3 * r['build']:.1f} | {1e3 * r['search']:.1f}"
            f" | {1e3 * r['total']:.1f} | {r['points']:.0f} |"
        )
    return "\n".join(lines)


def generic_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_no rows_"
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = (f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values())
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def gaps_section(args: argparse.Namespace, results: Results) -> str:
    """Last: judges the targets on the rows of the sections before (missing ones: "not
    measured") and measures what explains each gap."""
    rows, nll_rows = results.get("throughput", []), results.get("nll", [])
    return bench_gaps.section(args.quick, rows, nll_rows, args.threads)


RUNNERS = {
    "throughput": throughput_section,
    "nll": nll_section,
    "mixture": mixture_section,
    "graph": graph_section,
    "gaps": gaps_section,
}


# --- CLI ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke version of everything")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--threads", type=int, default=1, help="threads per benchmark process")
    parser.add_argument("--skip", nargs="+", default=[], choices=SECTIONS)
    parser.add_argument("--models", nargs="+", default=None, help="throughput: models")
    parser.add_argument("--loops", nargs="+", default=None, help="throughput: loops")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)

    command = shlex.join(["python", "bench/run_all.py", *(argv or sys.argv[1:])])
    if os.environ.get("MAKELEVEL"):
        command = f"make bench ARGS={shlex.quote(shlex.join(argv or sys.argv[1:]))}  ({command})"
    started, load_before, t0 = (
        datetime.datetime.now(datetime.timezone.utc),
        load_average(),
        time.time(),
    )
    sections, results = [], {}
    for name in SECTIONS:
        if name in args.skip:
            sections.append(f"## {name}\n\n_Skipped (--skip {name})._")
            continue
        print(f"== {name}", flush=True)
        try:
            sections.append(RUNNERS[name](args, results))
        except Exception:  # one failing benchmark must not lose the others' results
            trace = traceback.format_exc()
            print(trace, file=sys.stderr)
            sections.append(f"## {name}\n\n_Failed:_\n\n```\n{trace[-2000:]}\n```")
    header = [
        "# Benchmarks" + (" (--quick smoke run: numbers are meaningless)" if args.quick else ""),
        "",
        f"Written by `{command}` on {started:%Y-%m-%d %H:%M} UTC in {time.time() - t0:.0f} s.",
        "",
        *machine_lines(args.threads),
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_average()}"
        " (the machine is shared: absolute numbers are only indicative; the ratios compare"
        " runs interleaved under the same load)",
    ]
    text = "\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.out)  # atomic: a reader never sees half a file
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
