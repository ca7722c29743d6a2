"""Where a build spends its time: wall-clock seconds per phase of the work, written as it happens.

The pipeline marks its phases (:data:`PHASES`) with ``with phase(name):``. Time is counted to the innermost open
phase only, so the phases of one process add up to at most its wall time: a model trained inside a study counts
as training, the study's own work around it as the study. When ``$MEDLIT_TIMING_LOG`` names a file (``medlit
book`` sets it for every chapter), each closed phase appends one JSON line ``{"phase": ..., "seconds": ...}`` to
it; otherwise nothing is written. :func:`read_log` sums a log by phase; ``scripts/profile_book.py`` prints the
table of a whole build.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import defaultdict
from pathlib import Path

PHASES = ("data", "models", "explaining", "scoring", "studies", "galleries")
LOG_ENV = "MEDLIT_TIMING_LOG"

_open: list[list] = []  # [name, started, counted] of each open phase, innermost last


@contextlib.contextmanager
def phase(name: str):
    """Count the wall time of the block, less that of phases opened inside it, to ``name``."""
    if name not in PHASES:
        raise ValueError(f"unknown timing phase {name!r}; choose one of {', '.join(PHASES)}")
    now = time.perf_counter()
    if _open:  # the enclosing phase stops counting while this one runs
        outer = _open[-1]
        outer[2] += now - outer[1]
    _open.append([name, now, 0.0])
    try:
        yield
    finally:
        entry = _open.pop()
        now = time.perf_counter()
        _record(entry[0], entry[2] + now - entry[1])
        if _open:
            _open[-1][1] = now


def _record(name: str, seconds: float) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"phase": name, "seconds": round(seconds, 4)}) + "\n")
    except OSError:  # timing is a report, never a reason for a build to fail
        pass


def read_log(path: str | os.PathLike) -> dict[str, float]:
    """Seconds per phase in a timing log (every phase of :data:`PHASES`, 0 where absent); a missing file is empty.

    A torn last line (a build killed while writing) is skipped.
    """
    totals: dict[str, float] = defaultdict(float)
    path = Path(path)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                totals[str(entry["phase"])] += float(entry["seconds"])
            except (ValueError, KeyError, TypeError):
                continue
    return {name: totals.get(name, 0.0) for name in PHASES}


def timing_table(report: dict):
    """A build's ``timing.json`` (``medlit.book.write_timing``) as a table: one row per step (models, each
    chapter, jupyter-book, total), its wall seconds, the seconds of each phase and ``other`` (the wall time no
    phase claimed: kernel start, tables, charts, statistics)."""
    import pandas as pd

    rows = []
    for step in report["steps"]:
        phases = {name: float(step.get(name, 0.0)) for name in PHASES}
        claimed = sum(phases.values()) if step["step"] != "total" else float("nan")
        rows.append({"step": step["step"], "reused": bool(step.get("reused", False)),
                     "seconds": float(step["seconds"]), **phases, "other": float(step["seconds"]) - claimed})
    return pd.DataFrame(rows).set_index("step")
