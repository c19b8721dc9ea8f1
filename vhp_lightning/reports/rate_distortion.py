"""NLL vs rate vs distortion across the runs of a sweep (App. D.1, Fig. 19).

python -m vhp_lightning.reports.rate_distortion multirun/<sweep>/<date_time> [--results]
    [--out DIR] [--last 5]
# -> <sweep>/report/rate_distortion.png and .csv (with --results: results/rate_distortion.*)

For every job folder of the sweep (one with ``.hydra/``), reads the CSV logger's
``metrics.csv`` (``<job>/csv/metrics.csv``): the rate is ``train/kl`` (the KL term, F of eq. 8
for the VHP), the distortion the reconstruction term ``train/recon``, each the mean of its last
``--last`` logged values; the NLL is the importance-sampled ``test/nll`` (sec. 4.3) where the job
logged one, else empty. The job is labelled by its overrides (``.hydra/overrides.yaml``).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

from vhp_lightning.reports import open_for_writing
from vhp_lightning.runs.record import read_overrides, record_path

RATE_KEY = "train/kl"
DISTORTION_KEY = "train/recon"
NLL_KEY = "test/nll"
FIELDS = ("job", "label", "rate", "distortion", "nll", "negative_elbo", "step", "metrics_csv")


def _column(rows: list[dict[str, str]], key: str, last: int) -> float:
    """Mean of the last ``last`` non-empty values of column ``key`` (NaN if none)."""
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    values = [v for v in values if math.isfinite(v)][-last:]
    return sum(values) / len(values) if values else math.nan


def _label(job: Path) -> str:
    return " ".join(read_overrides(job)) or job.name


def read_job(job: Path, last: int = 5) -> dict[str, Any] | None:
    """One row of ``FIELDS`` for the job folder ``job``, or None if it has no ``metrics.csv``."""
    found = sorted(job.rglob("metrics.csv"))
    if not found:
        return None
    with found[0].open(newline="") as f:
        rows = list(csv.DictReader(f))
    rate, distortion = _column(rows, RATE_KEY, last), _column(rows, DISTORTION_KEY, last)
    nll = _column(rows, NLL_KEY, 1)
    steps = [int(float(r["step"])) for r in rows if r.get("step") not in (None, "")]
    return {
        "job": job.name,
        "label": _label(job),
        "rate": rate,
        "distortion": distortion,
        "nll": nll,
        "negative_elbo": rate + distortion,
        "step": max(steps) if steps else "",
        "metrics_csv": str(found[0]),
    }


def collect(sweep_dir: str | Path, last: int = 5) -> list[dict[str, Any]]:
    """Rows for every job of ``sweep_dir`` (sorted by job name) that has a ``metrics.csv``.

    Raises:
        FileNotFoundError: ``sweep_dir`` is missing, or none of its jobs has logged metrics.
    """
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise FileNotFoundError(f"sweep dir {sweep} does not exist; pass multirun/<...>/<date>")
    jobs = sorted((p for p in sweep.iterdir() if record_path(p).is_dir()), key=_job_order)
    rows = [r for r in (read_job(j, last) for j in jobs) if r is not None]
    if not rows:
        raise FileNotFoundError(
            f"no job under {sweep} has a metrics.csv (found {len(jobs)} job folders with "
            ".hydra/); run the sweep with the CSV logger (logger=csv, the default) first"
        )
    return rows


def _job_order(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 30, path.name)


def write_report(rows: list[dict[str, object]], out_dir: str | Path) -> tuple[Path, Path]:
    """``out_dir/rate_distortion.csv`` and ``.png`` (Fig. 19); returns both paths."""
    from vhp_lightning.analysis.figures import plot_rate_distortion, save_figure

    out = Path(out_dir)
    csv_path, png_path = out / "rate_distortion.csv", out / "rate_distortion.png"
    with open_for_writing(csv_path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    save_figure(plot_rate_distortion(rows), png_path, dpi=120)
    return csv_path, png_path


def main(argv: list[str] | None = None) -> tuple[Path, Path]:
    """The command line (module docstring); returns the CSV and PNG written."""
    import matplotlib

    matplotlib.use("Agg")  # the figure is written to a file, never shown
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a multirun folder: multirun/<...>/<date_time>")
    parser.add_argument(
        "--results", action="store_true", help="write into results/ (default: <sweep>/report/)"
    )
    parser.add_argument("--out", default=None, help="output folder (overrides --results)")
    parser.add_argument("--last", type=int, default=5, help="average the last N logged values")
    args = parser.parse_args(argv)
    if args.last < 1:
        parser.error(f"--last must be >= 1, got {args.last}")
    rows = collect(args.sweep_dir, args.last)
    out = args.out or ("results" if args.results else Path(args.sweep_dir) / "report")
    paths = write_report(rows, out)
    for r in rows:
        print(
            f"{r['job']:>4}  rate {float(r['rate']):9.3f}  distortion {float(r['distortion']):9.3f}"
            f"  nll {float(r['nll']):9.3f}  {r['label']}"
        )
    print(f"written: {paths[0]}, {paths[1]}")
    return paths


if __name__ == "__main__":
    main()
