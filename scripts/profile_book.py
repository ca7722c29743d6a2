"""Where the last `make book` spent its time: the build's timing report as a table, per step and phase.

    .venv/bin/python scripts/profile_book.py [--profile quick]

Reads ``_build/executed/<profile>/timing.json`` (written by every ``medlit book``): wall seconds of the model
preparation, of each chapter and of jupyter-book, with each chapter's seconds in data generation, model training
or loading, explaining, scoring, studies and galleries (``medlit.timing``), and what no phase claimed.
"""

from __future__ import annotations

import argparse
import json
import sys

from medlit.book import executed_dir
from medlit.timing import timing_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    args = parser.parse_args(argv)
    path = executed_dir(args.profile) / "timing.json"
    if not path.is_file():
        print(f"no timing report at {path}: run `make book PROFILE={args.profile}` first", file=sys.stderr)
        return 1
    table = timing_table(json.loads(path.read_text()))
    print(table.round(0).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
