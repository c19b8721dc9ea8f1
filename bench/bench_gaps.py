"""Where the time and memory go: the speed targets, and the measurements that explain each gap.

Run: ``.venv/bin/python bench/bench_gaps.py [--quick] [--threads 1]`` prints the section (about a
minute of CPU; ``--quick``: seconds). ``bench/run_all.py`` runs it after the throughput and NLL
sections and passes their rows in, so that ``verdicts`` judges every target on the numbers of
the same run and names the measurement below that explains each gap:

* ``decompose``: one pendulum training step (``bench_throughput``'s ``pendulum-mlp``: its config,
  nets, batch and data) built up level by level in *this* process: the model's forward;
  + backward; + the optimiser step (ours: the config's Adam, ``conf/optim/optimizer/adam.yaml``,
  both parameter groups as in REWO's main phase; pythae: the Adam its ``BaseTrainer`` builds);
  + the plain loop around it (``bench_throughput.train_plain``: DataLoader, eq. 11,
  ``float(C_ba)``). Columns: the VHP, our VAE and pythae's VAE on the same nets. CPU time per
  step, denormals flushed as in our CLIs; the runs alternate, their order rotating every repeat;
  medians of the repeats.
* ``op_profile``: ``torch.profiler`` (CPU) of one callable: the ops with the most self CPU time,
  each as a share of all ops' self CPU time, and the share of the matmul/convolution kernels.
* ``import_rss``: the peak RSS of a fresh interpreter after each import of Lightning's chain.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_throughput as bt  # noqa: E402
from flops import counted_flops, sgemm_peak_gflops  # noqa: E402

# the speed targets: ratios by CPU time per step; step and NLL as % of the same-process peak
TARGETS = {"plain": 0.95, "vae": 1.3, "step": 75, "rss": 1.1, "nll-mlp": 70, "nll-gated": 50}
PENDULUM = "pendulum-mlp"
PROTOCOL = {  # per run: untimed + timed steps; repeats; sgemm peak seconds; profiled calls; NLL S
    "full": {"warmup": 3, "steps": 25, "repeats": 5, "peak_s": 0.5, "profiled": 10, "nll_s": 200},
    "quick": {"warmup": 1, "steps": 2, "repeats": 1, "peak_s": 0.1, "profiled": 1, "nll_s": 20},
}
LEVELS = {
    "forward": "forward (the loss)",
    "backward": "+ backward",
    "optimiser": "+ optimiser step (ours: the config's Adam, foreach; pythae: its Adam)",
    "plain": "+ the plain loop around it, this process (`train_plain`: DataLoader, eq. 11)",
}
# column -> (label, its loop in the throughput table)
COLUMNS = {
    "vhp": ("VHP", "ours"),
    "vae": ("our VAE", "ours-vae"),
    "pythae": ("pythae's VAE", "pythae-vae"),
}
TOP_OPS = 8
IMPORTS = (
    "pass",
    "import torch",
    "import torchmetrics",
    "import torchvision",
    "import pytorch_lightning",
    "import vhp_lightning.train, vhp_lightning.module",
)
WATCHED = (
    "torchmetrics",
    "torchvision",
    "torch._dynamo",
    "triton",
    "sympy",
    "scipy.signal",
    "pytorch_lightning",
)
# VmHWM: ru_maxrss of a child started from a big parent can report the parent's pages
_RSS_CHILD = """import json, sys
{statement}
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
loaded = [name for name in {watched!r} if name in sys.modules]
print(json.dumps({{"mib": int(hwm.split()[1]) / 1024, "loaded": loaded}}))
"""


# --- a pendulum step, level by level ------------------------------------------------------------
@dataclass
class Workloads:
    """The pendulum step of each model cut at each level, and its matmul GFLOP."""

    spec: dict[str, Any]
    data: torch.Tensor  # (batches x batch, 1, 16, 16): one run of the plain loop
    steps: dict[str, dict[str, Callable[[], object]]]  # column -> level -> one step
    gflop: dict[str, dict[str, float]]  # column -> "forward" / "backward" (forward + backward)


def cut_step(
    loss: Callable[[], torch.Tensor], optimizers: list[torch.optim.Optimizer]
) -> dict[str, Callable[[], object]]:
    """One training step stopped after each level: forward; + backward; + every optimiser."""

    def backward() -> None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss().backward()

    def optimise() -> None:
        backward()
        for opt in optimizers:
            opt.step()

    return {"forward": loss, "backward": backward, "optimiser": optimise}


def pendulum_workloads(batches: int, pythae: bool = True) -> Workloads:
    """The VHP's and our VAE's steps (and pythae's VAE's if ``pythae`` and it is installed) on
    ``bench_throughput``'s pendulum setting, with ``batches`` batches of its data."""
    torch.manual_seed(0)
    setting = bt.SETTINGS[PENDULUM]
    spec = bt.resolve_setting(setting)
    data = bt.make_data(setting.dataset, spec["batch_size"] * batches, spec["data_shape"])
    x, beta = data[: spec["batch_size"]], float(spec["scheme"]["beta_init"])
    losses, optimizers = {}, {}
    for column in ("vhp", "vae"):
        model = bt.build_model(spec, vae=column == "vae")
        losses[column] = partial(lambda m: m.loss(x, beta=beta)["loss"], model)
        optimizers[column] = bt.plain_optimizers(spec, model)
    if pythae and importlib.util.find_spec("pythae"):
        model = bt.build_pythae_model(spec, "vae")
        losses["pythae"] = partial(lambda m: m({"data": x}).loss, model)
        # what pythae's BaseTrainer.set_optimizer builds by default
        optimizers["pythae"] = [torch.optim.Adam(model.parameters(), lr=spec["lr"])]
    gflop = {
        column: {
            "forward": counted_flops(loss) / 1e9,
            "backward": counted_flops(lambda: loss().backward()) / 1e9,  # noqa: B023 (called now)
        }
        for column, loss in losses.items()
    }
    steps = {column: cut_step(losses[column], optimizers[column]) for column in losses}
    return Workloads(spec, data, steps, gflop)


