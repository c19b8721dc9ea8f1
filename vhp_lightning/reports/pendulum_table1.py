"""Table 1 (sec. 4.1, App. B) filled run by run: collect finished runs into a CSV, build the table.

``python -m vhp_lightning.report pendulum_table1 <run or sweep dir> ...`` appends one row per
finished run (``figures/pendulum_metrics.json`` present) to ``results/pendulum_table1.csv`` -- a
row already there (same setting, seed, sigma and steps) is kept, never overwritten -- then
writes ``results/pendulum_table1.md`` from *all* rows of the CSV (mean +- std over seeds per
setting, one table per likelihood reading), and, when runs are given, the side-by-side figure
of the settings (Figs. 2, 11-15) and their beta / C_t traces. A table can so be filled over
several sessions.

The ``sigma`` column is the run's reading of the likelihood: ``1`` for a fixed sigma = 1
(decision 12), ``learned@<init>`` for a learned sigma started at ``init_sigma`` (decision 15).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vhp_lightning.analysis.pendulum import prior_coverage
from vhp_lightning.reports import (
    append_rows,
    find_runs,
    floats,
    mean_std,
    overrides,
    read_csv,
    scheme_trace,
    switch_step,
)

# Table 1 of the paper: absolute error of the OLS regression (rad). App. B.4 gives no number.
PAPER = {
    "rewo": ("VHP + REWO", 0.054),
    "geco": ("VHP + GECO", 0.53),
    "vhp_star": ("VHP*", 0.49),
    "vhp_star_wu20": ("VHP* + WU (20 epochs)", 0.20),
    "vhp_star_wu200": ("VHP* + WU (200 epochs)", 0.31),
    "rewo_elbo_prior": ("VHP + REWO, ELBO in 2nd layer (App. B.4)", None),
}
METRICS = ("arcsin_ols_error", "polar_ols_error", "knn_angle_error", "knn_sample_error")
DIAGNOSTICS = (
    "q_zeta_spread",
    "p_z_std",
    "prior_radius_mean",
    "prior_radius_std",
    "encoded_radius_mean",
    "encoded_radius_std",
)
COVERAGE = ("prior_fit_nn", "prior_outside_3std")  # analysis.pendulum.prior_coverage
COLUMNS = (
    "method",
    "seed",
    "sigma",
    "steps",
    "wall_s",
    *METRICS,
    "polar_slope",
    "final_beta",
    "switch_step",
    "formed_step",
    *DIAGNOSTICS,
    "run",
    *COVERAGE,
    "final_sigma",
)
KEY = ("method", "seed", "sigma", "steps")
FORMED = 0.1  # rad: the latent "has formed" once the kNN error through q(z|x)'s noise is below
# GaussianLikelihood's init_sigma when a learned-sigma config had no init_sigma key (the runs
# made before conf/paper/likelihood/gaussian_learned.yaml set it).
DEFAULT_INIT_SIGMA = 0.1


# --- one run ------------------------------------------------------------------------------------
def reading(likelihood: dict[str, Any] | None) -> str:
    """The ``sigma`` label of a run's ``paper.likelihood`` config: ``"1"`` for a fixed sigma = 1,
    ``"learned@1"`` for a learned sigma started at 1 (``init_sigma``, default 0.1)."""
    likelihood = likelihood or {}
    sigma = likelihood.get("sigma")
    if sigma is not None:
        return f"{float(sigma):g}"
    return f"learned@{float(likelihood.get('init_sigma', DEFAULT_INIT_SIGMA)):g}"


def final_sigma(job: Path) -> float | None:
    """The last logged ``train/sigma`` (a learned likelihood sigma) of a run's CSV logs, or
    ``None`` when it logged none (a fixed sigma)."""
    last: tuple[int, float] | None = None
    for metrics_csv in sorted(job.glob("csv/**/metrics.csv")):
        for row in read_csv(metrics_csv):
            if row.get("train/sigma"):
                step = int(float(row["step"]))
                if last is None or step >= last[0]:
                    last = (step, float(row["train/sigma"]))
    return None if last is None else last[1]


def snapshot_coverage(job: Path, step: int) -> dict[str, float]:
    """``prior_coverage`` of the run's snapshot ``figures/latents_step<step>.npz`` (for runs
    whose ``pendulum_metrics.json`` predates it); ``{}`` when the snapshot is missing."""
    path = job / "figures" / f"latents_step{step}.npz"
    if not path.is_file():
        return {}
    with np.load(path) as arrays:
        if not {"means", "stds", "prior"} <= set(arrays.files):
            return {}
        return prior_coverage(arrays["means"], arrays["stds"], arrays["prior"])


def run_row(job: Path) -> dict[str, Any] | None:
    """The CSV row of one finished Table 1 run (``None`` when it is not one or not finished)."""
    metrics_path = job / "figures" / "pendulum_metrics.json"
    method = overrides(job).get("table1")
    if method not in PAPER or not metrics_path.is_file():
        return None
    metrics = yaml.safe_load(metrics_path.read_text())  # JSON is YAML
    cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text()) or {}
    switch = switch_step(scheme_trace(job))
    snapshots = job / "figures" / "snapshots.csv"
    formed = None
    if snapshots.is_file():
        for row in read_csv(snapshots):
            if row.get("knn_sample_error") and float(row["knn_sample_error"]) < FORMED:
                formed = int(row["step"])
                break
    coverage = {k: metrics[k] for k in COVERAGE if k in metrics}
    if len(coverage) < len(COVERAGE):
        coverage = snapshot_coverage(job, int(metrics["step"]))
    sigma = final_sigma(job)
    start = (job / ".hydra" / "config.yaml").stat().st_mtime
    return {
        "method": method,
        "seed": int(cfg.get("seed", 0)),
        "sigma": reading((cfg.get("paper") or {}).get("likelihood")),
        "steps": int(metrics["step"]),
        "wall_s": round(metrics_path.stat().st_mtime - start),
        **{k: metrics.get(k, "") for k in (*METRICS, "polar_slope")},
        "final_beta": metrics.get("beta"),
        "switch_step": "" if switch is None else switch,
        "formed_step": "" if formed is None else formed,
        **{k: metrics.get(k, "") for k in DIAGNOSTICS},
        "run": job.name if job.parent.name != "." else str(job),
        **{k: coverage.get(k, "") for k in COVERAGE},
        "final_sigma": "" if sigma is None else sigma,
    }


def skipped(paths: list[Path]) -> list[str]:
    """One line per run dir at or below ``paths`` that gives no Table 1 row, saying why."""
    lines = []
    for job in find_runs(paths):
        setting = overrides(job).get("table1")
        if setting is None:
            why = "no `+table1=<setting>` override in .hydra/overrides.yaml (not a Table 1 run)"
        elif setting not in PAPER:
            settings = ", ".join(PAPER)
            why = f"`+table1={setting}` is not a Table 1 setting ({settings})"
        elif not (job / "figures" / "pendulum_metrics.json").is_file():
            why = (
                "not finished: no figures/pendulum_metrics.json (the pendulum figures callback "
                "writes it when training ends); let it finish or resume it (resume=true in its "
                "run dir)"
            )
        else:
            continue
        lines.append(f"no row from {job}: {why}")
    return lines


# --- the table ---------------------------------------------------------------------------------
def _reading_title(sigma: str) -> str:
    """A section heading for one ``sigma`` reading (``"1"``, ``"learned@1"``, ...)."""
    if sigma.startswith("learned@"):
        return f"σ learned, started at {sigma.removeprefix('learned@')} (`{sigma}`, decision 15)"
    if sigma == "learned":  # a row collected before the reading named its start
        return "σ learned (`learned`, start not recorded)"
    return f"σ = {sigma} fixed (`{sigma}`, decision 12)" if sigma == "1" else f"σ = {sigma} fixed"


def _per_seed(group: list[dict[str, str]], key: str, missing: str = "—") -> str:
    """The values of column ``key`` per seed, ``" / "``-separated (3 significant digits)."""
    return " / ".join(f"{float(r[key]):.3g}" if r.get(key) else missing for r in group)


def reading_table(rows: list[dict[str, str]]) -> list[str]:
    """Markdown lines of one reading's table: a line per (setting, steps), mean +- std over
    seeds; a final-σ column when any run learned its sigma."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((r["steps"], r["method"]), []).append(r)
    learned = any(r.get("final_sigma") for r in rows)
    header = (
        "| method | σ | steps | seeds | paper | App. B.3 arcsin OLS (rad) | polar OLS (rad) | "
        "kNN (rad) | kNN through q(z\\|x) noise (rad) | prior fit (NN / radius) | "
        "prior outside 3 std of q | final β | "
        + ("final σ | " if learned else "")
        + "switch step | latent formed at step | std of p(z\\|ζ) | prior / encoded radius | "
        "wall time per run |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    order = {m: i for i, m in enumerate(PAPER)}
    for (steps, method), group in sorted(
        groups.items(), key=lambda kv: (int(kv[0][0]), order.get(kv[0][1], 99))
    ):
        name, paper = PAPER.get(method, (method, None))
        switch = " / ".join(r["switch_step"] or "—" for r in group)
        formed = " / ".join(r["formed_step"] or "never" for r in group)
        radius = (
            f"{mean_std(floats(group, 'prior_radius_mean'), 1)} / "
            f"{mean_std(floats(group, 'encoded_radius_mean'), 1)}"
        )
        wall = floats(group, "wall_s")
        lines.append(
            f"| {name} | {group[0]['sigma']} | {steps} | {', '.join(r['seed'] for r in group)} | "
            f"{'—' if paper is None else f'{paper:.3g}'} | "
            + " | ".join(mean_std(floats(group, k)) for k in METRICS)
            + " | "
            + " | ".join(mean_std(floats(group, k), 2) for k in COVERAGE)
            + f" | {_per_seed(group, 'final_beta')} | "
            + (f"{_per_seed(group, 'final_sigma')} | " if learned else "")
            + f"{switch} | {formed} | {mean_std(floats(group, 'p_z_std'), 2)} | "
            f"{radius} | {np.mean(wall) / 60:.0f} min |"
        )
    return lines


def table(rows: list[dict[str, str]]) -> str:
    """Markdown: one table per likelihood reading (``sigma``: fixed ``1`` first, then the
    learned ones), in each a line per (setting, steps) with mean +- std over its seeds."""
    readings: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        readings.setdefault(r["sigma"], []).append(r)
    lines = [
        "# Table 1: OLS regression on the pendulum latents",
        "",
        "Built by `python -m vhp_lightning.report pendulum_table1` from every row of "
        "`results/pendulum_table1.csv` (one row per finished run); mean ± std over seeds, one "
        "table per reading of the likelihood p(x|z).",
    ]
    for sigma in sorted(readings, key=lambda s: (s.startswith("learned"), s)):
        lines += ["", f"## {_reading_title(sigma)}", "", *reading_table(readings[sigma])]
    seeds = {m: {r["seed"] for r in rows if r["method"] == m} for m in PAPER}
    missing = [name for m, (name, _) in PAPER.items() if len(seeds[m]) < 2]
    lines += [
        "",
        "Metrics (decision 8, docs/pendulum.md), all mean absolute angular errors in radians of "
        "the test set's posterior means: *App. B.3 arcsin OLS* is the paper's statistic as "
        "written (it folds the two halves of the ring, so even a perfect ring scores about "
        "1 rad); *polar OLS* uses the full polar angle around a fitted centre; *kNN* is a "
        "cross-validated 5-NN regression of (cos, sin) of the angle, which does not assume a "
        "ring; *through q(z|x) noise*: the same kNN on one sample z ~ q(z|x) per image, "
        f"about π/2 while the posterior is collapsed. *Latent formed*: the first snapshot with "
        f"that error below {FORMED} rad. β, σ and switch step per seed.",
        "",
        "Whether the prior takes the shape of the encoded data (sec. 4.1; "
        "`analysis.pendulum.prior_coverage`, at the last snapshot, 2000 prior samples): *prior "
        "fit* is the symmetric mean nearest-neighbour distance between prior samples and "
        "posterior means over the mean radius of the means (a ring prior on the ring of means "
        "scores about 0.01, N(0, I) about 0.27); *outside 3 std of q*: the fraction of prior "
        "samples outside every posterior's 3-std ellipse. *Final σ*: the learned likelihood σ "
        "at the end of the run.",
    ]
    if missing:
        lines += ["", "Settings with fewer than two seeds: " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


# --- figures -------------------------------------------------------------------------------------
def _snapshot_steps(job: Path) -> list[int]:
    return sorted(int(p.stem.removeprefix("latents_step")) for p in job.glob("figures/*.npz"))


def plot_side_by_side(jobs: dict[str, Path], path: Path, n_steps: int = 4) -> list[int]:
    """Figs. 2, 11-15 side by side (``analysis.figures.plot_snapshot_grid``): a column per
    setting, per chosen step a row of posterior means (coloured by angle) and a row of prior
    samples, written to ``path``.

    ``jobs``: setting -> run dir (with ``figures/latents_step<k>.npz``). The steps are spread
    over those all runs share (the last always included). Returns the steps drawn.
    """
    from vhp_lightning.analysis.figures import plot_snapshot_grid, save_figure

    common = sorted(set.intersection(*(set(_snapshot_steps(j)) for j in jobs.values())))
    if not common:
        raise FileNotFoundError("the runs share no snapshot step (figures/latents_step<k>.npz)")
    picks = sorted({common[round(i)] for i in np.linspace(0, len(common) - 1, n_steps)})
    columns = {
        PAPER.get(setting, (setting,))[0]: [
            dict(np.load(job / "figures" / f"latents_step{step}.npz")) for step in picks
        ]
        for setting, job in jobs.items()
    }
    save_figure(plot_snapshot_grid(picks, columns), path)
    return picks


def plot_traces(jobs: dict[str, Path], path: Path, kappa_sq: float | None = None) -> None:
    """beta and C_t against the step for every setting on one pair of axes (log scales), REWO's
    phase switches dotted, written to ``path``."""
    from vhp_lightning.analysis.figures import plot_beta_traces, save_figure

    traces = {PAPER.get(setting, (setting,))[0]: scheme_trace(job) for setting, job in jobs.items()}
    sigmas = {
        label: (t["step"][ok], t["sigma"][ok])
        for label, t in traces.items()
        if (ok := np.isfinite(t["sigma"])).any()
    }
    fig = plot_beta_traces(
        {label: (t["step"], t["beta"], t["c_hat"]) for label, t in traces.items()},
        kappa_sq,
        {label: switch_step(t) for label, t in traces.items()},
        sigmas=sigmas,
    )
    save_figure(fig, path, dpi=90)


def report(paths: list[Path], csv_path: Path, figures_dir: Path | None) -> tuple[str, list[str]]:
    """Collect ``paths`` into ``csv_path``, return the table and what was done (lines)."""
    notes = []
    pairs = [(job, row) for job in find_runs(paths) if (row := run_row(job)) is not None]
    rows = [row for _, row in pairs]
    if paths:
        added, kept = append_rows(csv_path, rows, COLUMNS, KEY)
        notes.append(f"{added} row(s) added to {csv_path}, {kept} already there")
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{csv_path} does not exist and no finished Table 1 run was given; run "
            "`python -m vhp_lightning.train -m experiment=pendulum_table1` first, then "
            "`python -m vhp_lightning.report pendulum_table1 multirun/pendulum_table1/<date>`"
        )
    if figures_dir is not None and rows:
        by_seed: dict[tuple[int, str, int], dict[str, Path]] = {}
        for job, row in pairs:
            by_seed.setdefault((row["seed"], row["sigma"], row["steps"]), {})[row["method"]] = job
        for (seed, sigma, steps), group in by_seed.items():
            group = {m: group[m] for m in PAPER if m in group}
            stem = f"table1_sigma{sigma}_{steps}steps_seed{seed}"
            picks = plot_side_by_side(group, figures_dir / f"{stem}_latents.png")
            plot_traces(group, figures_dir / f"{stem}_beta.png", _kappa_sq(group))
            notes.append(f"figures {figures_dir}/{stem}_{{latents,beta}}.png (steps {picks})")
    return table(read_csv(csv_path)), notes


def _kappa_sq(jobs: dict[str, Path]) -> float | None:
    from omegaconf import OmegaConf

    for job in jobs.values():  # the stored config keeps interpolations such as ${paper.kappa}
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        kappa = OmegaConf.select(
            cfg, "optim.kappa", default=None, throw_on_resolution_failure=False
        )
        if kappa is not None:
            return float(kappa) ** 2
    return None
