"""`landmeta report`: turn a results folder into index.md and a self-contained index.html."""

from __future__ import annotations

import argparse
from pathlib import Path

from landmeta.reporting.report import write_report


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` sub-command to the parser."""
    parser = sub.add_parser("report", help="write the comparison report (Markdown + self-contained HTML)")
    parser.add_argument("results", help="results folder from `landmeta evaluate`")
    parser.add_argument("--out", required=True, help="report folder (index.md, index.html, figures/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `landmeta report`; returns the exit status."""
    out = write_report(args.results, args.out, overwrite=args.overwrite)
    print(f"report: {Path(out) / 'index.html'} (and index.md)")
    return 0
