"""Collect the metrics of a reproduction sweep into a Markdown table beside the paper's numbers.

python -m vhp_lightning.report pendulum_table1 multirun/pendulum_table1/<date_time>
# -> results/pendulum_table1.md
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

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


REPORTS = {"pendulum_table1": pendulum_table1}


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