def _timed(step: Callable[[], object], n: int) -> list[bt.Stamp]:
    times = []
    for _ in range(n):
        step()
        times.append(bt.step_stamp())
    return times


def decompose(w: Workloads, warmup: int, repeats: int, peak_s: float) -> dict[str, Any]:
    """Median CPU ms per step of every (column, level), the runs interleaved; the sgemm peak of
    this process (the best of before and after)."""
    n = len(w.data) // w.spec["batch_size"]
    runs = {
        (column, level): partial(_timed, step, n)
        for column, cut in w.steps.items()
        for level, step in cut.items()
    }
    for column in ("vhp", "vae"):
        runs[(column, "plain")] = partial(
            lambda vae: bt.train_plain(w.spec, w.data, vae)[0], column == "vae"
        )
    peak = sgemm_peak_gflops(seconds=peak_s)
    cpu_ms: dict[tuple[str, str], list[float]] = {}
    keys = list(runs)
    for repeat in range(repeats):
        shift = repeat % len(keys)
        for key in keys[shift:] + keys[:shift]:
            cpu_ms.setdefault(key, []).append(1e3 / bt.rates(runs[key](), warmup)[1])
    ms: dict[str, dict[str, float]] = {}
    for (column, level), values in cpu_ms.items():
        ms.setdefault(column, {})[level] = statistics.median(values)
    return {
        "ms": ms,
        "gflop": w.gflop,
        "peak_gflops": max(peak, sgemm_peak_gflops(seconds=peak_s)),
        "threads": torch.get_num_threads(),
        "batch": w.spec["batch_size"],
    }


def _ms(row: dict[str, Any]) -> float:
    """CPU ms per step of a throughput row."""
    return 1e3 / row["steps_per_cpu_s"]


