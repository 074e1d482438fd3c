"""The real stack for one benchmark run, started and stopped by the benchmark itself.

    python -m bench.stack fake --port 8011 --ttft-ms 400 --tokens-per-s 40   # the model, alone

`Stack` starts, against the PostgreSQL and Redis named in the environment (DATABASE_URL, REDIS_URL;
the database name is replaced by an `imbue_bench*` one that the benchmark owns, created from a
migrated template):

- the fake OpenAI-compatible model server (tests/fakes/llm_server.py) with realistic knobs, plus a
  compact timing log (`GET /_bench/log`): per chat request its purpose, when it arrived, when its
  first token (or whole body) left, and the bench tags found in its last user message, so a
  learner's turn can be split into "before the model", "the model" and "after the model";
- uvicorn (`--workers N`) serving imbue.asgi, as `make run` does;
- one Celery worker with the command line of `imbue.devservices.celery_worker_argv()`.

Every process runs in its own session and is stopped (SIGTERM, then SIGKILL) on exit; logs go to
`bench/results/logs/`. `ProcessSampler` reads CPU and resident memory of each server process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psutil

BASE_DIR = Path(__file__).resolve().parent.parent
LOG_DIR = BASE_DIR / "bench" / "results" / "logs"
PY = sys.executable
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/imbue_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"
# Tags the load generator writes into every draft and message: learner, turn, revision, and "d"
# for the direct (limit) client's copy.
TAG = re.compile(r"\bbx(\d+)y(\d+)z(\d+)(d?)\b")


# --- the fake model server with a compact timing log -----------------------------------------


class _Tap(list):
    """Stands in for FakeLLMApp.requests: hands each entry to the app instead of keeping it (the
    full request bodies of a long run would fill the memory of the model server)."""

    def __init__(self, sink: dict[Any, dict[str, Any]]) -> None:
        super().__init__()
        self.sink = sink

    def append(self, entry: dict[str, Any]) -> None:  # type: ignore[override]
        self.sink[asyncio.current_task()] = entry


def _timed_app(knobs: dict[str, Any]) -> Any:
    from tests.fakes.llm_server import FakeLLMApp, Knobs, content_text

    class TimedFakeApp(FakeLLMApp):
        """The fake model server, keeping one small timing record per chat request."""

        def __init__(self, values: Knobs) -> None:
            super().__init__(values)
            self.current: dict[Any, dict[str, Any]] = {}
            self.requests = _Tap(self.current)
            self.log: list[dict[str, Any]] = []

        def reset(self) -> None:
            super().reset()
            self.requests = _Tap(self.current)

        async def _chat(self, scope: Any, raw: bytes, receive: Any, send: Any) -> None:
            try:
                await super()._chat(scope, raw, receive, send)
            finally:
                entry = self.current.pop(asyncio.current_task(), None)
                if entry is not None:
                    self.log.append(_timing(entry, content_text))

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/_bench/"):
                while (await receive()).get("more_body"):
                    pass
                if scope["path"] == "/_bench/log":
                    body = json.dumps({"log": self.log}).encode()
                else:
                    self.log = []
                    body = b'{"ok": true}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            await super().__call__(scope, receive, send)

    values = Knobs()
    values.update(knobs)
    return TimedFakeApp(values)


def _timing(entry: dict[str, Any], content_text: Any) -> dict[str, Any]:
    messages = entry["body"].get("messages") or []
    last_user = next(
        (content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
        "",
    )
    return {
        "purpose": entry.get("purpose"),
        "stream": bool(entry["body"].get("stream")),
        "status": entry.get("status"),
        "fault": entry.get("fault"),
        "received": entry.get("received_at"),
        "first": entry.get("first_token_at"),
        "done": time.time(),
        "tags": ["bx{}y{}z{}{}".format(*m.groups()) for m in TAG.finditer(last_user)],
    }


def serve_fake(port: int, knobs: dict[str, Any]) -> None:
    """Run the timed fake model server in this process until SIGTERM."""
    import logging

    import uvicorn

    from tests.fakes.llm_server import _QuietCuts

    logging.getLogger("uvicorn.error").addFilter(_QuietCuts())
    config = uvicorn.Config(
        _timed_app(knobs),
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        backlog=4096,
    )
    uvicorn.Server(config).run()


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll `predicate` until it is true; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def http_json(url: str, data: Any = None, timeout: float = 10) -> Any:
    """GET (or POST `data` as JSON) and decode the JSON answer."""
    payload = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(
        url, data=payload, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _terminate(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _admin_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(with_database(url, "postgres"), autocommit=True)


def _migration_fingerprint() -> str:
    files = sorted(BASE_DIR.glob("*/migrations/[0-9]*.py"))
    stamp = "|".join(f"{p.relative_to(BASE_DIR)}:{p.stat().st_mtime_ns}" for p in files)
    return str(abs(hash(stamp)) % 10**12)


def _embedded() -> dict[str, str]:
    try:
        return json.loads((BASE_DIR / ".local" / "services.json").read_text())
    except (OSError, ValueError):
        return {}


def bench_database_url(name: str = "imbue_bench") -> str:
    """BENCH_DATABASE_URL, else the product's PostgreSQL (DATABASE_URL, or the embedded one that
    `imbue.devservices` started) with the database `name`."""
    if os.environ.get("BENCH_DATABASE_URL"):
        return os.environ["BENCH_DATABASE_URL"]
    if os.environ.get("DATABASE_URL"):
        return with_database(os.environ["DATABASE_URL"], name)
    embedded = _embedded()
    if embedded.get("pg_socket_dir"):
        # The socket's folder as a percent-encoded host: both libpq and dj-database-url read it.
        port = f":{embedded['pg_port']}" if embedded.get("pg_port") else ""
        return f"postgresql://postgres@{quote(embedded['pg_socket_dir'], safe='')}{port}/{name}"
    return with_database(DEFAULT_DATABASE_URL, name)


def bench_redis_url(db: int = 10) -> str:
    """BENCH_REDIS_URL, else Redis database `db` on the product's Redis server (the bench empties
    its database at every start, so it never shares the product's)."""
    if os.environ.get("BENCH_REDIS_URL"):
        return os.environ["BENCH_REDIS_URL"]
    url = os.environ.get("REDIS_URL") or _embedded().get("redis_url") or DEFAULT_REDIS_URL
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@dataclass
class StackConfig:
    """Everything that shapes one run's servers; the defaults are `make bench`'s."""

    database_url: str = field(default_factory=bench_database_url)
    redis_url: str = field(default_factory=bench_redis_url)
    web_workers: int = 2
    celery_pool: str = "threads"
    celery_concurrency: int = 16
    db_pool_max: int = 10
    ttft_ms: float = 400.0
    tokens_per_s: float = 40.0
    reply_tokens: int = 40
    extra_env: dict[str, str] = field(default_factory=dict)
    # Profile the web workers with py-spy (record, one SVG per process) when set to a folder.
    profile_dir: Path | None = None
    # Which phase the profile covers: "turns" (the default) or "setup" (the learners' arrival).
    profile_phase: str = "turns"
    # The product's source: this checkout, or a copy with proposed patches applied.
    source_dir: Path = BASE_DIR
    # More uvicorn options, e.g. ["--ws-per-message-deflate", "false"].
    uvicorn_args: list[str] = field(default_factory=list)

    @property
    def database_name(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/")


class Stack:
    """The fake model, uvicorn and Celery on a fresh bench database; a context manager."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        if not config.database_name.startswith("imbue_bench"):
            raise ValueError("the benchmark only writes to databases named imbue_bench*")
        self.web_port = free_port()
        self.fake_port = free_port()
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.profilers: list[subprocess.Popen[bytes]] = []
        LOG_DIR.mkdir(parents=True, exist_ok=True)

    def log_path(self, name: str) -> Path:
        """Where process `name` of this stack writes (unique per stack: several may run)."""
        return LOG_DIR / f"{self.config.database_name}-{self.web_port}-{name}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def fake_url(self) -> str:
        return f"http://127.0.0.1:{self.fake_port}"

    def env(self) -> dict[str, str]:
        """The environment of the web and worker processes."""
        c = self.config
        env = {
            **os.environ,
            "DATABASE_URL": c.database_url,
            "REDIS_URL": c.redis_url,
            "LLM_BASE_URL": self.fake_url + "/v1",
            "LLM_API_KEY": "bench",
            "LLM_MODEL": "fake-small",
            "LLM_TIMEOUT": "60",
            "LOG_LEVEL": "WARNING",
            "DB_POOL_MAX": str(c.db_pool_max),
            "CELERY_POOL": c.celery_pool,
            "CELERY_CONCURRENCY": str(c.celery_concurrency),
            "PYTHONUNBUFFERED": "1",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Fixed, so a patched copy of the source needs no .local/ of its own.
            "SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
        }
        env.pop("DATABASE_NAME", None)
        env.pop("TEST_DB_SUFFIX", None)
        env.update(c.extra_env)
        return env

    # -- database and Redis

    def prepare_database(self) -> None:
        """A fresh database cloned from a migrated template (migrated again when migrations
        change), with the situations library loaded."""
        name = self.config.database_name
        template = f"{name}_template"
        stamp_file = LOG_DIR / f"{template}.stamp"
        fingerprint = _migration_fingerprint()
        with _admin_connect(self.config.database_url) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [template]
            ).fetchone()
            fresh = exists and stamp_file.exists() and stamp_file.read_text() == fingerprint
            if not fresh:
                conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{template}"')
        if not fresh:
            env = {**self.env(), "DATABASE_URL": with_database(self.config.database_url, template)}
            self._run([PY, "manage.py", "migrate", "--noinput", "-v0"], env)
            self._run(
                [PY, "-c", "import django; django.setup(); "
                 "from simulations.situations import load_library; load_library()"],
                {**env, "DJANGO_SETTINGS_MODULE": "imbue.settings"},
            )  # fmt: skip
            stamp_file.write_text(fingerprint)
        with _admin_connect(self.config.database_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def flush_redis(self) -> None:
        """Empty the bench's own Redis database (nobody else's)."""
        import redis

        redis.Redis.from_url(self.config.redis_url).flushdb()

    def _run(self, argv: list[str], env: dict[str, str]) -> None:
        result = subprocess.run(
            argv, cwd=self.config.source_dir, env=env, capture_output=True, text=True
        )
        if result.returncode:
            raise RuntimeError(f"{' '.join(argv[:4])} failed:\n{result.stderr[-3000:]}")

    # -- processes

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.log_path(name).open("wb")
        process = subprocess.Popen(
            argv, cwd=self.config.source_dir, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.children[name] = process
        return process

    def start(self) -> Stack:
        """Prepare the data stores and start the fake model, the web and the worker."""
        c = self.config
        self.prepare_database()
        self.flush_redis()
        self._spawn(
            "fake-model",
            [PY, "-m", "bench.stack", "fake", "--port", str(self.fake_port),
             "--ttft-ms", str(c.ttft_ms), "--tokens-per-s", str(c.tokens_per_s),
             "--reply-tokens", str(c.reply_tokens)],
        )  # fmt: skip
        from imbue.devservices import celery_worker_argv, web_server_argv

        self._spawn(
            "web",
            web_server_argv(
                "127.0.0.1", str(self.web_port), str(c.web_workers), "--log-level", "warning",
                "--timeout-graceful-shutdown", "3", "--backlog", "4096", *c.uvicorn_args,
            ),
        )  # fmt: skip

        argv = celery_worker_argv()
        # The argv reads the pool settings from this process's environment: set this run's.
        for flag, value in (("--pool", c.celery_pool), ("--concurrency", c.celery_concurrency)):
            argv[argv.index(flag) + 1] = str(value)
        self._spawn("worker", argv)
        wait_until(lambda: http_json(self.fake_url + "/_fake/config"), 30, "fake model server")
        wait_until(self._healthy, 90, "web and worker")
        self._check_alive()
        return self

    def _healthy(self) -> bool:
        self._check_alive()
        try:
            return bool(http_json(self.base_url + "/healthz", timeout=5)["ok"])
        except urllib.error.HTTPError:
            return False

    def _check_alive(self) -> None:
        for name, process in self.children.items():
            if process.poll() is not None:
                tail = self.log_path(name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with code {process.returncode}:\n{tail}")

    def start_profilers(self) -> None:
        """py-spy on the web, worker and fake model processes from now on (the runner starts it
        with the turns, or with the set-up: `profile_phase`), if the config asks for it."""
        folder = self.config.profile_dir
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for role, process in self.server_processes().items():
            if role.startswith(("web", "worker", "fake")):
                # Collapsed stacks per thread (text: easy to grep and to diff before/after), of
                # the thread holding the GIL only: where the CPU goes, not where threads wait.
                out = folder / f"{role}.txt"
                self.profilers.append(
                    subprocess.Popen(
                        [
                            str(Path(PY).parent / "py-spy"),
                            "record",
                            "--pid",
                            str(process.pid),
                            "--output",
                            str(out),
                            "--format",
                            "raw",
                            "--rate",
                            "67",
                            "--nonblocking",
                            "--threads",
                            "--gil",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )

    def server_processes(self) -> dict[str, psutil.Process]:
        """Named server processes: web-1.. (uvicorn workers), worker (its children too), fake."""
        found: dict[str, psutil.Process] = {}
        web = psutil.Process(self.children["web"].pid)
        workers = [p for p in web.children(recursive=True) if "resource_tracker" not in _cmd(p)]
        if not workers:
            workers = [web]
        for index, process in enumerate(sorted(workers, key=lambda p: p.pid), start=1):
            found[f"web-{index}"] = process
        worker = psutil.Process(self.children["worker"].pid)
        found["worker"] = worker
        for index, child in enumerate(worker.children(recursive=True), start=1):
            found[f"worker-child-{index}"] = child
        found["fake-model"] = psutil.Process(self.children["fake-model"].pid)
        return found

    def database_backends(self) -> list[psutil.Process]:
        """The PostgreSQL backends serving the bench database (same machine)."""
        with _admin_connect(self.config.database_url) as conn:
            pids = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s",
                    [self.config.database_name],
                )
            ]
        processes = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                processes.append(psutil.Process(pid))
        return processes

    def fake_log(self) -> list[dict[str, Any]]:
        """The fake model's timing records so far."""
        return http_json(self.fake_url + "/_bench/log", timeout=60)["log"]

    def clear_fake_log(self) -> None:
        """Forget the fake model's timing records (after the warm-up)."""
        http_json(self.fake_url + "/_bench/clear", {})

    def stop_profilers(self) -> None:
        """Stop py-spy (it writes its file on SIGINT)."""
        for profiler in self.profilers:
            if profiler.poll() is None:
                profiler.send_signal(signal.SIGINT)
        for profiler in self.profilers:
            try:
                profiler.wait(60)
            except subprocess.TimeoutExpired:
                profiler.kill()
        self.profilers.clear()

    def stop(self) -> None:
        """Stop every process this stack started, profilers first."""
        self.stop_profilers()
        for name in ("web", "worker", "fake-model"):
            if name in self.children:
                _terminate(self.children[name])
        self.children.clear()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cmd(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


# --- CPU and memory of each server process ----------------------------------------------------


@dataclass
class _Track:
    process: psutil.Process
    cpu_start: float
    rss_peak: int = 0
    rss_last: int = 0
    # CPU % of one core in each sampling interval (seconds since the start, %); not kept for
    # PostgreSQL's backends, which come and go with the pools.
    timeline: list[tuple[float, float]] | None = None
    cpu_last: float = 0.0


def _busy_and_total(times: Any) -> tuple[float, float]:
    """The machine's busy and total CPU seconds (all cores) in `psutil.cpu_times()`: busy is
    everything but idle and I/O wait, and steal (time the hypervisor gave to other guests)."""
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "steal", 0.0)
    return total - idle, total


