"""Table 2 (sec. 4.3) filled run by run: NLL of the five models, collected into a CSV.

``python -m vhp_lightning.report table2 <run or sweep dir> ... [--results]`` appends one row per
finished run to a CSV (``<first dir>/report/table2.csv``; with ``--results``
``results/table2.csv``) -- a training run with ``test/nll`` in its CSV log, or the
``metrics.json`` of ``vhp_lightning.evaluate`` with an ``nll`` -- and never overwrites a row
already there (same model, dataset, nets, seed, steps, S, images and source); ``skipped`` says
why a run gives none. It then writes the ``.md`` beside the CSV from *all* rows, with the paper's
numbers beside ours, and with ``--figures`` the validation bound and beta against the step for
the runs given. A table can so be filled over several sessions.

A run's row is its ``+table2=<row>`` override (``.hydra/overrides.yaml``); a run without one
(older runs) is named from its model and beta-scheme classes, which gives the same names. Beside
the CSV (``<csv without .csv>/``) each run keeps its curves and its per-image log p(x)
(``<row id>_nll_per_image.csv``, ``row_id``), so that a lost run dir loses nothing; from those
the table pairs every row with VHP + REWO image by image (``paired_difference``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from scipy.stats import t as student_t

from vhp_lightning.analysis.nll import PER_IMAGE_FILE, read_per_image
from vhp_lightning.io.instantiate import current_target
from vhp_lightning.reports import (
    Column,
    append_rows,
    find_runs,
    floats,
    markdown_table,
    mean_std,
    open_for_writing,
    overrides,
    read_csv,
    read_results,
    scheme_trace,
    switch_step,
)
from vhp_lightning.runs.record import read_config, record_path

DATASETS = {  # datamodule _target_ -> Table 2's column, in the paper's order
    "vhp_lightning.datamodules.mnist.MNISTDataModule": "dynamic MNIST",
    "vhp_lightning.datamodules.mnist.StaticMNISTDataModule": "static MNIST",
    "vhp_lightning.datamodules.mnist.FashionMNISTDataModule": "Fashion-MNIST",
    "vhp_lightning.datamodules.mnist.OmniglotDataModule": "OMNIGLOT",
}
# Table 2 of the paper: negative test log-likelihood (nats), S = 5000, full test set.
PAPER = {
    "vhp_rewo": ("VHP + REWO", (78.88, 82.74, 225.37, 101.78)),
    "vhp_geco": ("VHP + GECO", (95.01, 96.32, 234.73, 108.97)),
    "vampprior": ("VampPrior", (80.42, 84.02, 232.78, 101.97)),
    "iwae": ("IWAE (L=1)", (81.36, 84.46, 226.83, 101.57)),
    "iwae_l2": ("IWAE (L=2)", (80.66, 82.83, 225.39, 101.83)),
}
COLUMNS = (
    "row",
    "dataset",
    "nets",
    "objective",
    "seed",
    "epochs",
    "steps",
    "wall_s",
    "final_beta",
    "switch_step",
    "nll",
    "nll_se",
    "samples",
    "images",
    "source",
    "run",
    "invalid",
)
# ``invalid``: empty for a valid row; otherwise why the row must not be counted (written by hand
# into the committed CSV, never by the report: e.g. a run scored on a biased subset of the test
# set). Such a row stays in the CSV and in *Every run*, and no table or figure counts it.
# One CSV row per finished run: a rerun of the same setting (another run dir) is a row of its
# own, never an overwrite; ``current_rows`` picks the one a table counts.
KEY = ("row", "dataset", "nets", "seed", "steps", "samples", "images", "source", "run")
SETTING = KEY[:-1]  # what a rerun repeats


def csv_columns(csv_path: Path, rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The columns of ``results/table2.csv``: always ``COLUMNS`` (as Table 1's ``csv_columns``,
    which adds the metrics a config adds)."""
    return COLUMNS


_BASELINES = {"VampPrior": "vampprior", "IWAE": "iwae", "IWAE2": "iwae_l2"}
_VHP_SCHEMES = {"REWO": "vhp_rewo", "GECO": "vhp_geco"}
_NETS = {"GaussianMLP": "mlp", "GatedConvEncoder": "gated conv"}


def row_key(model: str | None, scheme: str | None) -> str | None:
    """The Table 2 row (a key of ``PAPER``) of a run from its model and beta-scheme
    ``_target_``s; None when the pair is not one of the paper's five rows."""
    name = (current_target(model) or "").rsplit(".", 1)[-1]
    if name == "VHP":
        return _VHP_SCHEMES.get((current_target(scheme) or "").rsplit(".", 1)[-1])
    return _BASELINES.get(name)


def run_row(job: Path, model: str | None, scheme: str | None) -> str | None:
    """The Table 2 row of the run dir ``job``: its ``+table2=<row>`` override, else (a run
    without one) ``row_key(model, scheme)``."""
    return overrides(job).get("table2") or row_key(model, scheme)


def _label(row: str) -> str:
    """The row's name in the paper (``VHP + REWO``), or its override name for a row the paper
    does not have."""
    return PAPER[row][0] if row in PAPER else row


def _objective(scheme: dict[str, Any]) -> str:
    kind = str(scheme.get("_target_", "")).rsplit(".", 1)[-1]
    if kind == "ConstantBeta":
        return f"β = {scheme.get('beta', 1.0):g}"
    return {"WarmUp": "warm-up"}.get(kind, kind)


