"""The bench reads the web processes' long collections from the lines the product logs."""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path

import pytest

from bench.run import gc_pauses
from imbue.gcfreeze import PauseWatch


def test_the_bench_counts_the_pauses_the_product_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watch = PauseWatch(1e-9)  # every collection counts as long
    others = list(gc.callbacks)  # imbue.asgi's own watcher, if a test imported it
    gc.callbacks[:] = [watch]
    try:
        with caplog.at_level(logging.WARNING, logger="imbue.gcfreeze"):
            gc.collect(1)
            gc.collect(2)
    finally:
        gc.callbacks[:] = others
    log = tmp_path / "web.log"
    prefix = "2026-12-06 10:00:00 WARNING imbue.gcfreeze:"
    lines = [f"{prefix} {r.getMessage()}" for r in caplog.records]
    log.write_text("\n".join(["uvicorn started", *lines, "a request"]) + "\n")

    found = gc_pauses(log)
    assert found["count"] == watch.count == 2
    assert found["full"] == 1
    assert found["longest_ms"] == round(watch.longest_ms)


def test_the_pauses_of_the_turns_are_placed_in_them(tmp_path: Path) -> None:
    line = (
        "{} WARNING imbue.gcfreeze: garbage collection of generation {} stopped this process"
        " for {} ms (5 objects freed)"
    )
    log = tmp_path / "web.log"
    log.write_text(
        "\n".join(
            [
                line.format("2026-12-06 10:00:01,500", 1, 120),  # in the set-up
                "2026-12-06 10:00:02,000 INFO uvicorn: a request",
                line.format("2026-12-06 10:00:12,300", 2, 230),
                line.format("2026-12-06 10:01:00,000", 0, 101),
            ]
        )
        + "\n"
    )
    turns_from = time.mktime(time.strptime("2026-12-06 10:00:02", "%Y-%m-%d %H:%M:%S"))
    found = gc_pauses(log, turns_from)
    assert found["count"] == 3 and found["full"] == 1 and found["longest_ms"] == 230
    assert found["in_turns_at_s"] == [10.3, 58.0]
    assert "in_turns_at_s" not in gc_pauses(log)


def test_no_log_no_figure(tmp_path: Path) -> None:
    assert gc_pauses(tmp_path / "missing.log") == {}
