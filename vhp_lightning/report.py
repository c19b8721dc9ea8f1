"""Collect the metrics of a reproduction sweep into a Markdown table beside the paper's numbers.

python -m vhp_lightning.report pendulum_table1 multirun/pendulum_table1/<date_time>
# -> results/pendulum_table1.md
python -m vhp_lightning.report table2 <folder with train runs and/or evaluate outputs>
# -> results/table2.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

import yaml

# Table 1 of the paper: absolute error of the OLS regression (rad). App. B.4 gives no number.
PENDULUM_TABLE1 = {
    "rewo": ("VHP + REWO", 0.054),
    "geco": ("VHP + GECO", 0.53),
    "vhp_star": ("VHP*", 0.49),
    "vhp_star_wu20": ("VHP* + WU (20 epochs)", 0.20),
    "vhp_star_wu200": ("VHP* + WU (200 epochs)", 0.31),
    "rewo_elbo_prior": ("VHP + REWO, ELBO in 2nd layer (App. B.4)", None),
}


def _job_setting(job: Path, key: str) -> str | None:
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    for item in overrides:
        name, _, value = str(item).lstrip("+").partition("=")
        if name == key:
            return value
    return None


def pendulum_table1(sweep_dir: Path) -> str:
    """One row per Table 1 setting found in ``sweep_dir/<job>/`` (missing jobs are marked)."""
    found: dict[str, dict] = {}
    for job in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()):
        setting = _job_setting(job, "table1")
        metrics = job / "figures" / "pendulum_metrics.json"
        if setting and metrics.is_file():
            found[setting] = json.loads(metrics.read_text())
    if not found:
        raise FileNotFoundError(
            f"no finished Table 1 job under {sweep_dir} (expected <job>/figures/"
            "pendulum_metrics.json); run `python -m vhp_lightning.train -m "
            "experiment=pendulum_table1` first"
        )
    lines = [
        f"# Table 1: OLS regression on the pendulum latents (sweep `{sweep_dir}`)",
        "",
        "| method | paper | ours: polar OLS error (rad) | ours: kNN error (rad) | "
        "polar slope | steps | final beta |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, (name, paper) in PENDULUM_TABLE1.items():
        m = found.get(key)
        paper_txt = "—" if paper is None else f"{paper:.3g}"
        if m is None:
            lines.append(f"| {name} | {paper_txt} | not run | | | | |")
            continue
        lines.append(
            f"| {name} | {paper_txt} | {m['polar_ols_error']:.3f} | {m['knn_angle_error']:.3f} | "
            f"{m['polar_slope']:.2f} | {m['step']} | {m['beta']:.3g} |"
        )
    lines += [
        "",
        "polar OLS: the paper's metric (App. B.3) with the full polar angle around a fitted "
        "centre (READING-NOTES 8); kNN: cross-validated 5-NN regression of (cos, sin) of the "
        "angle, which does not assume a ring. See docs/pendulum.md.",
    ]
    return "\n".join(lines) + "\n"


# Table 2 of the paper: negative test log-likelihood (nats), S = 5000 importance samples.
TABLE2_COLUMNS = {
    "datamodules.mnist.MNISTDataModule": "dynamic MNIST",
    "datamodules.mnist.StaticMNISTDataModule": "static MNIST",
    "datamodules.mnist.FashionMNISTDataModule": "Fashion-MNIST",
    "datamodules.mnist.OmniglotDataModule": "OMNIGLOT",
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
    """The last logged ``key`` of a CSVLogger file and its step. Logs without ``*/recon``
    columns predate ``test/nll`` = -log p(x) (it was the reconstruction term): skipped."""
    found = None
    with metrics_csv.open() as f:
        reader = csv.DictReader(f)
        if not any(name.endswith("/recon") for name in reader.fieldnames or ()):
            return None
        for row in reader:
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
                "model": data.get("model"), "scheme": data.get("scheme"),
                "dataset": data.get("dataset"), "nll": nll["nll"],
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
        runs.append({
            "model": cfg["model"].get("_target_"),
            "scheme": ((cfg.get("optim") or {}).get("scheme") or {}).get("_target_"),
            "dataset": dataset.get("_target_"), "nll": last[0],
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


REPORTS = {"pendulum_table1": pendulum_table1, "table2": table2}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted(REPORTS))
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder of the experiment")
    parser.add_argument("--out", type=Path, default=None, help="default: results/<table>.md")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"sweep_dir {args.sweep_dir} does not exist")
    text = REPORTS[args.table](args.sweep_dir)
    out = args.out or Path("results") / f"{args.table}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(text + f"\nwritten to {out}")
    return out


if __name__ == "__main__":
    main()
