"""Long-lived objects are set aside from the collector once built."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import weakref

import pytest

from imbue.gcfreeze import (
    PauseWatch,
    apply_thresholds,
    freeze_long_lived,
    set_thresholds,
    watch_pauses,
)


def test_objects_alive_now_are_set_aside_and_garbage_made_later_is_still_collected() -> None:
    class Node:
        pass

    kept = Node()
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() > 0
        # Set aside: no longer among the objects a collection walks.
        assert not any(obj is kept for obj in gc.get_objects())
        # A cycle made afterwards is not: a collection still frees it.
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


def test_a_long_collection_is_logged_with_its_generation_and_length(
    caplog: pytest.LogCaptureFixture,
) -> None:
    others = [c for c in gc.callbacks if not isinstance(c, PauseWatch)]
    # imbue.asgi's watcher, if a test imported it, with its threshold (watch_pauses reuses it).
    started = [(c, c.min_ms) for c in gc.callbacks if isinstance(c, PauseWatch)]
    watch = watch_pauses(1e-9)  # every collection counts as long
    try:
        assert watch is not None
        assert watch_pauses(1e-9) is watch  # one watcher per process, however often started
        assert sum(isinstance(c, PauseWatch) for c in gc.callbacks) == 1
        with caplog.at_level(logging.WARNING, logger="imbue.gcfreeze"):
            gc.collect()
        assert watch.count >= 1 and watch.longest_ms > 0
        assert any(
            "garbage collection of generation 2 stopped this process for" in r.getMessage()
            for r in caplog.records
        )
        watch.min_ms = 1e9  # nothing is that long: nothing more is logged
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="imbue.gcfreeze"):
            gc.collect()
        assert not caplog.records
    finally:
        gc.callbacks[:] = others
        for earlier, min_ms in started:  # as it was: its threshold back, still watching
            earlier.min_ms = min_ms
            gc.callbacks.append(earlier)


def test_no_watch_when_switched_off() -> None:
    before = list(gc.callbacks)  # imbue.asgi, if a test imported it, has started its own
    assert watch_pauses(0) is None
    assert gc.callbacks == before


def test_thresholds_are_set_from_the_setting_and_a_bad_one_is_refused() -> None:
    before = gc.get_threshold()
    try:
        assert set_thresholds("5000, 20,30") == (5000, 20, 30) == gc.get_threshold()
        assert set_thresholds("") == (5000, 20, 30)  # empty: left as it is
        assert set_thresholds(None) == (5000, 20, 30)
        for bad in ("5000,10", "a,b,c", "0,10,10", "5000,10,10,10", "-1,10,10"):
            with pytest.raises(ValueError, match="GC_THRESHOLDS"):
                set_thresholds(bad)
        assert gc.get_threshold() == (5000, 20, 30)  # a refused value changes nothing
    finally:
        gc.set_threshold(*before)


def test_a_process_takes_its_thresholds_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    try:
        monkeypatch.delenv("GC_THRESHOLDS", raising=False)
        assert apply_thresholds() == (5000, 10, 10) == gc.get_threshold()
        monkeypatch.setenv("GC_THRESHOLDS", "900,11,12")
        assert apply_thresholds() == (900, 11, 12)
    finally:
        gc.set_threshold(*before)


def test_a_web_process_sets_its_collector_when_it_starts() -> None:
    code = "import gc, imbue.asgi; print(*gc.get_threshold())"
    env = {**os.environ, "GC_THRESHOLDS": "1234,5,6"}
    ran = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == ["1234", "5", "6"]
    env["GC_THRESHOLDS"] = "5000,10"
    ran = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode != 0 and "GC_THRESHOLDS must be three positive integers" in ran.stderr


def test_a_worker_refuses_to_start_with_bad_thresholds() -> None:
    """The worker applies its thresholds in its warm-up thread, where an error is only logged:
    the settings check the value, so the worker stops at start instead of running without it."""
    env = {**os.environ, "GC_THRESHOLDS": "5000,ten,10"}
    ran = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "imbue", "worker", "--pool", "solo",
         "--loglevel", "error", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode != 0
    assert "GC_THRESHOLDS must be three positive integers" in ran.stdout + ran.stderr
