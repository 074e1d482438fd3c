"""`WORKER_NICE`: the Celery worker runs behind the web processes on a shared machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from celery.signals import worker_init

from imbue import celery as worker

ROOT = Path(__file__).resolve().parents[2]

# In a process of its own (a nice value cannot be raised back): a thread that runs before the
# signal (as numpy's BLAS threads do), the signal, then a thread made after it (as the pool's).
PROBE = """
import json, os, threading, django
os.environ["DJANGO_SETTINGS_MODULE"] = "imbue.settings"
django.setup()
from imbue.celery import lower_priority
hold = threading.Event()
seen = {}
def early():
    seen["early_tid"] = threading.get_native_id()
    hold.wait()
first = threading.Thread(target=early); first.start()
while "early_tid" not in seen:
    pass
now = lower_priority()
def late():
    seen["late"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
second = threading.Thread(target=late); second.start(); second.join()
seen["early"] = os.getpriority(os.PRIO_PROCESS, seen["early_tid"])
seen["main"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
seen["returned"] = now
hold.set(); first.join()
print(json.dumps(seen))
"""


def _probe(nice: str) -> dict[str, int]:
    env = {**os.environ, "WORKER_NICE": nice}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_thread_of_the_worker_runs_at_the_lower_priority() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen = _probe("6")
    want = min(19, base + 6)
    assert seen["returned"] == want
    assert seen["main"] == want
    assert seen["early"] == want  # lowered one by one
    assert seen["late"] == want  # inherited


def test_zero_leaves_the_priority_alone() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen = _probe("0")
    assert seen["main"] == seen["early"] == seen["late"] == seen["returned"] == base


def test_the_handler_is_connected() -> None:
    assert worker.lower_priority in [r() for _, r in worker_init.receivers]