# --- one run ----------------------------------------------------------------------------------
def _run_facts(job: Path) -> dict[str, Any]:
    """What a training run dir says besides the NLL: nets, objective, seed, steps, epochs,
    final beta, switch step, and its CSV log's last ``test/...`` values."""
    cfg = OmegaConf.create(read_config(job))  # keeps ${...}: resolve per key

    def get(key: str, default: Any = None) -> Any:
        value = OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=False)
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value

    encoder = str(get("model.encoder._target_", "")).rsplit(".", 1)[-1]
    scheme = {"_target_": get("optim.scheme._target_"), "beta": get("optim.scheme.beta", 1.0)}
    test: dict[str, float] = {}
    steps, epoch_of = 0, {}  # type: tuple[int, dict[int, int]]
    for metrics_csv in sorted(job.glob("csv/**/metrics.csv")):
        for row in read_csv(metrics_csv):
            for key, value in row.items():
                if (key.startswith("test/") or key == "run/wall_s") and value:
                    test[key] = float(value)
            if (
                row.get("step")
                and row.get("epoch")
                and not any(k.startswith("test/") and v for k, v in row.items())
            ):
                step = int(float(row["step"]))
                steps = max(steps, step)
                epoch_of.setdefault(int(float(row["epoch"])), step)
    per_epoch = epoch_of.get(1)  # the first step of epoch 1 = steps per epoch
    trace = scheme_trace(job)
    switch = switch_step(trace)
    return {
        "row": run_row(job, get("model._target_"), scheme["_target_"]),
        "model": get("model._target_"),
        "scheme": scheme["_target_"],
        "dataset": current_target(get("dataset._target_")),
        "nets": _NETS.get(encoder, encoder or "?"),
        "objective": _objective(scheme),
        "seed": int(get("seed", 0)),
        "steps": steps + 1 if steps else "",  # global_step after the last logged batch
        "epochs": round((steps + 1) / per_epoch, 1) if per_epoch else "",
        "final_beta": float(trace["beta"][-1]) if len(trace["beta"]) else "",
        "switch_step": "" if switch is None else switch,
        "samples": get("nll_samples", ""),
        "test": test,
        "tested": bool(get("test", True)),  # test=false: no end-of-run test/nll
    }