def levels(decomp: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per column: CPU ms per step at each level (``pct_<level>``: % of the sgemm peak), the
    framework's loop from the throughput rows (``loop``, own process), the plain loop there
    (``loop_plain``, VHP only), ``around`` = loop - optimiser level (all that is neither model
    nor optimiser) and ``lightning`` = loop - this process's plain loop."""
    own = {r["loop"]: r for r in rows if r["model"] == PENDULUM and r["steps_per_cpu_s"]}
    out: dict[str, dict[str, Any]] = {}
    for column, ms in decomp["ms"].items():
        d: dict[str, Any] = dict.fromkeys([*LEVELS, "loop", "loop_plain", "around", "lightning"])
        d.update(ms)
        for level, value in ms.items():
            flop = decomp["gflop"][column]["forward" if level == "forward" else "backward"]
            d[f"pct_{level}"] = 100 * flop / (value / 1e3) / decomp["peak_gflops"]
        row = own.get(COLUMNS[column][1])
        if row:
            d["loop"] = _ms(row)
            if row["fraction_of_peak"] is not None:
                d["pct_loop"] = 100 * row["fraction_of_peak"]
            d["around"] = d["loop"] - ms["optimiser"]
            if "plain" in ms:
                d["lightning"] = d["loop"] - ms["plain"]
        if column == "vhp" and "plain" in own:
            d["loop_plain"] = _ms(own["plain"])
            if own["plain"]["fraction_of_peak"] is not None:
                d["pct_loop_plain"] = 100 * own["plain"]["fraction_of_peak"]
        out[column] = d
    return out


def decomposition_table(lv: dict[str, dict[str, Any]]) -> str:
    """Rows: the levels, then the framework rows; columns: the models; cells ``ms (% peak)``."""

    def cell(d: dict[str, Any], key: str) -> str:
        value, pct = d.get(key), d.get(f"pct_{key}")
        if not value:
            return "-"
        return f"{value:.2f}" + (f" ({pct:.0f} %)" if pct else "")

    rows = [
        *LEVELS.items(),
        ("loop", "the framework's own loop, own process (throughput: "
                 + " / ".join(loop for _, loop in COLUMNS.values()) + ")"),
        ("loop_plain", "the plain loop, own process (throughput: plain)"),
        ("around", "framework loop - optimiser level: all that is neither model nor optimiser"),
        ("lightning", "Lightning's cost: ours - the plain loop of this process"),
    ]  # fmt: skip
    head = "| CPU ms per step (% of the sgemm peak) | " + " | ".join(COLUMNS[c][0] for c in lv)
    lines = [head + " |", "|---|" + "---:|" * len(lv)]
    lines += [
        f"| {label} | " + " | ".join(cell(lv[c], key) for c in lv) + " |" for key, label in rows
    ]
    return "\n".join(lines)


# --- torch.profiler -----------------------------------------------------------------------------
def is_matmul(op: str) -> bool:
    """A matmul or convolution kernel (``aten::mm``, ``addmm``, ``bmm``, ``*convolution*``)."""
    name = op.removeprefix("aten::")
    return op.startswith("aten::") and ("mm" in name or "conv" in name)


def op_profile(step: Callable[[], object], calls: int, top: int = TOP_OPS) -> dict[str, Any]:
    """``torch.profiler`` (CPU) over ``calls`` calls of ``step`` after one unprofiled call: the
    ``top`` ops by self CPU time (ms and calls per call of ``step``, % of all ops' self CPU
    time) and the matmul/convolution kernels' share of it."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0  # microseconds
    ops = [
        {
            "op": e.key,
            "ms": e.self_cpu_time_total / 1e3 / calls,
            "calls": e.count / calls,
            "percent": 100 * e.self_cpu_time_total / total,
        }
        for e in events[:top]
    ]
    matmul = sum(e.self_cpu_time_total for e in events if is_matmul(e.key))
    return {"ops": ops, "ms": total / 1e3 / calls, "matmul_percent": 100 * matmul / total}


def profile_table(prof: dict[str, Any]) -> str:
    """The ``op_profile`` as a markdown table and one line of totals."""
    lines = [
        "| op | self CPU ms | calls | % of all ops' self CPU |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| `{o['op']}` | {o['ms']:.2f} | {o['calls']:.0f} | {o['percent']:.1f} |"
        for o in prof["ops"]
    ]
    shown = sum(o["percent"] for o in prof["ops"])
    lines += [
        "",
        f"Per profiled call; these {len(prof['ops'])} ops: {shown:.0f} % of its {prof['ms']:.2f} ms"
        f" of op time (profiler overhead included); matmul/convolution kernels (all of them):"
        f" {prof['matmul_percent']:.0f} %.",
    ]
    return "\n".join(lines)


def nll_profile(row: dict[str, Any], samples: int, calls: int) -> dict[str, Any]:
    """``op_profile`` of one image's importance-sampled log p(x) with the NLL row's model."""
    import bench_nll

    from vhp_lightning.analysis.nll import log_likelihood_batched

    model = bench_nll.build_model(row["model"])
    x, _ = bench_nll.mnist_test_images(1, None)
    s = min(int(row["samples"]), samples)
    prof = op_profile(lambda: log_likelihood_batched(model, x, s, int(row["chunk_size"])), calls)
    return {**prof, "samples": s}


# --- memory -------------------------------------------------------------------------------------
def import_rss(threads: int = 1) -> list[dict[str, Any]]:
    """Peak RSS (MiB) of a fresh interpreter after each of ``IMPORTS``, and which of ``WATCHED``
    it loaded. The interpreters run side by side: a process's peak does not depend on the load."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RSS_CHILD.format(statement=statement, watched=WATCHED)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for statement in IMPORTS
    ]
    rows = []
    for statement, proc in zip(IMPORTS, procs, strict=True):
        out, err = proc.communicate()
        if proc.returncode:
            rows.append({"import": statement, "mib": None, "loaded": [], "error": err[-300:]})
        else:
            rows.append({"import": statement, **json.loads(out.splitlines()[-1])})
    return rows


