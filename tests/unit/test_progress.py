"""Progress: a log line every few seconds off a terminal, a bar that never shrinks on one."""

from __future__ import annotations

import logging

import pytest

from clipembed.bulk import progress as progress_mod


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", c)
    return c


def test_off_a_terminal_one_line_per_interval_with_rate_and_eta(clock, caplog):
    caplog.set_level(logging.INFO, logger=progress_mod.__name__)
    p = progress_mod.Progress("backfill", terminal=False)
    p.start(total=100)
    clock.now += 1
    p.advance(10, processed=10, failed=0)
    assert not caplog.records  # too soon for a line
    clock.now += progress_mod.LOG_EVERY
    p.advance(20, processed=30, failed=0)
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.getMessage() == "backfill: 30/100"
    assert record.rate_per_s == pytest.approx(30 / (1 + progress_mod.LOG_EVERY), rel=0.01)
    assert record.eta_s == pytest.approx(70 / record.rate_per_s, rel=0.01)
    assert record.processed == 30
    p.stop()


def test_on_a_terminal_the_bar_grows_when_more_work_appears(clock):
    p = progress_mod.Progress("backfill", terminal=True)
    p.start(total=5)
    clock.now += 1
    p.advance(4)
    p.advance(4)  # stale clips beyond the missing count: total follows
    assert p.done == 8 and p.total == 8
    p.stop()
    p.stop()  # idempotent


def test_zero_total_does_not_divide_by_zero(clock):
    p = progress_mod.Progress("x", terminal=True)
    p.start(total=0)
    p.advance(0)
    p.stop()
