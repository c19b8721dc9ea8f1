"""Collect the metrics of a reproduction sweep into a Markdown table beside the paper's numbers.

python -m vhp_lightning.report pendulum_table1 multirun/pendulum_table1/<date_time> [run dir ...]
# -> rows appended to results/pendulum_table1.csv; results/pendulum_table1.md from all rows
python -m vhp_lightning.report table2 multirun/table2/<date_time> [run or evaluate dir ...]
# -> rows appended to results/table2.csv, each run's curves to results/table2/;
#    results/table2.md from all rows
python -m vhp_lightning.report cmu_interpolation multirun/cmu_interpolation/<date_time>
# -> results/cmu_interpolation.md and its figures in results/cmu_interpolation/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vhp_lightning.io.files import write_text
from vhp_lightning.reports import pendulum_table1, table2
from vhp_lightning.reports.cmu_interpolation import cmu_interpolation

REPORTS = {  # the tables filled run by run into results/<table>.csv (reports/<table>.py)
    "pendulum_table1": pendulum_table1.report,
    "table2": table2.report,
}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted([*REPORTS, "cmu_interpolation"]))
    parser.add_argument(
        "sweep_dir",
        type=Path,
        nargs="*",
        help="the multirun folder(s) of the experiment (pendulum_table1, table2: run or sweep "
        "dirs to add to the CSV; none = rebuild the table from the CSV)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: results/<table>.md")
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="pendulum_table1, table2: default results/<table>.csv",
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="pendulum_table1: where the figures of the given runs go; table2: where the "
        "figures of every run kept in results/table2/ go (default: none)",
    )
    args = parser.parse_args(argv)
    for folder in args.sweep_dir:
        if not folder.is_dir():
            parser.error(f"sweep_dir {folder} does not exist")
    out = args.out or Path("results") / f"{args.table}.md"
    if args.table in REPORTS:
        report = REPORTS[args.table]
        text, notes = report(args.sweep_dir, args.csv or out.with_suffix(".csv"), args.figures)
        print("\n".join(notes))
    elif len(args.sweep_dir) != 1:
        parser.error(f"{args.table} takes one sweep_dir")
    else:  # cmu_interpolation: its figures go to results/<table>/
        text = cmu_interpolation(args.sweep_dir[0], figures_dir=out.with_suffix(""))
    write_text(out, text)
    print(text + f"\nwritten to {out}")
    return out


if __name__ == "__main__":
    main()
