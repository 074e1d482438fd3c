"""The worker builds the feedback raters' index and offline model when it starts."""

from __future__ import annotations

import gc
import threading
from types import SimpleNamespace

import pytest
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.signals import worker_process_init, worker_ready

from feedback.raters.offline import default_model
from feedback.raters.retrieval import default_index
from imbue import celery as worker


def test_a_threads_worker_builds_the_raters_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    default_index.cache_clear()
    default_model.cache_clear()
    monkeypatch.setenv("GC_THRESHOLDS", "4321,9,8")
    before = gc.get_threshold()
    try:
        thread = worker._warm_up_worker(sender=SimpleNamespace(pool=object.__new__(ThreadPool)))
        assert thread is not None
        thread.join(120)
        assert gc.get_threshold() == (4321, 9, 8)  # the collector set as in the web processes
    finally:
        gc.set_threshold(*before)
    assert default_index.cache_info().currsize == 1
    assert default_model.cache_info().currsize == 1


def test_a_prefork_parent_leaves_it_to_its_children() -> None:
    assert worker._warm_up_worker(sender=SimpleNamespace(pool=object.__new__(PreforkPool))) is None


def test_the_handlers_are_connected() -> None:
    ready = [r() for _, r in worker_ready.receivers]
    child = [r() for _, r in worker_process_init.receivers]
    assert worker._warm_up_worker in ready and worker._warm_up_child in child


def test_a_request_thread_publishes_without_building_a_result_backend_of_its_own() -> None:
    """Django runs each HTTP request in a new thread; the (disabled) result backend every
    `.delay()` touches is built once per process, not once per thread."""
    found: list[object] = []
    threads = [threading.Thread(target=lambda: found.append(worker.app.backend)) for _ in range(3)]
    for thread in threads:
        thread.start()
        thread.join(10)
    assert len(found) == 3 and all(backend is found[0] for backend in found)
    assert found[0].as_uri() == "disabled://"  # results are never stored: nothing to share
