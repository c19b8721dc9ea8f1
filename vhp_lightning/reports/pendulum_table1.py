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

import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vhp_lightning.analysis.pendulum import prior_coverage
from vhp_lightning.reports import (
    Column,
    append_rows,
    find_runs,
    floats,
    markdown_table,
    mean_std,
    overrides,
    read_csv,
    scheme_trace,
    switch_step,
)
from vhp_lightning.runs.record import read_config, record_path

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
    "posterior_std",
    "p_z_mean_spread",
)
KEY = ("method", "seed", "sigma", "steps")
# A snapshot row's own fields (callbacks.table1_metrics); every other number in it is a metric.
OWN = ("step", "beta", "c_hat")
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
    cfg = read_config(job)
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
    start = record_path(job, "config.yaml").stat().st_mtime
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
        **{k: metrics[k] for k in metric_names(metrics) if k not in (*METRICS, *COVERAGE)},
    }


def metric_names(metrics: dict[str, Any]) -> list[str]:
    """The metrics of a ``pendulum_metrics.json`` row: every number but the row's own fields,
    in the file's order (whatever the config's ``PendulumMetrics.metrics`` returned)."""
    return [
        k
        for k, v in metrics.items()
        if k not in OWN and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


def csv_columns(csv_path: Path, rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """``COLUMNS``, then every further metric column of ``csv_path``'s header and of ``rows``, in
    order of appearance: a metric added to the config becomes a column of its own (rows
    collected before it stay empty there). Only lower-case identifiers after a header that
    starts with ``method`` count; anything else is left for ``read_results`` to refuse."""
    header: list[str] = []
    if csv_path.is_file():
        with csv_path.open(newline="", errors="replace") as f:
            header = next(csv.reader(f), [])
    if header[:1] != ["method"]:
        header = []
    names = dict.fromkeys([*header, *(k for r in rows for k in r)])
    extra = [k for k in names if k not in COLUMNS and re.fullmatch(r"[a-z_][a-z0-9_]*", k)]
    return (*COLUMNS, *extra)


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


# The CSV rows of one line of the table: one setting and budget, a row per seed.
Seeds = list[dict[str, str]]


def _setting(group: Seeds) -> tuple[str, float | None]:
    """The paper's name of the line's setting and its Table 1 number (None: the paper has
    none, or the setting is not the paper's)."""
    method = group[0]["method"]
    return PAPER.get(method, (method, None))


def _mean_std(key: str, digits: int = 3) -> Callable[[Seeds], str]:
    """The cell of column ``key``: mean +- std over the seeds (``mean_std``)."""
    return lambda group: mean_std(floats(group, key), digits)


def _per_seed(key: str) -> Callable[[Seeds], str]:
    """The cell of column ``key``: its value per seed, ``" / "``-separated (3 significant
    digits, ``—`` for a seed without one)."""
    return lambda group: " / ".join(f"{float(r[key]):.3g}" if r.get(key) else "—" for r in group)


def _radius(group: Seeds) -> str:
    """Mean +- std over the seeds of the prior's and of the encoded data's mean radius."""
    prior, encoded = floats(group, "prior_radius_mean"), floats(group, "encoded_radius_mean")
    return f"{mean_std(prior, 1)} / {mean_std(encoded, 1)}"


def _columns(learned: bool, extra: list[str]) -> list[Column[Seeds]]:
    """Table 1's columns, a line per (setting, steps); a final-σ column when ``learned`` (a run
    of the reading learned its sigma), and one mean +- std column per ``extra`` metric (a
    metric this spec does not name, under its own name)."""
    return [
        Column("method", lambda group: _setting(group)[0]),
        Column("σ", lambda group: group[0]["sigma"]),
        Column("steps", lambda group: group[0]["steps"]),
        Column("seeds", lambda group: ", ".join(r["seed"] for r in group)),
        Column("paper", lambda group: "—" if (p := _setting(group)[1]) is None else f"{p:.3g}"),
        Column("App. B.3 arcsin OLS (rad)", _mean_std("arcsin_ols_error")),
        Column("polar OLS (rad)", _mean_std("polar_ols_error")),
        Column("kNN (rad)", _mean_std("knn_angle_error")),
        Column("kNN through q(z\\|x) noise (rad)", _mean_std("knn_sample_error")),
        Column("prior fit (NN / radius)", _mean_std("prior_fit_nn", 2)),
        Column("prior outside 3 std of q", _mean_std("prior_outside_3std", 2)),
        Column("final β", _per_seed("final_beta")),
        *([Column("final σ", _per_seed("final_sigma"))] if learned else []),
        Column("switch step", lambda group: " / ".join(r["switch_step"] or "—" for r in group)),
        Column(
            "latent formed at step",
            lambda group: " / ".join(r["formed_step"] or "never" for r in group),
        ),
        Column("std of p(z\\|ζ)", _mean_std("p_z_std", 2)),
        Column("prior / encoded radius", _radius),
        *(Column(name, _mean_std(name)) for name in extra),
        Column(
            "wall time per run", lambda group: f"{np.mean(floats(group, 'wall_s')) / 60:.0f} min"
        ),
    ]


def reading_table(rows: list[dict[str, str]]) -> list[str]:
    """Markdown lines of one reading's table: a line per (setting, steps), mean +- std over
    seeds; a final-σ column when any run learned its sigma."""
    groups: dict[tuple[str, str], Seeds] = {}
    for r in rows:
        groups.setdefault((r["steps"], r["method"]), []).append(r)
    order = {m: i for i, m in enumerate(PAPER)}

    def line_order(key: tuple[str, str]) -> tuple[int, int]:
        steps, method = key
        return int(steps), order.get(method, 99)

    learned = any(r.get("final_sigma") for r in rows)
    # A metric column the spec does not name (COLUMNS not shown are the CSV's diagnostics).
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in COLUMNS]
    extra = [k for k in extra if any(r.get(k) for r in rows)]
    lines = [groups[k] for k in sorted(groups, key=line_order)]
    return markdown_table(_columns(learned, extra), lines)


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
        added, kept = append_rows(csv_path, rows, csv_columns(csv_path, rows), KEY)
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
        cfg = OmegaConf.create(read_config(job))
        kappa = OmegaConf.select(
            cfg, "optim.kappa", default=None, throw_on_resolution_failure=False
        )
        if kappa is not None:
            return float(kappa) ** 2
    return None