class ProcessSampler:
    """Samples resident memory every `interval` seconds in a thread; CPU from cpu_times deltas.

    Also the whole machine's busy share in each interval (`machine_busy`: seconds since the
    start, % of all cores busy), whoever used it: the servers, the load generator, the fake
    model, PostgreSQL, Redis or anything else on the machine. At 100% every process waits for a
    core, so a latency figure then says more about the machine than about the product."""

    def __init__(self, processes: dict[str, psutil.Process], interval: float = 0.5) -> None:
        self.interval = interval
        self.machine_busy: list[tuple[float, float]] = []
        self._machine_last = _busy_and_total(psutil.cpu_times())
        self.tracks: dict[str, _Track] = {}
        for name, process in processes.items():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                used = times.user + times.system
                timeline = None if name.startswith("postgres-") else []
                self.tracks[name] = _Track(process, used, timeline=timeline, cpu_last=used)
        self.started = self._cpu_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
            self._sample_machine()
            self._sample_cpu()

    def _sample_cpu(self) -> None:
        """Each process's CPU in the interval just ended: whether one process (a web process's
        event loop above all) was at its core's limit while the machine was not."""
        now = time.monotonic()
        elapsed, self._cpu_at = now - self._cpu_at, now
        for track in self.tracks.values():
            if track.timeline is None or elapsed <= 0:
                continue
            with contextlib.suppress(psutil.Error):
                times = track.process.cpu_times()
                used = times.user + times.system
                share = 100 * (used - track.cpu_last) / elapsed
                track.cpu_last = used
                track.timeline.append((round(now - self.started, 2), round(max(0.0, share), 1)))

    def _sample_machine(self) -> None:
        busy, total = _busy_and_total(psutil.cpu_times())
        last_busy, last_total = self._machine_last
        self._machine_last = (busy, total)
        if total > last_total:
            share = 100 * (busy - last_busy) / (total - last_total)
            at = time.monotonic() - self.started
            self.machine_busy.append((round(at, 2), round(max(0.0, min(100.0, share)), 1)))

    def sample(self) -> dict[str, int]:
        """Current RSS of each process (bytes); peaks are kept."""
        now: dict[str, int] = {}
        for name, track in self.tracks.items():
            with contextlib.suppress(psutil.Error):
                rss = track.process.memory_info().rss
                track.rss_last = rss
                track.rss_peak = max(track.rss_peak, rss)
                now[name] = rss
        return now

    def start(self) -> ProcessSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        """Per process: mean CPU % of one core over the sampling window, peak and last RSS (MB)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sample()
        wall = max(time.monotonic() - self.started, 1e-6)
        result: dict[str, dict[str, float]] = {}
        for name, track in self.tracks.items():
            try:
                times = track.process.cpu_times()
                used = times.user + times.system - track.cpu_start
            except psutil.Error:
                used = float("nan")
            result[name] = {
                "cpu_pct": round(used / wall * 100, 1),
                "cpu_s": round(used, 2),
                "rss_peak_mb": round(track.rss_peak / 2**20, 1),
                "rss_last_mb": round(track.rss_last / 2**20, 1),
            }
        return result

    def cpu_timelines(self) -> dict[str, list[tuple[float, float]]]:
        """Each process's CPU % of one core per sampling interval (PostgreSQL's backends aside)."""
        return {n: list(t.timeline) for n, t in self.tracks.items() if t.timeline is not None}


@contextlib.contextmanager
def running(config: StackConfig) -> Iterator[Stack]:
    """`with running(config) as stack:` the whole stack, stopped however the block ends."""
    stack = Stack(config)
    with stack:
        yield stack


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The benchmark's fake model server.")
    sub = parser.add_subparsers(dest="command", required=True)
    fake = sub.add_parser("fake", help="serve the timed fake model server")
    fake.add_argument("--port", type=int, required=True)
    fake.add_argument("--ttft-ms", type=float, default=400.0)
    fake.add_argument("--tokens-per-s", type=float, default=40.0)
    fake.add_argument("--reply-tokens", type=int, default=40)
    args = parser.parse_args(argv)
    serve_fake(
        args.port,
        {"ttft_ms": args.ttft_ms, "tokens_per_s": args.tokens_per_s,
         "reply_tokens": args.reply_tokens},
    )  # fmt: skip


if __name__ == "__main__":
    main()
