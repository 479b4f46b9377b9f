"""`python -m fraudstream.faults --write-docs [--results FILE]`: render the fault suite's results
table into docs/faults.md (or print it with --print); `--reset` forgets earlier runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from fraudstream.faults import load_results, render_table, reset, results_path, write_docs


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m fraudstream.faults")
    parser.add_argument("--write-docs", action="store_true", help="update docs/faults.md")
    parser.add_argument("--print", action="store_true", help="print the table")
    parser.add_argument("--results", type=Path, default=None, help="results JSON file")
    parser.add_argument("--reset", action="store_true", help="forget the runs recorded so far")
    args = parser.parse_args()
    path = args.results or results_path()
    if args.reset:
        reset(path)
        print(f"forgot the fault runs in {path}")
        return 0
    rows = load_results(path)
    if not rows:
        parser.error(f"no results in {path}; run the fault suite first (make faults)")
    if args.write_docs:
        print(f"wrote {write_docs(rows)} from {path} ({len(rows)} scenarios)")
    if args.print or not args.write_docs:
        print(render_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