def _facts_or_why(job: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(_run_facts(job), None)`` for a training run that gives a Table 2 row, else ``(None,
    why it gives none, with the fix)``."""
    if not record_path(job, "config.yaml").is_file():
        return None, "no .hydra/config.yaml (not a run dir of vhp_lightning.train)"
    facts = _run_facts(job)
    if facts["row"] is None:
        return None, (
            f"model {facts['model']} with scheme {facts['scheme']} is not a Table 2 row (no "
            f"`+table2=<row>` override; rows: {', '.join(PAPER)})"
        )
    if facts["dataset"] not in DATASETS:
        return None, f"dataset {facts['dataset']} is not a Table 2 column ({', '.join(DATASETS)})"
    if "test/nll" in facts["test"]:
        return facts, None
    ckpt = job / "checkpoints" / "last.ckpt"
    measure = (
        f"measure it with `python -m vhp_lightning.evaluate ckpt_path={ckpt} metrics=[nll] "
        f"hydra.run.dir={job / 'eval'}`, then rerun this report"
        if ckpt.is_file()
        else f"it has no {ckpt} to evaluate: train it again with test=true"
    )
    if not facts["tested"]:
        return None, f"no test/nll: it ran with test=false; {measure}"
    return None, (
        "not finished: no test/nll in csv/metrics.csv yet (logged after the last training "
        f"step); let it finish (or resume it: resume=true in its run dir), or {measure}"
    )


def why_no_row(job: Path) -> str | None:
    """Why the training run dir ``job`` gives no Table 2 row, with the fix (None: it gives
    one)."""
    return _facts_or_why(job)[1]


def train_row(job: Path) -> dict[str, Any] | None:
    """The CSV row of a training run with ``test/nll`` (None: not a Table 2 run or no NLL;
    ``why_no_row`` says which)."""
    facts, _ = _facts_or_why(job)
    if facts is None:
        return None
    row = facts["row"]
    metrics_csv = max(job.glob("csv/**/metrics.csv"), key=lambda p: p.stat().st_mtime)
    test = facts["test"]
    return {
        **{k: facts[k] for k in ("nets", "objective", "seed", "epochs", "steps", "samples")},
        **{k: facts[k] for k in ("final_beta", "switch_step")},
        "row": row,
        "dataset": DATASETS[facts["dataset"]],
        "wall_s": round(
            test["run/wall_s"]
            if "run/wall_s" in test
            else metrics_csv.stat().st_mtime - record_path(job).stat().st_mtime
        ),
        "nll": test["test/nll"],
        "nll_se": test.get("test/nll_se", ""),
        "images": int(test["test/nll_images"]) if "test/nll_images" in test else "",
        "source": "train",
        "run": run_name(job),
    }


def eval_row(path: Path) -> dict[str, Any] | None:
    """The CSV row of a ``vhp_lightning.evaluate`` ``metrics.json`` with an ``nll`` (None
    otherwise); seed, nets and the beta trace come from the checkpoint's run dir if present."""
    data = json.loads(path.read_text())
    nll = (data.get("metrics") or {}).get("nll")
    job = Path(str(data.get("checkpoint", ""))).parent.parent
    row = run_row(job, data.get("model"), data.get("scheme"))
    dataset = current_target(data.get("dataset"))
    if not isinstance(nll, dict) or "nll" not in nll or row is None or dataset not in DATASETS:
        return None
    facts = _run_facts(job) if record_path(job, "config.yaml").is_file() else {}
    return {
        "nets": facts.get("nets", "?"),  # "?": the checkpoint's run dir is not here
        "objective": facts.get("objective", _objective({"_target_": data.get("scheme")})),
        **{k: facts.get(k, "") for k in ("seed", "epochs")},
        **{k: facts.get(k, "") for k in ("final_beta", "switch_step")},
        "row": row,
        "dataset": DATASETS[dataset],
        "steps": data.get("global_step", ""),
        "wall_s": round(sum((data.get("seconds") or {}).values())),
        "nll": nll["nll"],
        "nll_se": nll.get("nll_se", ""),
        "samples": nll.get("n_samples", ""),
        "images": nll.get("n_images", ""),
        "source": "evaluate",
        "run": run_name(path.parent),
    }


def skipped(paths: Iterable[Path]) -> list[str]:
    """One line per run dir or ``metrics.json`` at or below ``paths`` that gives no Table 2
    row, saying why; a training run whose checkpoint an evaluate row measured is not listed."""
    paths = list(paths)
    lines, evaluated, eval_dirs = [], set(), set()
    for path in paths:
        for metrics_json in sorted(path.rglob("metrics.json")):
            eval_dirs.add(metrics_json.parent.resolve())
            if eval_row(metrics_json) is None:
                lines.append(
                    f"no row from {metrics_json}: no `nll` of a Table 2 model and dataset in it "
                    "(evaluate with metrics=[nll] a checkpoint of a `+table2=<row>` run)"
                )
            else:
                data = json.loads(metrics_json.read_text())
                ckpt = Path(str(data.get("checkpoint", "")))
                evaluated.add(ckpt.parent.parent.resolve())
    for job in find_runs(paths):
        if job.resolve() in eval_dirs | evaluated:
            continue
        if (why := why_no_row(job)) is not None:
            lines.append(f"no row from {job}: {why}")
    return lines


def collect(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(run dir or evaluate dir, row) of every Table 2 result at or below ``paths``."""
    found = [(job, row) for job in find_runs(paths) if (row := train_row(job))]
    for path in paths:
        for metrics_json in sorted(path.rglob("metrics.json")):
            if (row := eval_row(metrics_json)) is not None:
                found.append((metrics_json.parent, row))
    return found


# --- the paired comparison --------------------------------------------------------------------
Z95 = 1.96  # two-sided 95 % quantile of the standard normal: the interval mean +- 1.96 s.e.
REFERENCE = "vhp_rewo"  # every row is paired against VHP + REWO


def pair_by_index(
    index_a: np.ndarray, a: np.ndarray, index_b: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The images two runs both scored: ``index_a: (N_a,)``, ``a: (N_a,)``, ``index_b: (N_b,)``,
    ``b: (N_b,)`` -> ``(index, a, b)``, each ``(N,)`` over the N indices in both, sorted.
    No common image raises ``ValueError``."""
    index, in_a, in_b = np.intersect1d(index_a, index_b, assume_unique=True, return_indices=True)
    if not len(index):
        raise ValueError("the two runs scored no image in common: nothing to pair")
    return index, np.asarray(a)[in_a], np.asarray(b)[in_b]


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """The paired difference ``d = b - a`` of two per-image values of the same N images,
    ``a, b: (N,)``, N >= 2 (in the table: ``a`` the per-image NLL of VHP + REWO, ``b`` a row's):

    ``mean`` = mean(d); ``se`` = std(d, ddof=1) / sqrt(N), its standard error; ``low``,
    ``high`` = mean -+ 1.96 se, the 95 % interval of a normal approximation (the mean of
    N >= 2 000 differences); ``resolved`` = the interval excludes 0; ``n`` = N.

    Pairing removes what two runs share image by image (an image hard for one model is hard
    for the other), so ``se`` is the standard error of the difference of the two NLLs, much
    smaller than either NLL's own s.e. over the images.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired values need a, b of one shape (N,), got {a.shape}, {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired difference needs N >= 2 images for its spread, got {len(a)}")
    d = b - a
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
    low, high = mean - Z95 * se, mean + Z95 * se
    return {
        "mean": mean,
        "se": se,
        "low": low,
        "high": high,
        "n": len(d),
        "resolved": bool(low > 0 or high < 0),
    }


def seed_interval(deltas: Sequence[float], level: float = 0.95) -> dict[str, Any] | None:
    """The interval of the mean of per-seed paired differences (one value a seed, ``(n,)``):
    ``mean``, ``std`` (ddof 1), ``low``, ``high`` = mean -+ t_{n-1} std / sqrt(n), Student's t
    with n - 1 degrees of freedom at ``level`` (two-sided), ``resolved`` = it excludes 0, ``n``.
    None for fewer than 2 seeds (no spread). This is the training noise between seeds, which
    ``paired_difference`` (one seed, the images' noise) does not see."""
    values = np.asarray(deltas, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        return None
    mean, std = float(values.mean()), float(values.std(ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, len(values) - 1)) * std / math.sqrt(len(values))
    low, high = mean - half, mean + half
    return {"mean": mean, "std": std, "low": low, "high": high, "n": len(values),
            "resolved": bool(low > 0 or high < 0)}  # fmt: skip


def row_id(row: dict[str, Any]) -> str:
    """The file name stem of one CSV row's per-image values: its group, row, source, S, images
    and run (two runs of one setting keep two files), e.g.
    ``table2_dynamic_mnist_mlp_20000steps_seed0_vhp_rewo_train_s5000_n2000_mnist-vhp_rewo_s0``."""
    return (
        f"{group_slug(row)}_{row['row']}_{row['source']}_s{row['samples']}_n{row['images']}"
        f"_{_run_slug(row)}"
    ).replace(" ", "_")


def _run_slug(row: dict[str, Any]) -> str:
    """A row's run as part of a file name: ``mnist/vhp_rewo_s0`` -> ``mnist-vhp_rewo_s0``."""
    return row["run"].replace("/", "-")


def current_rows(
    rows: list[dict[str, str]], paired: set[tuple[str, ...]]
) -> tuple[list[dict[str, str]], dict[tuple[str, ...], str]]:
    """The rows a table counts: one per setting (``SETTING``: row, dataset, nets, seed, steps,
    S, images, source), the last in CSV order among those whose ``KEY`` is in ``paired`` (their
    per-image values are stored), else the last; a row marked ``invalid`` never. Returns them in
    CSV order and, by ``KEY``, the run that replaces each valid row left out: an older unpaired
    run of a seed is kept in the CSV and shown as superseded, never averaged with its rerun as if
    it were another seed."""
    chosen: dict[tuple[str, ...], dict[str, str]] = {}
    for r in rows:
        if r.get("invalid"):
            continue
        old = chosen.get(_setting(r))
        if old is None or _key(r) in paired or _key(old) not in paired:
            chosen[_setting(r)] = r
    kept = {id(r) for r in chosen.values()}
    superseded = {
        _key(r): chosen[_setting(r)]["run"]
        for r in rows
        if id(r) not in kept and not r.get("invalid")
    }
    return [r for r in rows if id(r) in kept], superseded


def run_name(folder: Path) -> str:
    """A run named by its last two folders (``mnist/vhp_rewo_s0``): which run, never where on
    which machine it lay."""
    return "/".join(folder.resolve().parts[-2:])


def _key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in KEY)


def _setting(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in SETTING)


def _seed(row: dict[str, Any]) -> int:
    """A row's seed for sorting (an evaluate row whose run dir is gone has none: 0)."""
    return int(row.get("seed") or 0)


def keep_per_image(source: Path, path: Path, row: dict[str, str] | None) -> str:
    """Copy a run's ``nll_per_image.csv`` to ``path`` (beside the CSV) if it is the file of
    ``row`` (the CSV's row of that run): as many images, and -mean(log p(x)) equal to the row's
    NLL to 1e-6 nats. Returns the note to print."""
    index, log_px = read_per_image(source)
    nll = -float(np.mean(log_px))
    images = (row or {}).get("images", "")
    if (
        row is None
        or (images and len(index) != int(float(images)))
        or abs(nll - float(row["nll"])) > 1e-6
    ):
        said = "no row" if row is None else f"{images or '?'} images, NLL {float(row['nll']):.6f}"
        return (
            f"per-image values of {source} not kept: {len(index)} images, NLL {nll:.6f}, but its "
            f"row says {said} (a later test of the same run dir?)"
        )
    with open_for_writing(path, "wb") as f:
        f.write(source.read_bytes())
    return f"per-image values {path}"


# --- the table ------------------------------------------------------------------------------
def _cell(group: list[dict[str, str]]) -> str:
    """Our NLL of one (setting, dataset): ``± s.e.`` over images (one seed), or the mean ``± std``
    over seeds followed by their number (several: ``88.04 ± 0.12 (3 seeds)``)."""
    nll = floats(group, "nll")
    if len(nll) > 1:
        return f"{mean_std(nll, 2)} ({len(nll)} seeds)"
    se = floats(group, "nll_se")
    return f"{nll[0]:.2f}" + (f" ± {se[0]:.2f}" if se else "")


def _row_order(rows: Iterable[dict[str, str]]) -> list[str]:
    """The paper's rows in its order, then any other ``+table2=<row>`` of ``rows``."""
    extra = sorted({r["row"] for r in rows} - set(PAPER))
    return [*PAPER, *extra]


def _paper_columns(group: list[dict[str, str]], used: list[str]) -> list[Column[str]]:
    """The columns of one protocol's table, a line per Table 2 row (its ``row`` key): for each
    dataset in ``used`` the paper's NLL beside ours (``_cell`` of ``group``'s rows, the
    protocol's)."""
    datasets = list(DATASETS.values())

    def runs(key: str) -> list[dict[str, str]]:
        return [r for r in group if r["row"] == key]

    def paper(dataset: str) -> Callable[[str], str]:
        return lambda key: f"{PAPER[key][1][datasets.index(dataset)]:.2f}" if key in PAPER else "—"

    def ours(dataset: str) -> Callable[[str], str]:
        def cell(key: str) -> str:
            found = [r for r in runs(key) if r["dataset"] == dataset]
            return _cell(found) if found else "not run"

        return cell

    columns = [
        Column("model", _label),
        Column(
            "objective", lambda key: " / ".join(sorted({r["objective"] for r in runs(key)})) or "—"
        ),
    ]
    for dataset in used:
        columns += [
            Column(f"{dataset}: paper", paper(dataset)),
            Column(f"{dataset}: ours", ours(dataset)),
        ]
    return columns


def _paired(
    rows: list[dict[str, str]], per_image: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]]
) -> dict[tuple[str, ...], dict[str, Any] | None]:
    """Each row's ``paired_difference`` against the VHP + REWO row of its dataset, seed and
    source (``rows`` of one protocol), None where either has no per-image values."""
    out: dict[tuple[str, ...], dict[str, Any] | None] = {}
    for r in rows:
        ref = next(
            (
                q
                for q in rows
                if q["row"] == REFERENCE
                and (q["dataset"], q["seed"], q["source"]) == (r["dataset"], r["seed"], r["source"])
            ),
            None,
        )
        if r["row"] == REFERENCE or ref is None or _key(ref) not in per_image:
            out[_key(r)] = None
        elif _key(r) in per_image:
            _, ref_log_px, log_px = pair_by_index(*per_image[_key(ref)], *per_image[_key(r)])
            out[_key(r)] = paired_difference(-ref_log_px, -log_px)
        else:
            out[_key(r)] = None
    return out


def _verdict(d: dict[str, Any]) -> str:
    """Whether a ``paired_difference`` resolves the two NLLs, and which way."""
    if not d["resolved"]:
        return "no"
    return "yes: worse" if d["low"] > 0 else "yes: better"


def _paired_columns(
    paired: dict[tuple[str, ...], dict[str, Any] | None],
) -> list[Column[dict[str, str]]]:
    """The columns of a paired table, a line per CSV row: its NLL and its ``paired`` difference
    (``_paired``'s, by ``_key``) against the VHP + REWO row of its dataset, seed and source."""

    def difference(
        text: Callable[[dict[str, Any]], str], reference: str = "—", unpaired: str = "—"
    ) -> Callable[[dict[str, str]], str]:
        def cell(r: dict[str, str]) -> str:
            if r["row"] == REFERENCE:
                return reference
            d = paired[_key(r)]
            return unpaired if d is None else text(d)

        return cell

    return [
        Column("model", lambda r: _label(r["row"])),
        Column("NLL ± s.e.", lambda r: _cell([r])),
        Column(
            "Δ NLL ± s.e.",
            difference(lambda d: f"{d['mean']:+.2f} ± {d['se']:.2f}", "reference", "unpaired"),
        ),
        Column("95 % interval", difference(lambda d: f"[{d['low']:+.2f}, {d['high']:+.2f}]")),
        Column("images paired", difference(lambda d: str(d["n"]))),
        Column("resolved", difference(_verdict)),
    ]


def _over_seeds_columns(
    rows: list[dict[str, str]], paired: dict[tuple[str, ...], dict[str, Any] | None]
) -> list[Column[str]]:
    """The columns of an over-seeds table, a line per Table 2 row (its ``row`` key): the NLL
    and the ``paired`` mean Δ NLL, mean +- std over the seeds of ``rows`` (one dataset and
    source)."""

    def runs(key: str) -> list[dict[str, str]]:
        return [r for r in rows if r["row"] == key]

    def deltas(key: str) -> list[float]:
        return [d["mean"] for r in runs(key) if (d := paired[_key(r)]) is not None]

    def delta(key: str) -> str:
        if key == REFERENCE:
            return "reference"
        return mean_std(found, 2, signed=True) if (found := deltas(key)) else "unpaired"

    def interval(text: Callable[[dict[str, Any]], str]) -> Callable[[str], str]:
        def cell(key: str) -> str:
            found = seed_interval(deltas(key))
            return "—" if found is None else text(found)

        return cell

    return [
        Column("model", _label),
        Column("seeds", lambda key: str(len(runs(key)))),
        Column("NLL: mean ± std over seeds", lambda key: mean_std(floats(runs(key), "nll"), 2)),
        Column("Δ NLL: mean ± std over seeds", delta),
        Column("seeds paired", lambda key: "—" if key == REFERENCE else str(len(deltas(key)))),
        Column(
            "95 % interval over seeds (t)",
            interval(lambda d: f"[{d['low']:+.2f}, {d['high']:+.2f}]"),
        ),  # fmt: skip
        Column("resolved over seeds", interval(_verdict)),
    ]


def _paired_lines(
    group: list[dict[str, str]], paired: dict[tuple[str, ...], dict[str, Any] | None]
) -> list[str]:
    """Markdown of one protocol: per dataset, seed and source the rows against VHP + REWO; per
    dataset and source with several seeds, the mean +- std over seeds."""
    columns, order = list(DATASETS.values()), _row_order(group)
    lines: list[str] = []
    sets = sorted(
        {(r["dataset"], r["seed"], r["source"]) for r in group},
        key=lambda k: (columns.index(k[0]), int(k[1] or 0), k[2]),
    )
    for dataset, seed, source in sets:
        rows = [
            r for r in group if (r["dataset"], r["seed"], r["source"]) == (dataset, seed, source)
        ]
        rows.sort(key=lambda r: order.index(r["row"]))
        lines += [
            "",
            f"### {dataset}, seed {seed} ({source}): paired against {_label(REFERENCE)}",
            "",
            *markdown_table(_paired_columns(paired), rows),
        ]
    for dataset, source in sorted({(d, s) for d, _, s in sets}, key=lambda k: columns.index(k[0])):
        rows = [r for r in group if (r["dataset"], r["source"]) == (dataset, source)]
        keys = [key for key in order if any(r["row"] == key for r in rows)]
        if len({r["seed"] for r in rows}) > 1:
            lines += [
                "",
                f"### {dataset} ({source}): over seeds",
                "",
                *markdown_table(_over_seeds_columns(rows, paired), keys),
            ]
        if summary := _resolved_summary(rows, paired, keys):
            lines += ["", f"{dataset} ({source}): {summary}"]
    return lines


_VERDICT_WORDS = {"yes: worse": "worse", "yes: better": "better", "no": "not resolved"}


def _resolved_summary(
    rows: list[dict[str, str]],
    paired: dict[tuple[str, ...], dict[str, Any] | None],
    keys: list[str],
) -> str:
    """One sentence: per model (``keys``' order), on which seeds its paired difference against
    VHP + REWO is resolved, and which way; "" when nothing of ``rows`` is paired."""
    said = []
    for key in keys:
        by_verdict: dict[str, list[str]] = {}
        for r in sorted((r for r in rows if r["row"] == key), key=_seed):
            if (d := paired[_key(r)]) is not None:
                by_verdict.setdefault(_VERDICT_WORDS[_verdict(d)], []).append(r["seed"] or "?")
        if by_verdict:
            seeds = ", ".join(
                f"{verdict} on seed{'s' if len(s) > 1 else ''} {', '.join(s)}"
                for verdict, s in by_verdict.items()
            )
            said.append(f"{_label(key)} {seeds}")
    if not said:
        return ""
    return (
        f"**Resolved against {_label(REFERENCE)}** (the paired 95 % interval excludes 0, seed by "
        f"seed): {'; '.join(said)}."
    )


# The table of every run: a line per CSV row.
_EVERY_RUN: tuple[Column[dict[str, str]], ...] = (
    Column("model", lambda r: _label(r["row"])),
    Column("dataset", itemgetter("dataset")),
    Column("nets", itemgetter("nets")),
    Column("objective", itemgetter("objective")),
    Column("seed", itemgetter("seed")),
    Column("epochs", itemgetter("epochs")),
    Column("steps", itemgetter("steps")),
    Column("final β", lambda r: f"{float(r['final_beta']):.3g}" if r.get("final_beta") else "—"),
    Column("switch step", lambda r: r["switch_step"] or "—"),
    Column("NLL", lambda r: f"{float(r['nll']):.2f}"),
    Column("s.e.", lambda r: f"{float(r['nll_se']):.2f}" if r.get("nll_se") else "—"),
    Column("S", itemgetter("samples")),
    Column("images", itemgetter("images")),
    Column("wall time", lambda r: f"{float(r['wall_s']) / 60:.0f} min" if r.get("wall_s") else "—"),
    Column("source", itemgetter("source")),
)


def _counted(row: dict[str, str], superseded: dict[tuple[str, ...], str]) -> str:
    """*Every run*'s ``counted`` cell: yes, superseded by a rerun, or not valid and why."""
    if row.get("invalid"):
        return f"**no, invalid**: {row['invalid']}"
    if (key := _key(row)) in superseded:
        return f"superseded by {superseded[key]}"
    return "yes"


def _protocols(rows: list[dict[str, str]]) -> dict[tuple[str, str, str, str], list[dict[str, str]]]:
    """``rows`` by protocol: (nets, steps, S, images)."""
    protocols: dict[tuple[str, str, str, str], list[dict[str, str]]] = {}
    for r in rows:
        protocols.setdefault((r["nets"], r["steps"], r["samples"], r["images"]), []).append(r)
    return protocols


def paired_points(
    rows: list[dict[str, str]], per_image: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]]
) -> dict[str, tuple[str, dict[str, list[tuple[str, float, float, float]]]]]:
    """What ``plot_paired_differences`` draws, per figure: ``{slug: (title, {model label:
    [(seed, mean, low, high), ...]})}``, one figure per protocol, dataset and source with at
    least one paired difference (slug ``table2_<dataset>_<nets>_<steps>steps_<source>_paired``),
    models in the paper's order. ``rows``: the rows the tables count (``current_rows``)."""
    out: dict[str, tuple[str, dict[str, list[tuple[str, float, float, float]]]]] = {}
    for group in _protocols(rows).values():
        paired = _paired(group, per_image)
        for r in sorted(group, key=lambda r: (_row_order(group).index(r["row"]), _seed(r))):
            if (d := paired[_key(r)]) is None:
                continue
            slug = _slug(
                f"table2_{r['dataset']}_{r['nets']}_{r['steps']}steps_{r['source']}_paired"
            )
            title = (
                f"{r['dataset']}, {r['nets']} nets, {r['steps']} steps, S = {r['samples']}, "
                f"{r['images']} test images ({r['source']}): paired per image"
            )
            points = out.setdefault(slug, (title, {}))[1].setdefault(_label(r["row"]), [])
            points.append((r["seed"], d["mean"], d["low"], d["high"]))
    return out


