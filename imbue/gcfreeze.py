"""Keep the garbage collector's full passes short in long-running processes.

A web or worker process holds about a million objects that live as long as it does (Django, the
channel layer, the offline rater's model, the retrieval index). Python's full collection walks all
of them: measured in a web process under the 100-learner bench, 120-230 ms each, during which
that process serves nobody. `gc.freeze()` moves the objects alive now out of the collector's
sight, so later full passes walk only what was made since (they are still collected if freed).
Called once everything long-lived is built: after start-up, and again after a warm-up.
"""

import gc
import logging
import os
import sys
import time

log = logging.getLogger(__name__)


def freeze_long_lived() -> None:
    """Collect what is garbage now, then set every surviving object aside for good."""
    gc.collect()
    gc.freeze()
    log.debug("%d objects set aside from the collector", gc.get_freeze_count())


# The young generation collected every 5000 net allocations instead of Python's 700: at 1000
# learners a web process then made no full collection during the bench's turns (twelve of up to
# 0.4 s each with 700), and spent half the CPU on collecting (bench/README.md, session 9). The
# other two thresholds are Python's own, so memory per socket stays as it was.
DEFAULT_THRESHOLDS = "5000,10,10"


def configured_spec() -> str:
    """`GC_THRESHOLDS` as set, or `DEFAULT_THRESHOLDS`."""
    return os.environ.get("GC_THRESHOLDS", DEFAULT_THRESHOLDS)


def apply_thresholds() -> tuple[int, int, int]:
    """This process's collector thresholds from `GC_THRESHOLDS` (default `DEFAULT_THRESHOLDS`)."""
    return set_thresholds(configured_spec())


def parse_thresholds(spec: str | None) -> tuple[int, int, int] | None:
    """`GC_THRESHOLDS` ("gen0,gen1,gen2", e.g. "700,10,10") as numbers; None when empty (Python's
    own stay). A value that is not three positive integers is refused with a ValueError naming
    the setting: the settings check it, so no process (web, worker, command) starts with it."""
    if not spec or not spec.strip():
        return None
    try:
        values = tuple(int(p.strip()) for p in spec.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"GC_THRESHOLDS must be three positive integers, not {spec!r}")
    return values[0], values[1], values[2]


def set_thresholds(spec: str | None) -> tuple[int, int, int]:
    """Apply `GC_THRESHOLDS` (see `parse_thresholds`) and return the thresholds in force."""
    values = parse_thresholds(spec)
    if values is not None:
        gc.set_threshold(*values)
    return gc.get_threshold()


class PauseWatch:
    """Logs each collection that stopped this process for at least `min_ms` (a warning: while
    the collector runs, every socket and request of the process waits).

    Measured in a web process holding 1000 learners' sockets (bench/README.md, session 7): a
    full collection about every 20 s, of 63-395 ms, growing with the sockets held. The log line
    says how long and which generation, so a deployment sees its own pauses; the bench counts
    them per run.
    """

    def __init__(self, min_ms: float) -> None:
        self.min_ms = min_ms
        self.started = 0.0
        self.longest_ms = 0.0
        self.count = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        ms = (time.perf_counter() - self.started) * 1000
        if ms < self.min_ms or sys.is_finalizing():  # at exit the log may be gone already
            return
        self.count += 1
        self.longest_ms = max(self.longest_ms, ms)
        log.warning(
            "garbage collection of generation %d stopped this process for %.0f ms "
            "(%d objects freed)",
            info.get("generation", -1), ms, info.get("collected", 0),
        )  # fmt: skip


def watch_pauses(min_ms: float) -> PauseWatch | None:
    """Start logging collections of at least `min_ms` in this process (none when 0 or less)."""
    if min_ms <= 0:
        return None
    for callback in gc.callbacks:
        if isinstance(callback, PauseWatch):
            callback.min_ms = min_ms
            return callback
    watch = PauseWatch(min_ms)
    gc.callbacks.append(watch)
    return watch
