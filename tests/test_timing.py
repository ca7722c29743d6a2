"""The build's timing phases (medlit.timing): innermost counting, the log, and the table."""

from __future__ import annotations

import time

import pytest

from medlit.timing import LOG_ENV, PHASES, phase, read_log, timing_table


def test_time_goes_to_the_innermost_phase_and_is_logged(tmp_path, monkeypatch):
    log = tmp_path / "t.jsonl"
    monkeypatch.setenv(LOG_ENV, str(log))
    with phase("studies"):
        time.sleep(0.05)
        with phase("explaining"):
            time.sleep(0.1)
        time.sleep(0.05)
    totals = read_log(log)
    assert set(totals) == set(PHASES)
    assert 0.1 <= totals["explaining"] < 0.19 and 0.1 <= totals["studies"] < 0.19  # not 0.2: the inner is not its


def test_a_decorated_function_is_a_phase_and_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(LOG_ENV, raising=False)

    @phase("galleries")
    def draw():
        return 3

    assert draw() == 3 and draw() == 3  # reusable as a decorator
    assert not list(tmp_path.iterdir())


def test_a_torn_log_line_is_skipped_and_an_unknown_phase_refused(tmp_path):
    log = tmp_path / "t.jsonl"
    log.write_text('{"phase": "scoring", "seconds": 2.5}\n{"phase": "scoring", "seconds": 1.0}\n{"phase": "sc')
    assert read_log(log)["scoring"] == 3.5 and read_log(tmp_path / "none.jsonl")["scoring"] == 0.0
    with pytest.raises(ValueError, match="unknown timing phase"):
        with phase("plotting"):
            pass


def test_the_table_puts_what_no_phase_claimed_under_other():
    report = {"steps": [{"step": "10_x", "seconds": 10.0, "reused": False, "scoring": 6.0, "explaining": 1.0},
                        {"step": "total", "seconds": 12.0, "reused": False}]}
    table = timing_table(report)
    assert table.loc["10_x", "other"] == pytest.approx(3.0) and table.loc["10_x", "data"] == 0.0