def table(
    rows: list[dict[str, str]],
    per_image: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] | None = None,
) -> str:
    """Markdown: per protocol (nets, steps, S, images) the paper's table with ours beside it and
    the paired comparison against VHP + REWO, then every row of the CSV. ``per_image``: the
    ``(index, log_px)`` of the rows that have them, by their ``KEY`` values."""
    per_image = per_image or {}
    columns = list(DATASETS.values())
    counted, superseded = current_rows(rows, set(per_image))
    protocols = _protocols(counted)
    lines = [
        "# Table 2: negative test log-likelihood in nats",
        "",
        "Built by `python -m vhp_lightning.report table2` from every row of `results/table2.csv` "
        "(one row per finished run). The paper: gated-conv nets, S = 5000 importance samples, "
        "the full test set. Ours: one table per protocol; a cell is one run ± the standard "
        "error over the test images, or the mean ± std over seeds (their number said).",
        "",
        f"Paired: Δ NLL = NLL(model) − NLL({_label(REFERENCE)}) on each test image both runs "
        "scored (same dataset, seed and source), averaged: > 0 means the model is worse than "
        f"{_label(REFERENCE)}. ± is the standard error of that mean (std of the per-image Δ / "
        "√n), the interval mean ± 1.96 s.e. (95 %, normal approximation), and *resolved* says "
        "the interval excludes 0. A row without per-image values (older runs) is *unpaired*. "
        "Over seeds: mean ± std over the seeds of the NLL and of the per-seed mean Δ; the "
        "interval over seeds is mean Δ ± t(n − 1) · std / √n (Student's t, 95 %, n paired "
        "seeds): the training noise between seeds, which a single seed's interval does not see.",
        "",
        "A setting run twice (same model, dataset, seed and protocol; another run dir) keeps "
        "both rows in the CSV; the tables count one, the last with per-image values (else the "
        "last), and *Every run* names the run that superseded the other. A row whose `invalid` "
        "column gives a reason is never counted; *Every run* shows it with the reason.",
    ]
    order = _row_order(rows)

    def sort_key(kv: tuple[tuple[str, ...], Any]) -> tuple[str, float, str, str]:
        nets, steps, samples, images = kv[0]
        return (nets, float(steps or 0), samples, images)

    for (nets, steps, samples, images), group in sorted(protocols.items(), key=sort_key):
        used = [c for c in columns if any(r["dataset"] == c for r in group)]
        keys = [k for k in _row_order(group) if k in PAPER or any(r["row"] == k for r in group)]
        lines += [
            "",
            f"## {nets} nets, {steps} training steps, S = {samples}, {images} test images",
            "",
            *markdown_table(_paper_columns(group, used), keys),
            *_paired_lines(group, _paired(group, per_image)),
        ]
    every_run = sorted(rows, key=lambda r: (r["dataset"], r["nets"], order.index(r["row"])))
    lines += [
        "",
        "## Every run",
        "",
        *markdown_table(
            [
                *_EVERY_RUN,
                Column("counted", lambda r: _counted(r, superseded)),
            ],
            every_run,
        ),
        "",
        "Wall time: a training row's `run/wall_s` (training, validation and the end-of-run test "
        "NLL, one CPU thread, summed over the sessions of a resumed run, each up to its last "
        "checkpoint); runs from before 2026-12-07 lack it and count from their last start to "
        "their last log line; an evaluate row: the evaluation alone.",
    ]
    return "\n".join(lines) + "\n"


