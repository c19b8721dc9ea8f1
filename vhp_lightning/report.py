"""Collect the metrics of a reproduction sweep into a Markdown table beside the paper's numbers.

python -m vhp_lightning.report pendulum_table1 multirun/pendulum_table1/<date_time> [run dir ...]
# -> rows appended to results/pendulum_table1.csv; results/pendulum_table1.md from all rows
python -m vhp_lightning.report table2 <folder with train runs and/or evaluate outputs>
# -> results/table2.md
python -m vhp_lightning.report cmu_interpolation multirun/cmu_interpolation/<date_time>
# -> results/cmu_interpolation.md and its figures in results/cmu_interpolation/
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from vhp_lightning.reports import pendulum_table1, read_csv
from vhp_lightning.safe_instantiate import current_target

# Table 2 of the paper: negative test log-likelihood (nats), S = 5000 importance samples.
TABLE2_COLUMNS = {
    "vhp_lightning.datamodules.mnist.MNISTDataModule": "dynamic MNIST",
    "vhp_lightning.datamodules.mnist.StaticMNISTDataModule": "static MNIST",
    "vhp_lightning.datamodules.mnist.FashionMNISTDataModule": "Fashion-MNIST",
    "vhp_lightning.datamodules.mnist.OmniglotDataModule": "OMNIGLOT",
}
TABLE2_PAPER = {
    "VHP + REWO": (78.88, 82.74, 225.37, 101.78),
    "VHP + GECO": (95.01, 96.32, 234.73, 108.97),
    "VampPrior": (80.42, 84.02, 232.78, 101.97),
    "IWAE (L=1)": (81.36, 84.46, 226.83, 101.57),
    "IWAE (L=2)": (80.66, 82.83, 225.39, 101.83),
}
_BASELINES = {"VampPrior": "VampPrior", "IWAE": "IWAE (L=1)", "IWAE2": "IWAE (L=2)"}
_VHP_SCHEMES = {"REWO": "VHP + REWO", "GECO": "VHP + GECO"}


def _table2_row(model: str | None, scheme: str | None) -> str | None:
    """The Table 2 row of a run from its model and beta-scheme ``_target_``s (None: no row)."""
    name = (model or "").rsplit(".", 1)[-1]
    if name == "VHP":
        return _VHP_SCHEMES.get((scheme or "").rsplit(".", 1)[-1])
    return _BASELINES.get(name)


def _last_value(metrics_csv: Path, key: str) -> tuple[float, int] | None:
    """The last logged ``key`` of a CSVLogger file and its step (None if never logged)."""
    found = None
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            if row.get(key):
                found = (float(row[key]), int(float(row.get("step") or 0)))
    return found


def _table2_runs(root: Path) -> list[dict[str, Any]]:
    """Every NLL under ``root``: ``metrics.json`` of ``vhp_lightning.evaluate`` and ``test/nll``
    of training runs (``.hydra/config.yaml`` + ``csv/metrics.csv``)."""
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        data = json.loads(path.read_text())
        nll = data.get("metrics", {}).get("nll")
        if isinstance(nll, dict) and "nll" in nll:
            runs.append({
                "model": current_target(data.get("model")),
                "scheme": current_target(data.get("scheme")),
                "dataset": current_target(data.get("dataset")), "nll": nll["nll"],
                "samples": nll.get("n_samples"), "images": nll.get("n_images"),
                "step": data.get("global_step"), "source": "evaluate", "path": path.parent,
            })  # fmt: skip
    for cfg_path in sorted(root.rglob(".hydra/config.yaml")):
        job = cfg_path.parent.parent
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        metrics_csv = next(iter(sorted(job.glob("csv/**/metrics.csv"))), None)
        last = _last_value(metrics_csv, "test/nll") if metrics_csv else None
        if last is None or "model" not in cfg:
            continue
        trainer, dataset = cfg.get("trainer") or {}, cfg.get("dataset") or {}
        batches = trainer.get("limit_test_batches")
        images = (
            int(batches) * int(dataset.get("eval_batch_size", 0))
            if isinstance(batches, int) and not isinstance(batches, bool)
            else "all"
        )
        if isinstance(cfg.get("test_nll_images"), int):  # test/nll's own bound (train.yaml)
            limit = int(cfg["test_nll_images"])
            images = limit if images == "all" else min(limit, int(images))
        scheme = ((cfg.get("optim") or {}).get("scheme") or {}).get("_target_")
        runs.append({
            "model": current_target(cfg["model"].get("_target_")),
            "scheme": current_target(scheme),
            "dataset": current_target(dataset.get("_target_")), "nll": last[0],
            "samples": cfg.get("nll_samples", 100), "images": images, "step": last[1],
            "source": "train test/nll", "path": job,
        })  # fmt: skip
    return runs


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run closest to the paper's protocol: most samples, then most images."""
    return max(
        runs, key=lambda r: (r["samples"] or 0, r["images"] if r["images"] != "all" else 1e9)
    )