def import_table(rows: list[dict[str, Any]]) -> str:
    torch_mib = next((r["mib"] for r in rows if r["import"] == "import torch"), None)
    lines = [
        "| a fresh interpreter, then | peak RSS (MiB) | over `import torch` (MiB) |"
        " of " + ", ".join(f"`{m}`" for m in WATCHED) + ": loaded too |",
        "|---|---:|---:|---|",
    ]
    for r in rows:
        if r["mib"] is None:
            error = (r["error"].strip().splitlines() or ["?"])[-1]
            lines.append(f"| `{r['import']}` | failed: {error} | - | - |")
            continue
        over = f"{r['mib'] - torch_mib:+.0f}" if torch_mib and r["import"] != "pass" else "-"
        loaded = ", ".join(f"`{m}`" for m in r["loaded"] if f"import {m}" != r["import"])
        label = "nothing (the bare interpreter)" if r["import"] == "pass" else f"`{r['import']}`"
        lines.append(f"| {label} | {r['mib']:.0f} | {over} | {loaded or '-'} |")
    return "\n".join(lines)


# --- the verdicts -------------------------------------------------------------------------------
def _judged(
    what: str, value: float, target: float, gap: Callable[[], str], at_least: bool = True
) -> str:
    """``- what = value >= target: met.``, or ``- what = value < target: <gap()>.``; a value
    above 2 is a percentage."""
    met = value >= target if at_least else value <= target
    sign = (">=" if met else "<") if at_least else ("<=" if met else ">")
    fmt = "{:.0f} %" if target > 2 else "{:.2f}"
    verdict = "met" if met else gap()
    return f"- {what} = {fmt.format(value)} {sign} {fmt.format(target)}: {verdict}."


def _others(prof: dict[str, Any]) -> str:
    """The three biggest non-matmul ops of a profile, with their shares."""
    ops = [o for o in prof["ops"] if not is_matmul(o["op"])][:3]
    return ", ".join(f"`{o['op']}` {o['percent']:.0f} %" for o in ops)


def plain_verdict(model: str, ours: dict[str, Any], plain: dict[str, Any]) -> str:
    a, b = _ms(ours), _ms(plain)
    return _judged(
        f"{model}: ours / plain (CPU)",
        b / a,
        TARGETS["plain"],
        lambda: f"Lightning's loop costs {a - b:.2f} ms/step (ours {a:.2f} - plain {b:.2f} ms)",
    )


def vae_verdict(
    model: str, ours: dict[str, Any], pythae: dict[str, Any], lv: dict[str, dict[str, Any]]
) -> str:
    a, b = _ms(ours), _ms(pythae)

    def gap() -> str:
        text = f"ours-vae takes {a:.2f} ms/step, pythae-vae {b:.2f} ms"
        o, p = lv.get("vae"), lv.get("pythae")
        if model == PENDULUM and o and p:
            text += (
                f"; the models' forward + backward take {o['backward']:.2f} vs"
                f" {p['backward']:.2f} ms, with the optimiser step {o['optimiser']:.2f} vs"
                f" {p['optimiser']:.2f} ms, so the loops around them cost"
                f" {a - o['optimiser']:.2f} ms (Lightning's; ours - plain loop ="
                f" {a - o['plain']:.2f}) vs {b - p['optimiser']:.2f} ms (pythae's)"
            )
        elif model != PENDULUM:
            text += " (the step is taken apart level by level on the pendulum only)"
        return text

    return _judged(f"{model}: ours-vae / pythae-vae (CPU)", b / a, TARGETS["vae"], gap)


