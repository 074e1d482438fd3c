"""Shared fixtures: real processes (Celery worker, ASGI server) against the test database."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

pytest_plugins = ["tests.fakes.fixtures"]

# The test runner holds far more objects than a server, so its full collections are long; they
# are not the product's pauses (imbue.asgi, imported by tests, would log each one). Servers the
# tests start inherit this; tests/imbue/test_gcfreeze.py checks the watcher itself.
os.environ.setdefault("GC_PAUSE_WARN_MS", "0")

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def within(call: Callable[[], Any], seconds: float) -> tuple[object, bool, float]:
    """Run `call()` in a daemon thread for at most `seconds`: what it returned or raised, whether
    it ended in time, and how long it took (or `seconds`). For calls that might hang for ever."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as error:
            outcome.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return (outcome[0] if outcome else None), not thread.is_alive(), time.monotonic() - started


@dataclass
class SilentServer:
    url: str
    held: list[socket.socket]  # every connection accepted so far: one per try of a client

    @property
    def connections(self) -> int:
        return len(self.held)


@contextlib.contextmanager
def _mute_server(*, drop: bool) -> Iterator[SilentServer]:
    """A server on a free port that accepts every connection and never says a word; with
    `drop`, it closes each at once (counted first, so a client sees the drop only after)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection = server.accept()[0]
            except TimeoutError:
                continue
            held.append(connection)
            if drop:
                connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield SilentServer(f"redis://127.0.0.1:{server.getsockname()[1]}/0", held)
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


@pytest.fixture
def silent_redis_server() -> Iterator[SilentServer]:
    """A Redis that accepts every connection and never says a word (a stopped server, a dead
    network path): what a client without a timeout waits on for ever."""
    with _mute_server(drop=False) as server:
        yield server


@pytest.fixture
def dropping_redis_server() -> Iterator[SilentServer]:
    """A Redis that drops every connection at once (just restarted: pooled connections dead)."""
    with _mute_server(drop=True) as server:
        yield server


@pytest.fixture
def silent_server(silent_redis_server: SilentServer) -> str:
    """The URL of `silent_redis_server`."""
    return silent_redis_server.url


def process_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must share this test run's database and Redis."""
    env = os.environ.copy()
    env["DATABASE_NAME"] = settings.DATABASES["default"]["NAME"]
    env.setdefault("REDIS_URL", settings.REDIS_URL)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s")


class Worker:
    """A real Celery worker process; tests may kill it (SIGKILL) and start it again."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        from imbue.devservices import celery_worker_argv

        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            celery_worker_argv(), cwd=BASE_DIR, env=self.env, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        from imbue.celery import app

        wait_for(lambda: bool(app.control.ping(timeout=0.3, limit=1)), 30, "Celery worker")
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = BASE_DIR / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def start_worker(django_db_setup: None, artifacts_dir: Path) -> Iterator[Callable[..., Worker]]:
    """Start real Celery workers on the test database; all are stopped at the end of the run."""
    started: list[Worker] = []

    def start(**extra_env: str) -> Worker:
        worker = Worker(process_env(**extra_env), artifacts_dir / "celery-worker.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def _shared_worker(start_worker: Callable[..., Worker], fake_llm_server) -> Worker:
    return start_worker(LLM_BASE_URL=fake_llm_server.base_url, LLM_API_KEY="test-key")


@pytest.fixture
def celery_worker(_shared_worker: Worker) -> Worker:
    """The run's shared worker (talking to the fake model server), restarted if a test killed it."""
    if not _shared_worker.alive():
        _shared_worker.start()
    return _shared_worker


@pytest.fixture(autouse=True)
def _redis_answering() -> Iterator[None]:
    """Each test starts with Redis asked again: a test whose Redis stopped answering leaves
    `imbue.redis_quiet` holding every fallback for a few seconds."""
    from imbue import redis_quiet

    redis_quiet.forget()
    yield
    redis_quiet.forget()


@pytest.fixture(scope="session", autouse=True)
def _no_per_learner_counts_left() -> None:
    """Learner ids start again with each new test database while Redis keeps the last hour's
    conversation starts and suggestions per learner id: forget those of earlier runs."""
    import redis
    from django.conf import settings

    from imbue import ratelimit

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        for pattern in ("starts:learner:*", "starts:session:*", "suggestions:*"):
            for key in client.scan_iter(ratelimit.KEY_PREFIX + pattern, count=500):
                client.delete(key)
    except redis.RedisError:
        pass  # the tests that need Redis say so themselves


@pytest.fixture(scope="session", autouse=True)
def _close_database_pools(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Close psycopg's pools before the test database is dropped (idle connections block it)."""
    yield
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if hasattr(connection, "close_pool"):
            connection.close_pool()
    # Connections left by threads that outlived their tests (server threads, the gateway's loop).
    with django_db_blocker.unblock(), connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    connections["default"].close()
