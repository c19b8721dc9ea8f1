"""Collect the metrics of a reproduction sweep into a Markdown table beside the paper's numbers.

python -m vhp_lightning.report pendulum_table1 multirun/pendulum_table1/<date_time> [run dir ...]
# -> <first dir>/report/pendulum_table1.csv (rows appended) and .md from all its rows
python -m vhp_lightning.report table2 multirun/table2/<date_time> [run or evaluate dir ...]
# -> <first dir>/report/table2.csv, each run's curves in <first dir>/report/table2/, and .md
python -m vhp_lightning.report cmu_interpolation multirun/cmu_interpolation/<date_time>
# -> <dir>/report/cmu_interpolation.md and its figures in <dir>/report/cmu_interpolation/
add --results to add the rows to the committed results/<table>.csv|.md (and results/<table>/);
python -m vhp_lightning.report pendulum_table1   # no dir: results/<table>.md from its .csv again
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from vhp_lightning.reports import (
    ReportWriteError,
    ResultsFileError,
    pendulum_table1,
    read_results,
    table2,
    write_report_text,
)
from vhp_lightning.reports import cmu_interpolation as cmu

RESULTS = Path("results")  # the committed results: written only with --results or no sweep dir


# The tables filled run by run into a CSV (reports/<table>.py), and why a run gives no row.
REPORTS = {"pendulum_table1": pendulum_table1, "table2": table2}
SKIPPED: dict[str, Callable[[list[Path]], list[str]]] = {
    "pendulum_table1": pendulum_table1.skipped,
    "table2": table2.skipped,
}


def main(argv: list[str] | None = None) -> Path:
    """The command line (module docstring); returns the Markdown file written. A damaged
    results CSV raises ``ResultsFileError`` before anything is written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted([*REPORTS, "cmu_interpolation"]))
    parser.add_argument(
        "sweep_dir",
        type=Path,
        nargs="*",
        help="the multirun folder(s) of the experiment (pendulum_table1, table2: run or sweep "
        "dirs to add to the CSV; none = rebuild results/<table>.md from results/<table>.csv)",
    )
    parser.add_argument(
        "--results",
        action="store_true",
        help="add the rows to the committed results/<table>.csv and write results/<table>.md "
        "(and results/<table>/); default with sweep dirs: <first sweep dir>/report/",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the Markdown file (default: <first sweep dir>/report/<table>.md, with --results "
        "or without a sweep dir results/<table>.md)",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="pendulum_table1, table2: the CSV (default: --out with .csv)",
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="pendulum_table1: where the figures of the given runs go; table2: where the "
        "figures of every run kept beside the CSV go (default: none); cmu_interpolation: "
        "default --out without .md",
    )
    args = parser.parse_args(argv)
    for folder in args.sweep_dir:
        if not folder.is_dir():
            parser.error(f"sweep_dir {folder} does not exist")
    if args.table not in REPORTS and len(args.sweep_dir) != 1:
        parser.error(f"{args.table} takes one sweep_dir")
    if args.table not in REPORTS and args.csv is not None:
        parser.error(f"--csv is for {' and '.join(REPORTS)}, not {args.table}")
    home = args.sweep_dir[0] / "report" if args.sweep_dir and not args.results else RESULTS
    out = args.out or home / f"{args.table}.md"
    if args.table in REPORTS:
        module = REPORTS[args.table]
        csv_path = args.csv or out.with_suffix(".csv")
        if csv_path.is_file():  # refused before anything is written
            read_results(csv_path, module.csv_columns(csv_path, []), module.KEY)
        skipped = SKIPPED[args.table](args.sweep_dir)
        for line in skipped:  # printed before a report that may find no row at all
            print(line)
        text, notes = module.report(args.sweep_dir, csv_path, args.figures)
    else:  # cmu_interpolation: its figures go beside the Markdown
        skipped = cmu.skipped(args.sweep_dir[0])
        for line in skipped:
            print(line)
        figures = args.figures or out.with_suffix("")
        text = cmu.cmu_interpolation(args.sweep_dir[0], figures_dir=figures, md_dir=out.parent)
        notes = [f"figures in {figures}/"]
    write_report_text(out, text)
    print(text)
    if skipped:
        notes.append(f"{len(skipped)} run(s) gave no row; why: the 'no row from' lines above")
    print("\n".join([*notes, f"table written to {out}"]))
    if args.sweep_dir and not args.results and args.out is None:
        print(f"results/ untouched; add --results to add these rows to results/{args.table}.*")
    return out


def cli(argv: list[str] | None = None) -> None:
    """``main`` for the shell: a refused input (a damaged results CSV, nothing to report) exits
    with 2, a failed write with 1, each as one line ``error: ...`` instead of a traceback."""
    try:
        main(argv)
    except (ResultsFileError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ReportWriteError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    cli()