def step_verdict(ours: dict[str, Any], vhp: dict[str, Any], prof: dict[str, Any]) -> str:
    def gap() -> str:
        below = "below" if vhp["pct_backward"] < TARGETS["step"] else "above"
        return (
            f"in this process the bare forward + backward reaches {vhp['pct_backward']:.0f} %"
            f" (the model alone is {below} the target), + Adam {vhp['pct_optimiser']:.0f} %, the"
            f" plain loop {vhp['pct_plain']:.0f} %; in the profile of forward + backward + Adam,"
            f" matmul kernels take {prof['matmul_percent']:.0f} % of the op time, the largest"
            f" others {_others(prof)}"
        )

    what = f"{PENDULUM}: a step of ours, % of the sgemm peak (CPU)"
    return _judged(what, 100 * ours["fraction_of_peak"], TARGETS["step"], gap)


def rss_verdict(
    model: str, ours: dict[str, Any], plain: dict[str, Any], imports: list[dict[str, Any]]
) -> str:
    a, b = ours["peak_rss_mib"], plain["peak_rss_mib"]
    mib = {r["import"]: r["mib"] for r in imports if r["mib"]}

    def gap() -> str:
        text = f"ours peaks {a - b:.0f} MiB above plain ({a:.0f} vs {b:.0f} MiB)"
        torch_, metrics, vision, lightning, ours_ = (mib.get(k) for k in IMPORTS[1:])
        if torch_ and metrics and vision and lightning and ours_:
            text += (
                f"; in fresh interpreters `import pytorch_lightning` peaks"
                f" {lightning - torch_:.0f} MiB above `import torch` (`import torchmetrics`"
                f" alone {metrics - torch_:+.0f}, `import torchvision` {vision - torch_:+.0f})"
                f" and our modules add {ours_ - lightning:.0f} MiB"
            )
        return text

    return _judged(f"{model}: peak RSS ours / plain", a / b, TARGETS["rss"], gap, at_least=False)


def nll_verdict(row: dict[str, Any], prof: dict[str, Any] | None) -> str:
    def gap() -> str:
        if not prof:
            return "not profiled in this run"
        return (
            f"in its profile (one image, S = {prof['samples']}), matmul/convolution kernels take"
            f" {prof['matmul_percent']:.0f} % of the op time, the largest others {_others(prof)}"
        )

    target = TARGETS["nll-gated"] if "gated" in row["model"] else TARGETS["nll-mlp"]
    what = f"NLL, {row['model']}: % of the sgemm peak (CPU)"
    return _judged(what, 100 * row["fraction_of_peak"], target, gap)


def optin_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """The pendulum targets that the opt-ins (fused Adam; + ``compile=inductor``) bear on, on
    their own throughput rows: a step's % of the sgemm peak, and our VAE over pythae's. Empty
    when the run had no opt-in rows."""
    timed = {r["loop"]: r for r in rows if r["model"] == PENDULUM and r["steps_per_cpu_s"]}

    def not_met() -> str:
        return "not met by the opt-in"

    lines = []
    for loop in ("ours-fused", "ours-compile"):
        if loop in timed:
            what = f"{PENDULUM}, opt-in: a step of {loop}, % of the sgemm peak (CPU)"
            value = 100 * timed[loop]["fraction_of_peak"]
            lines.append(_judged(what, value, TARGETS["step"], not_met))
    pythae = timed.get("pythae-vae")
    for loop in ("ours-vae-fused", "ours-vae-compile"):
        if loop in timed and pythae:
            ratio = _ms(pythae) / _ms(timed[loop])
            what = f"{PENDULUM}, opt-in: {loop} / pythae-vae (CPU)"
            lines.append(_judged(what, ratio, TARGETS["vae"], not_met))
    return lines