# --- the curves, kept beside the CSV, and the figure drawn from them ------------------------------
TRACE_COLUMNS = ("step", "val_loss", "beta", "c_hat", "train_prior")
TRACE_EVERY = 50  # keep every 50th step of the beta trace (and every change of phase)


def curve_path(curves_dir: Path, row: dict[str, Any]) -> Path:
    """Where a training row's curves are kept: one file per run, e.g.
    ``table2_dynamic_mnist_mlp_20000steps_seed0_vhp_rewo_mnist_rerun-vhp_rewo_s0.csv``."""
    return curves_dir / f"{group_slug(row)}_{row['row']}_{_run_slug(row)}.csv"


def group_slug(row: dict[str, Any]) -> str:
    """``table2_<dataset>_<nets>_<steps>steps_seed<seed>``: one figure per such group."""
    return _slug(f"table2_{row['dataset']}_{row['nets']}_{row['steps']}steps_seed{row['seed']}")


def _slug(text: str) -> str:
    """A file name stem: spaces and dashes to ``_``, lower case."""
    return text.replace(" ", "_").replace("-", "_").lower()


def validation_curve(job: Path) -> tuple[np.ndarray, np.ndarray]:
    """(step, ``val/loss``) of a run's CSV log: each model's bound at beta = 1 on validation."""
    points: dict[int, float] = {}
    for metrics_csv in sorted(job.glob("csv/**/metrics.csv")):
        for row in read_csv(metrics_csv):
            if row.get("val/loss") and row.get("step"):
                points[int(float(row["step"]))] = float(row["val/loss"])
    steps = sorted(points)
    return np.array(steps, dtype=np.int64), np.array([points[s] for s in steps])


