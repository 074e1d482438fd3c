"""`make run` on embedded servers: serves, stops cleanly on Ctrl-C, and keeps its data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import BASE_DIR, free_port, wait_for


def _embedded_env(local_dir: Path, web_port: int, redis_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.pop("DATABASE_NAME", None)
    env.update(
        IMBUE_LOCAL_DIR=str(local_dir),
        IMBUE_PORT=str(web_port),
        IMBUE_EMBEDDED_REDIS_PORT=str(redis_port),
        CELERY_CONCURRENCY="2",
        PYTHONUNBUFFERED="1",
        HEALTHZ_TOKEN=HEALTHZ_TOKEN,
        HEALTHZ_CACHE_SECONDS="0.5",
    )
    return env


HEALTHZ_TOKEN = "devservices-test-token"


def _health(port: int) -> dict | None:
    """The detailed report (the public one says only "ok")."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz", headers={"Authorization": f"Bearer {HEALTHZ_TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read())
    except OSError:
        return None


def _descendants_alive(pids: list[int]) -> list[int]:
    return [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]


def _run_once(env: dict[str, str], port: int, log: Path) -> tuple[subprocess.Popen, list[int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "imbue.devservices", "run"],
        cwd=BASE_DIR,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: (_health(port) or {}).get("ok") is True, 90, "make run")
    children = [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
    return process, children


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout


@pytest.mark.faults
def test_make_run_serves_stops_cleanly_and_keeps_data_on_embedded_servers(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    env = _embedded_env(tmp_path / "local", port, redis_port)
    log = tmp_path / "run.log"

    process, children = _run_once(env, port, log)
    try:
        health = _health(port)
        assert health and health["database"]["ok"] and health["redis"]["ok"]
        assert health["worker"]["ok"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200
        # Another terminal reaches the same embedded database with no set-up.
        _manage(
            env, "shell", "-c", "from simulations.models import Learner; Learner.objects.create()"
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    assert process.returncode == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 10
    while _descendants_alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _descendants_alive(children) == [], "stray processes after Ctrl-C"
    assert _health(port) is None
    assert not (tmp_path / "local" / "services.json").exists()

    process, children = _run_once(env, port, log)
    try:
        count = _manage(
            env,
            "shell",
            "-c",
            "from simulations.models import Learner; print(Learner.objects.count())",
        )
        assert count.strip().splitlines()[-1] == "1", "the second run lost the first run's data"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    assert process.returncode == 0


def test_the_web_server_declines_socket_compression_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imbue.devservices import web_server_argv

    def deflate() -> str:
        argv = web_server_argv("127.0.0.1", "8000", "2", "--log-level", "warning")
        assert argv[-2:] == ["--log-level", "warning"]  # the caller's own options come last
        return argv[argv.index("--ws-per-message-deflate") + 1]

    monkeypatch.delenv("WS_PER_MESSAGE_DEFLATE", raising=False)
    assert deflate() == "false"
    monkeypatch.setenv("WS_PER_MESSAGE_DEFLATE", "true")
    assert deflate() == "true"