def verdicts(
    rows: list[dict[str, Any]], nll_rows: list[dict[str, Any]], m: dict[str, Any]
) -> list[str]:
    """One line per speed target on this run's throughput and NLL rows: met, or the gap
    and the numbers of this section (``m``, from ``measure``) that explain it."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        timed = {r["loop"]: r for r in rows if r["model"] == model and r["steps_per_cpu_s"]}
        ours, plain, ours_vae, pythae = (
            timed.get(k) for k in ("ours", "plain", "ours-vae", "pythae-vae")
        )
        missing = f"not measured in this run ({model})"
        lines.append(
            plain_verdict(model, ours, plain) if ours and plain else f"- ours / plain: {missing}."
        )
        lines.append(
            vae_verdict(model, ours_vae, pythae, m["levels"])
            if ours_vae and pythae
            else f"- ours-vae / pythae-vae: {missing}."
        )
        if model == PENDULUM and ours and "vhp" in m["levels"]:
            lines.append(step_verdict(ours, m["levels"]["vhp"], m["profile"]))
        lines.append(
            rss_verdict(model, ours, plain, m["imports"])
            if ours and plain
            else f"- peak RSS ours / plain: {missing}."
        )
    lines += [nll_verdict(row, m["nll_profiles"].get(row["model"])) for row in nll_rows]
    return lines + optin_verdicts(rows)


# --- the section --------------------------------------------------------------------------------
def measure(
    quick: bool, rows: list[dict[str, Any]], nll_rows: list[dict[str, Any]], threads: int = 1
) -> dict[str, Any]:
    """Every measurement of the section, in this process (one thread unless ``threads``) and
    in fresh interpreters for the imports; ``rows`` / ``nll_rows``: the throughput and NLL rows
    of the same run (may be empty)."""
    p = PROTOCOL["quick" if quick else "full"]
    imports = import_rss(threads)  # first: the timings below run alone
    torch.set_flush_denormal(True)  # as our CLIs and every throughput loop
    w = pendulum_workloads(p["warmup"] + p["steps"])
    decomp = decompose(w, p["warmup"], p["repeats"], p["peak_s"])
    return {
        "protocol": p,
        "decomp": decomp,
        "levels": levels(decomp, rows),
        "profile": op_profile(w.steps["vhp"]["optimiser"], p["profiled"]),
        "nll_profiles": {r["model"]: nll_profile(r, p["nll_s"], p["profiled"]) for r in nll_rows},
        "imports": imports,
    }


def section(
    quick: bool, rows: list[dict[str, Any]], nll_rows: list[dict[str, Any]], threads: int = 1
) -> str:
    """The markdown section: the verdicts, then the tables that they cite."""
    m = measure(quick, rows, nll_rows, threads)
    p, d = m["protocol"], m["decomp"]
    flops = ", ".join(
        f"{COLUMNS[c][0]} {g['forward']:.3g} / {g['backward']:.3g}" for c, g in d["gflop"].items()
    )
    parts = [
        "## Where the time and memory go (the gaps)",
        "",
        "Issue 13's targets on the numbers of this run, each met or its gap with the measurement"
        " below that explains it (ms are CPU ms per step):",
        "",
        *(
            verdicts(rows, nll_rows, m)
            or ["- No throughput or NLL rows to judge: `bench/run_all.py` passes them in."]
        ),
        "",
        "### A pendulum step, level by level",
        "",
        f"Measured in one process, threads: {d['threads']}, denormals flushed: batch"
        f" {d['batch']}, {p['warmup']} untimed + {p['steps']} timed steps per run, {p['repeats']}"
        " repeats with the runs interleaved, median CPU ms per step. % of the sgemm peak of this"
        f" process ({d['peak_gflops']:.0f} GFLOP/s) from the counted matmul GFLOP per step"
        f" (forward / forward + backward: {flops}). The framework rows are the throughput"
        " table's (their own processes and peaks).",
        "",
        decomposition_table(m["levels"]),
        "",
        f"### torch.profiler: the VHP step (forward + backward + Adam), {p['profiled']} steps",
        "",
        profile_table(m["profile"]),
    ]
    for name, prof in m["nll_profiles"].items():
        head = f"### torch.profiler: NLL of one image, {name}, S = {prof['samples']}"
        parts += ["", head, "", profile_table(prof)]
    parts += ["", "### Peak RSS of the import chain", "", import_table(m["imports"])]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    text = section(args.quick, [], [], args.threads)
    print(text)
    return text


if __name__ == "__main__":
    main()