def run_curves(job: Path) -> list[dict[str, Any]]:
    """A training run's validation bound and beta trace as rows of ``TRACE_COLUMNS``.

    The beta trace (logged at every step) is thinned to every ``TRACE_EVERY``-th step, keeping
    the last step and each step where the phase changes, so the file stays a few kB.
    """
    rows: dict[int, dict[str, Any]] = {}
    trace = scheme_trace(job)
    phase = trace["train_prior"]
    for i, step in enumerate(trace["step"]):
        changed = i > 0 and phase[i] != phase[i - 1] and np.isfinite(phase[i - 1])
        if step % TRACE_EVERY == 0 or changed or i == len(trace["step"]) - 1:
            rows[int(step)] = {k: trace[k][i] for k in ("beta", "c_hat", "train_prior")}
    for step, loss in zip(*validation_curve(job), strict=True):
        rows.setdefault(int(step), {})["val_loss"] = loss
    return [
        {"step": s, **{k: v for k, v in rows[s].items() if np.isfinite(v)}} for s in sorted(rows)
    ]


def write_curves(job: Path, path: Path) -> None:
    """Write ``run_curves(job)`` to ``path`` atomically."""
    with open_for_writing(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(TRACE_COLUMNS))
        writer.writeheader()
        writer.writerows(run_curves(job))


