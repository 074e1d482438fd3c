"""The bench says how busy the whole machine was during the turns, so a run whose latency was
set by a saturated machine (every core busy, every process waiting) shows as such."""

from __future__ import annotations

from collections import namedtuple

import pytest

from bench.run import machine_busy
from bench.stack import _busy_and_total


def test_the_busiest_ten_seconds_and_the_saturated_ones_are_found() -> None:
    # 30 s sampled every half second: 50% busy, then 100% from 10 s to 20 s, then 50% again.
    samples = [(t / 2, 100.0 if 20 < t <= 40 else 50.0) for t in range(1, 61)]
    busy = machine_busy(samples)
    assert busy == {"mean": pytest.approx(66.7, abs=0.1), "busiest_10s": 100.0, "saturated_s": 10.0}


def test_a_window_is_never_taken_from_past_the_end() -> None:
    # The last second alone is saturated: no ten-second window holds only it.
    samples = [(float(t), 100.0 if t == 20 else 40.0) for t in range(1, 21)]
    busy = machine_busy(samples)
    assert busy["busiest_10s"] == pytest.approx(46.0)
    assert busy["saturated_s"] == 1.0


def test_a_run_shorter_than_the_window_is_taken_whole() -> None:
    assert machine_busy([(1.0, 20.0), (2.0, 60.0)]) == {
        "mean": 40.0,
        "busiest_10s": 40.0,
        "saturated_s": 0.0,
    }
    assert machine_busy([]) == {}


def test_idle_io_wait_and_steal_are_not_busy() -> None:
    Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")
    busy, total = _busy_and_total(Times(10.0, 1.0, 4.0, 70.0, 5.0, 0.5, 0.5, 9.0, 0.0, 0.0))
    assert (busy, total) == (pytest.approx(16.0), pytest.approx(100.0))
