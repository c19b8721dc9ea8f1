"""Fig. 7 (sec. 4.2, App. C): the smoothness of graph-based interpolations per model, collected
from the jobs of ``experiment=cmu_interpolation`` into ``<sweep>/report/cmu_interpolation.md``
(with ``--results``: ``results/cmu_interpolation.md``), with Fig. 7 drawn and each model's Fig. 5
and 17 panels copied beside it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhp_lightning.reports import Column, markdown_table, open_for_writing, read_csv
from vhp_lightning.runs.record import read_config, read_overrides, record_path

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


def _jobs(sweep_dir: Path) -> list[Path]:
    """Every run dir under ``sweep_dir`` that holds a composed config, in path order."""
    return sorted(p.parent.parent for p in sweep_dir.rglob(str(record_path(Path(), "config.yaml"))))


def _overrides_text(job: Path) -> str:
    """The job's command-line overrides (``.hydra/overrides.yaml``), e.g. ``optim.kappa=0.1``."""
    return ", ".join(f"`{item}`" for item in read_overrides(job)) or "none"


def _cmu_label(cfg: dict[str, Any]) -> tuple[str, str] | None:
    """``(model, objective)`` of a job from its composed config (None: not a Fig. 7 model)."""
    name = str((cfg.get("model") or {}).get("_target_", "")).rsplit(".", 1)[-1]
    if name not in _CMU_MODELS:
        return None
    scheme = (cfg.get("optim") or {}).get("scheme") or {}
    kind = str(scheme.get("_target_", "")).rsplit(".", 1)[-1]
    objective = f"beta = {scheme.get('beta', 1.0):g}" if kind == "ConstantBeta" else kind
    return name, objective


@dataclass(frozen=True)
class _Job:
    """A finished Fig. 7 job: its model and objective, its run dir, its interpolation summary
    and the last step and beta of its CSV log (None: none logged)."""

    model: str
    objective: str
    path: Path
    summary: dict[str, float]  # interpolation/interpolation_summary.csv: metric -> value
    step: int | None
    beta: float | None


def _summary(metric: str, spec: str) -> Callable[[_Job], str]:
    """The cell of a job's summary ``metric`` in the format ``spec`` (``".4f"``)."""
    return lambda job: f"{job.summary[metric]:{spec}}"


# Fig. 7's table: a line per job.
_JOB_COLUMNS: tuple[Column[_Job], ...] = (
    Column("model", lambda job: job.model),
    Column("objective", lambda job: job.objective),
    Column("steps", lambda job: "?" if job.step is None else str(job.step)),
    Column("final beta", lambda job: "?" if job.beta is None else f"{job.beta:.3g}"),
    Column("smoothness mean", _summary("smoothness_mean", ".4f")),
    Column("std over interpolations", _summary("smoothness_std", ".4f")),
    Column("std over graphs", _summary("smoothness_graph_std", ".4f")),
    Column(
        "connected",
        lambda job: f"{job.summary['n_connected']:.0f} / {job.summary['n_interpolations']:.0f}",
    ),
    Column("path points", _summary("path_points_mean", ".1f")),
    Column("latent path length", _summary("latent_length_mean", ".2f")),
    Column("job (overrides)", lambda job: f"`{job.path}` ({_overrides_text(job.path)})"),
)


def _per_joint(rows: list[dict[str, str]]) -> Callable[[int], str]:
    """A model's cell of output dimension ``d`` in the per-joint table, from the rows of its
    ``smoothness_per_dim.csv``: ``mean +- std``, ``mean`` without a std, empty past its rows."""

    def cell(d: int) -> str:
        if d >= len(rows):
            return ""
        std = rows[d].get("smoothness_std")
        return f"{float(rows[d]['smoothness']):.4f}" + (f" +- {float(std):.4f}" if std else "")

    return cell


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
    for job in _jobs(sweep_dir):
        label = _cmu_label(read_config(job))
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
    jobs: list[_Job] = []
    for run_dir in _jobs(sweep_dir):
        summary_csv = run_dir / "interpolation" / "interpolation_summary.csv"
        label = _cmu_label(read_config(run_dir))
        if label and summary_csv.is_file():
            model, objective = label
            summary = {r["metric"]: float(r["value"]) for r in read_csv(summary_csv)}
            step, beta = _final_step_and_beta(run_dir)
            jobs.append(_Job(model, objective, run_dir, summary, step, beta))
    if not jobs:
        raise FileNotFoundError(
            f"no finished CMU interpolation job under {sweep_dir} (expected <job>/interpolation/"
            "interpolation_summary.csv); run `python -m vhp_lightning.train -m "
            "experiment=cmu_interpolation` first"
        )
    jobs.sort(
        key=lambda job: (_CMU_MODELS.index(job.model), job.objective != "REWO", str(job.path))
    )
    lines = [
        f"# CMU motion capture: smoothness of graph-based interpolations (sweep `{sweep_dir}`)",
        "",
        "Fig. 7 of the paper: the smoothness factor (RMS of the second-order finite difference "
        "along the decoded path, averaged over the 50 joint channels; smaller is smoother) of "
        "n_graphs x n_pairs random interpolations. The paper reports it as a bar chart only "
        "(VHP smoother than VampPrior and IWAE), so there is no number to put beside ours.",
        "",
        *markdown_table(_JOB_COLUMNS, jobs),
    ]
    per_dim: dict[str, list[dict[str, str]]] = {}
    copied: list[str] = []
    for job in jobs:
        per_dim_csv = job.path / "interpolation" / "smoothness_per_dim.csv"
        if per_dim_csv.is_file():
            per_dim[f"{job.model} ({job.objective})"] = read_csv(per_dim_csv)
        if figures_dir is not None:
            slug = f"{job.model}_{job.objective}".lower().replace(" = ", "").replace(" ", "_")
            for fig_name in _CMU_FIGURES:
                src = job.path / "interpolation" / fig_name
                if src.is_file():
                    with open_for_writing(figures_dir / f"{slug}_{fig_name}", "wb") as f:
                        f.write(src.read_bytes())
                    copied.append(f"{slug}_{fig_name}")
    if per_dim:
        from vhp_lightning.datamodules.cmu_mocap import FEATURE_CHANNELS

        n_dims = max(len(rows) for rows in per_dim.values())
        named = n_dims == len(FEATURE_CHANNELS)
        channels = list(FEATURE_CHANNELS) if named else [str(d) for d in range(n_dims)]
        joint_columns = [
            Column("channel", lambda d: channels[d]),
            *(Column(name, _per_joint(rows)) for name, rows in per_dim.items()),
        ]
        lines += [
            "",
            "## Per joint channel (Fig. 7): mean +- std over the connected interpolations",
            "",
            *markdown_table(joint_columns, range(n_dims)),
        ]
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
