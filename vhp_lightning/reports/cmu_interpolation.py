"""Fig. 7 (sec. 4.2, App. C): the smoothness of graph-based interpolations per model, collected
from the jobs of ``experiment=cmu_interpolation`` into ``<sweep>/report/cmu_interpolation.md``
(with ``--results``: ``results/cmu_interpolation.md``), with Fig. 7 drawn and each model's Fig. 5
and 17 panels copied beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from vhp_lightning.reports import open_for_writing, read_csv

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
    smoothness factor per model (``per_dim``: model -> rows of its ``smoothness_per_dim.csv``),
    written to ``path``."""
    import numpy as np

    from vhp_lightning.analysis.figures import plot_smoothness_per_dim, save_figure

    bars = {
        label: (
            np.array([float(r["smoothness"]) for r in rows]),
            np.array([float(r.get("smoothness_std") or 0.0) for r in rows]),
        )
        for label, rows in per_dim.items()
    }
    title = "Smoothness of the interpolated movements per joint (Fig. 7); smaller is smoother"
    save_figure(plot_smoothness_per_dim(bars, channels, title), path)


def skipped(sweep_dir: Path) -> list[str]:
    """One line per job under ``sweep_dir`` that gives no Fig. 7 row, saying why."""
    lines = []
    for cfg_path in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        job = cfg_path.parent.parent
        label = _cmu_label(yaml.safe_load(cfg_path.read_text()) or {})
        if label is None:
            lines.append(f"no row from {job}: not a Fig. 7 model ({', '.join(_CMU_MODELS)})")
        elif not (job / "interpolation" / "interpolation_summary.csv").is_file():
            lines.append(
                f"no row from {job}: not finished, no interpolation/interpolation_summary.csv "
                "(the interpolation analysis writes it after training); let it finish or "
                "resume it (resume=true in its run dir)"
            )
    return lines


def cmu_interpolation(
    sweep_dir: Path, figures_dir: Path | None = None, md_dir: Path | None = None
) -> str:
    """Fig. 7's smoothness (mean over graphs x interpolations, and per joint) of every finished
    job of ``experiment=cmu_interpolation`` under ``sweep_dir``; with ``figures_dir``, Fig. 7 is
    drawn there and each model's Fig. 5 and 17 panels are copied beside it, linked from the
    Markdown relative to ``md_dir`` (default: the folder of ``figures_dir``)."""
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
                    with open_for_writing(figures_dir / f"{slug}_{fig_name}", "wb") as f:
                        f.write(src.read_bytes())
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
        link = Path(os.path.relpath(figures_dir, md_dir or figures_dir.parent)).as_posix()
        for fig_name in copied:
            what = next((v for k, v in _CMU_FIGURES.items() if fig_name.endswith(k)), "Fig. 7")
            lines.append(f"- [{fig_name}]({link}/{fig_name}): {what}")
    return "\n".join(lines) + "\n"