def table2(sweep_dir: Path) -> str:
    """Table 2 with our NLL beside the paper's, from every run found under ``sweep_dir``."""
    runs = [r for r in _table2_runs(sweep_dir) if _table2_row(r["model"], r["scheme"])]
    runs = [r for r in runs if r["dataset"] in TABLE2_COLUMNS]
    if not runs:
        raise FileNotFoundError(
            f"no Table 2 NLL under {sweep_dir} (expected metrics.json of vhp_lightning.evaluate or "
            "train runs with test/nll in csv/metrics.csv); run `python -m vhp_lightning.train "
            "experiment=table2_mnist_vhp` and `python -m vhp_lightning.evaluate ckpt_path=...`"
        )
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        key = (_table2_row(r["model"], r["scheme"]), TABLE2_COLUMNS[r["dataset"]])
        cells.setdefault(key, []).append(r)  # type: ignore[arg-type]
    columns = list(TABLE2_COLUMNS.values())
    lines = [
        f"# Table 2: negative test log-likelihood in nats (runs under `{sweep_dir}`)",
        "",
        "| model | " + " | ".join(f"{c}: paper | {c}: ours" for c in columns) + " |",
        "|---|" + "---|---|" * len(columns),
    ]
    for row, paper in TABLE2_PAPER.items():
        values = []
        for col, ref in zip(columns, paper, strict=True):
            found = cells.get((row, col))
            ours = f"{_best(found)['nll']:.2f}" if found else "not run"
            values += [f"{ref:.2f}", ours]
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    lines += [
        "",
        "Paper: S = 5000 importance samples on the full test set. Ours: see each run below; "
        "where a cell has several runs, the one closest to that protocol is shown.",
        "",
        "| model | dataset | NLL | S | test images | step | scheme | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (str(r["model"]), str(r["dataset"]), str(r["path"]))):
        lines.append(
            f"| {_table2_row(r['model'], r['scheme'])} | {TABLE2_COLUMNS[r['dataset']]} | "
            f"{r['nll']:.2f} | {r['samples']} | {r['images']} | {r['step']} | "
            f"{str(r['scheme']).rsplit('.', 1)[-1]} | {r['source']}: `{r['path']}` |"
        )
    return "\n".join(lines) + "\n"


# Sec. 4.2 / App. C: the three models of Fig. 5-7 and 17; the figures copied per model.
_CMU_MODELS = ("VHP", "VampPrior", "IWAE")  # Fig. 7's order
_CMU_FIGURES = {
    "latents_by_label.png": "posterior means by motion beside prior samples (Fig. 17)",
    "graph_paths.png": "the graph on prior samples with four interpolations (Fig. 5)",
}  # the decoded trajectories (Fig. 6, strip_<k>.png) stay in each job's interpolation/ folder


def _final_step_and_beta(job: Path) -> tuple[int | None, float | None]:
    """The last logged step and beta-scheme beta (``<scheme>/beta``) of a job's CSV log."""
    step = beta = None
    for metrics_csv in sorted(job.glob("csv/**/metrics.csv")):
        for row in read_csv(metrics_csv):
            if row.get("step"):
                step = int(float(row["step"]))
            for key, value in row.items():
                if key.endswith("/beta") and value:
                    beta = float(value)
    return step, beta


def _overrides_text(job: Path) -> str:
    """The job's command-line overrides (``.hydra/overrides.yaml``), e.g. ``optim.kappa=0.1``."""
    path = job / ".hydra" / "overrides.yaml"
    items = (yaml.safe_load(path.read_text()) or []) if path.is_file() else []
    return ", ".join(f"`{item}`" for item in items) or "none"


def _cmu_label(cfg: dict[str, Any]) -> tuple[str, str] | None:
    """``(model, objective)`` of a job from its composed config (None: not a Fig. 7 model)."""
    name = str((cfg.get("model") or {}).get("_target_", "")).rsplit(".", 1)[-1]
    if name not in _CMU_MODELS:
        return None
    scheme = (cfg.get("optim") or {}).get("scheme") or {}
    kind = str(scheme.get("_target_", "")).rsplit(".", 1)[-1]
    objective = f"beta = {scheme.get('beta', 1.0):g}" if kind == "ConstantBeta" else kind
    return name, objective


def plot_smoothness_per_joint(
    per_dim: dict[str, list[dict[str, str]]], channels: list[str], path: Path
) -> None:
    """Fig. 7: per output dimension (joint, named by ``channels``), mean and std of the
    smoothness factor per model."""
    import matplotlib.pyplot as plt
    import numpy as np

    n_dims = len(channels)
    width = 0.8 / len(per_dim)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.32 * n_dims), 3.6), layout="constrained")
    for k, (label, rows) in enumerate(per_dim.items()):
        mean = np.array([float(r["smoothness"]) for r in rows])
        std = np.array([float(r.get("smoothness_std") or 0.0) for r in rows])
        x = np.arange(len(rows)) + (k - (len(per_dim) - 1) / 2) * width
        ax.bar(x, mean, width, yerr=std, label=label, capsize=1.5, error_kw={"lw": 0.6})
    ax.set_xticks(np.arange(n_dims))
    ax.set_xticklabels(channels, rotation=90, fontsize=6)
    ax.set_ylabel("smoothness factor (RMS 2nd diff.)")
    ax.set_title("Smoothness of the interpolated movements per joint (Fig. 7); smaller is smoother")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmu_interpolation(sweep_dir: Path, figures_dir: Path | None = None) -> str:
    """Fig. 7's smoothness (mean over graphs x interpolations, and per joint) of every finished
    job of ``experiment=cmu_interpolation`` under ``sweep_dir``; with ``figures_dir``, Fig. 7 is
    drawn there and each model's Fig. 5 and 17 panels are copied beside it."""
    jobs = []
    for cfg_path in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        job = cfg_path.parent.parent
        summary_csv = job / "interpolation" / "interpolation_summary.csv"
        label = _cmu_label(yaml.safe_load(cfg_path.read_text()) or {})
        if label and summary_csv.is_file():
            summary = {r["metric"]: float(r["value"]) for r in read_csv(summary_csv)}
            jobs.append((label, job, summary))
    if not jobs:
        raise FileNotFoundError(
            f"no finished CMU interpolation job under {sweep_dir} (expected <job>/interpolation/"
            "interpolation_summary.csv); run `python -m vhp_lightning.train -m "
            "experiment=cmu_interpolation` first"
        )
    lines = [
        f"# CMU motion capture: smoothness of graph-based interpolations (sweep `{sweep_dir}`)",
        "",
        "Fig. 7 of the paper: the smoothness factor (RMS of the second-order finite difference "
        "along the decoded path, averaged over the 50 joint channels; smaller is smoother) of "
        "n_graphs x n_pairs random interpolations. The paper reports it as a bar chart only "
        "(VHP smoother than VampPrior and IWAE), so there is no number to put beside ours.",
        "",
        "| model | objective | steps | final beta | smoothness mean | std over interpolations "
        "| std over graphs | connected | path points | latent path length | job (overrides) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_dim: dict[str, list[dict[str, str]]] = {}
    copied: list[str] = []
    jobs.sort(key=lambda j: (_CMU_MODELS.index(j[0][0]), j[0][1] != "REWO", str(j[1])))
    for (model, objective), job, m in jobs:
        step, beta = _final_step_and_beta(job)
        name = f"{model} ({objective})"
        lines.append(
            f"| {model} | {objective} | {step if step is not None else '?'} | "
            f"{'?' if beta is None else f'{beta:.3g}'} | {m['smoothness_mean']:.4f} | "
            f"{m['smoothness_std']:.4f} | {m['smoothness_graph_std']:.4f} | "
            f"{m['n_connected']:.0f} / {m['n_interpolations']:.0f} | "
            f"{m['path_points_mean']:.1f} | {m['latent_length_mean']:.2f} | `{job}` "
            f"({_overrides_text(job)}) |"
        )
        per_dim_csv = job / "interpolation" / "smoothness_per_dim.csv"
        if per_dim_csv.is_file():
            per_dim[name] = read_csv(per_dim_csv)
        if figures_dir is not None:
            slug = f"{model}_{objective}".lower().replace(" = ", "").replace(" ", "_")
            for fig_name in _CMU_FIGURES:
                src = job / "interpolation" / fig_name
                if src.is_file():
                    figures_dir.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, figures_dir / f"{slug}_{fig_name}")
                    copied.append(f"{slug}_{fig_name}")
    if per_dim:
        from vhp_lightning.datamodules.cmu_mocap import FEATURE_CHANNELS

        names = list(per_dim)
        lines += [
            "",
            "## Per joint channel (Fig. 7): mean +- std over the connected interpolations",
            "",
            "| channel | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        n_dims = max(len(rows) for rows in per_dim.values())
        named = n_dims == len(FEATURE_CHANNELS)
        channels = list(FEATURE_CHANNELS) if named else [str(d) for d in range(n_dims)]
        for d, channel in enumerate(channels):
            cells = []
            for rows in per_dim.values():
                r = rows[d] if d < len(rows) else None
                std = r.get("smoothness_std") if r else None
                cells.append(
                    ""
                    if r is None
                    else f"{float(r['smoothness']):.4f}" + (f" +- {float(std):.4f}" if std else "")
                )
            lines.append(f"| {channel} | " + " | ".join(cells) + " |")
        if figures_dir is not None:
            plot_smoothness_per_joint(per_dim, channels, figures_dir / "fig7_smoothness.png")
            copied.insert(0, "fig7_smoothness.png")
    if copied and figures_dir is not None:
        lines += ["", "## Figures", ""]
        for fig_name in copied:
            what = next((v for k, v in _CMU_FIGURES.items() if fig_name.endswith(k)), "Fig. 7")
            lines.append(f"- [{fig_name}]({figures_dir.name}/{fig_name}): {what}")
    return "\n".join(lines) + "\n"


REPORTS = {
    "pendulum_table1": None,  # reports/pendulum_table1.py: a CSV filled run by run, see main()
    "table2": table2,
    "cmu_interpolation": cmu_interpolation,
}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted(REPORTS))
    parser.add_argument(
        "sweep_dir",
        type=Path,
        nargs="*",
        help="the multirun folder(s) of the experiment (pendulum_table1: run or sweep dirs to add "
        "to the CSV; none = rebuild the table from the CSV)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: results/<table>.md")
    parser.add_argument(
        "--csv", type=Path, default=None, help="pendulum_table1: default results/<table>.csv"
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="pendulum_table1: where the side-by-side figures of the given runs go (default: none)",
    )
    args = parser.parse_args(argv)
    for folder in args.sweep_dir:
        if not folder.is_dir():
            parser.error(f"sweep_dir {folder} does not exist")
    out = args.out or Path("results") / f"{args.table}.md"
    if args.table == "pendulum_table1":
        text, notes = pendulum_table1.report(
            args.sweep_dir, args.csv or out.with_suffix(".csv"), args.figures
        )
        print("\n".join(notes))
    elif len(args.sweep_dir) != 1:
        parser.error(f"{args.table} takes one sweep_dir")
    elif args.table == "cmu_interpolation":  # the one report with figures: results/<table>/
        text = cmu_interpolation(args.sweep_dir[0], figures_dir=out.with_suffix(""))
    else:
        text = REPORTS[args.table](args.sweep_dir[0])  # type: ignore[misc]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(text + f"\nwritten to {out}")
    return out


if __name__ == "__main__":
    main()
