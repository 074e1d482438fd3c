"""The Celery app. Tasks live in each app's tasks.py and are found by autodiscovery."""

import logging
import os
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imbue.settings")

app = Celery("imbue")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger(__name__)


def warm_up() -> None:
    """Build what the feedback tasks need once per process: the example bank's retrieval index
    (every model rating) and the offline rater (the fallback). Built on first use otherwise, so
    the first request after a start waited for it (1.4 s and 7 s measured under load)."""
    from imbue.gcfreeze import apply_thresholds

    apply_thresholds()  # GC_THRESHOLDS, as in the web processes
    try:
        from feedback.raters.offline import default_model
        from feedback.raters.retrieval import default_index

        default_index()
        default_model()
    except Exception:  # a task builds them again on first use
        log.exception("could not warm up the feedback raters")
        return
    from imbue.gcfreeze import freeze_long_lived

    freeze_long_lived()  # the index and the model live as long as the process


def _in_background() -> threading.Thread:
    thread = threading.Thread(target=warm_up, name="warm-up", daemon=True)
    thread.start()
    return thread


@worker_ready.connect
def _warm_up_worker(sender: Any = None, **kwargs: Any) -> threading.Thread | None:
    """The threads and solo pools run tasks in this process; a prefork parent runs none."""
    if "prefork" in type(getattr(sender, "pool", None)).__module__:
        return None
    return _in_background()


@worker_process_init.connect
def _warm_up_child(**kwargs: Any) -> threading.Thread:
    """Each child of a prefork pool."""
    return _in_background()


@worker_init.connect
def lower_priority(**kwargs: Any) -> int:
    """Lower the worker's CPU priority by `WORKER_NICE` before its pool starts. On Linux nice is
    a thread's: the threads made later (the threads pool, the model gateway) and a prefork
    pool's children take it from this one, and the threads already running (numpy's BLAS
    threads, made at import) are lowered here one by one. Returns the niceness now."""
    from django.conf import settings

    step = max(0, min(19, int(getattr(settings, "WORKER_NICE", 0) or 0)))
    niceness = os.nice(step)
    if step:
        try:
            threads = os.listdir("/proc/self/task")
        except OSError:  # not Linux: the process's nice is all there is
            threads = []
        for tid in threads:
            try:
                if os.getpriority(os.PRIO_PROCESS, int(tid)) < niceness:
                    os.setpriority(os.PRIO_PROCESS, int(tid), niceness)
            except OSError:  # the thread ended meanwhile
                continue
    return niceness