def _column(rows: list[dict[str, str]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(step, value) of the rows where column ``key`` is set."""
    kept = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    steps, values = zip(*kept, strict=True) if kept else ((), ())
    return np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64)


def plot_curves(curves: dict[str, Path], path: Path, title: str) -> None:
    """Validation bound (beta = 1) and beta against the step, one line per Table 2 row, from the
    curve files ``{row: results/table2/<group>_<row>.csv}``, written to ``path``."""
    from vhp_lightning.analysis.figures import plot_training_curves, save_figure

    columns = ("val_loss", "beta", "train_prior")
    data = {}
    for key, curve_csv in curves.items():
        rows = read_csv(curve_csv)
        data[_label(key)] = {column: _column(rows, column) for column in columns}
    save_figure(plot_training_curves(data, title), path, dpi=90)


def report(paths: list[Path], csv_path: Path, figures_dir: Path | None) -> tuple[str, list[str]]:
    """Collect ``paths`` into ``csv_path``, each training run's curves into
    ``<csv_path without .csv>/<group>_<row>.csv`` and each run's per-image log p(x) into
    ``<csv_path without .csv>/<row id>_nll_per_image.csv`` (neither ever overwritten); with
    ``figures_dir``, draw one figure per group from every curve file present. Returns the table
    (paired against VHP + REWO where the per-image files are there) and notes.

    A ``csv_path`` that does not parse (``read_results``) is refused before anything is written.
    """
    notes = []
    if csv_path.is_file():
        read_results(csv_path, COLUMNS, KEY)
    pairs = collect(paths)
    if paths:
        added, kept = append_rows(csv_path, [row for _, row in pairs], COLUMNS, KEY)
        notes.append(f"{added} row(s) added to {csv_path}, {kept} already there")
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{csv_path} does not exist and no finished Table 2 run was given (a training run "
            "with test/nll in csv/metrics.csv, or the metrics.json of vhp_lightning.evaluate); "
            "run `python -m vhp_lightning.train -m experiment=table2` first"
        )
    rows = read_results(csv_path, COLUMNS, KEY)
    by_key = {_key(r): r for r in rows}
    curves_dir = csv_path.with_suffix("")
    for job, row in pairs:
        curve_csv = curve_path(curves_dir, row)
        if row["source"] == "train" and not curve_csv.is_file():
            write_curves(job, curve_csv)
            notes.append(f"curves {curve_csv}")
        copy, source = curves_dir / f"{row_id(row)}_{PER_IMAGE_FILE}", job / PER_IMAGE_FILE
        if source.is_file() and not copy.is_file():
            notes.append(keep_per_image(source, copy, by_key.get(_key(row))))
    per_image = {}
    for row in rows:
        if (stored := curves_dir / f"{row_id(row)}_{PER_IMAGE_FILE}").is_file():
            per_image[_key(row)] = read_per_image(stored)
    counted, _ = current_rows(rows, set(per_image))
    if figures_dir is not None:
        groups: dict[str, dict[str, Path]] = {}
        titles: dict[str, str] = {}
        for row in counted:
            curve_csv = curve_path(curves_dir, row)
            if row["source"] == "train" and curve_csv.is_file():
                groups.setdefault(group_slug(row), {})[row["row"]] = curve_csv
                what = (row["dataset"], row["nets"], row["steps"], row["seed"])
                titles[group_slug(row)] = "{}, {} nets, {} steps, seed {}".format(*what)
        for slug, curves in groups.items():
            curves = {k: curves[k] for k in _row_order(rows) if k in curves}
            plot_curves(curves, figures_dir / f"{slug}.png", titles[slug])
            notes.append(f"figure {figures_dir}/{slug}.png")
    if figures_dir is not None:
        from vhp_lightning.analysis.figures import plot_paired_differences, save_figure

        for slug, (title, points) in paired_points(counted, per_image).items():
            fig = plot_paired_differences(points, _label(REFERENCE), title)
            notes.append(f"figure {save_figure(fig, figures_dir / f'{slug}.png', dpi=90)}")
    return table(rows, per_image), notes
