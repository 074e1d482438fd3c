"""Learners that behave like browsers, and the same model calls made straight to the model.

Each learner does what the conversation page does in Chromium with htmx:

1. `GET /practice/library/` (the CSRF cookie and a situation), `POST .../practise/` with the
   form's token (a learner, a session cookie and a conversation with its partner brief), then the
   redirect `GET /practice/c/<id>/`, whose `<body hx-headers>` holds the token htmx sends;
2. opens `ws/conversations/<id>/` and `ws/conversations/<id>/feedback/` with the session cookie
   and the page's Origin, as the ws extension does (permessage-deflate offered, as browsers do);
3. per turn: "writes" a draft (think time), asks for feedback as the "Get feedback" button does
   (over the open feedback socket, `{"action": "request", "text": ..., "strategies": [...],
   "used_rewrite": ""}`; with `feedback_over="http"` by `POST /feedback/c/<id>/request/`, as the
   button does when the socket is not open), waits on the feedback socket for the final panel and
   reports it "viewed"; reads it (think time), then sends the message over the chat socket as the
   form's `ws-send` does (the draft as it was rated, or, for a share of the turns, changed after
   reading the feedback) (`{"action": "send", "text": ..., "strategies": [...], "send_key":
   ...}`, with the key the page was last given) and reads the partner's reply as it streams
   (first delta, then the completed bubble).

At the same moment as each of these, a direct client sends the matching request straight to the
fake model server (a streamed reply to the same text; a JSON reply), so the limit is measured in
the same run on the same machine. Every text carries a tag (`bx<learner>y<turn>z<revision>`) that
the fake's timing log reports back, so each product request is paired with the model's own time
for exactly that request.

Everything is bounded: each wait has a timeout, each learner does a fixed number of turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import websockets
from websockets.asyncio.client import ClientConnection

STRATEGIES = ("describe", "express", "assert", "reinforce", "negotiate")

# Sentences in the spirit of each strategy (written for this benchmark); a draft picks one per
# chosen strategy, plus filler, so its length and content vary like a learner's.
LINES = {
    "describe": [
        "Last week the rent was paid four days late for the second month in a row.",
        "On Tuesday the meeting started without me although I had asked to present.",
        "The dishes from the weekend were still in the sink on Monday evening.",
        "You told me on Friday that the report would be ready, and it was not.",
    ],
    "express": [
        "I feel anxious when this happens because I worry about our plans.",
        "Honestly I felt hurt and a bit embarrassed in front of the team.",
        "I get frustrated when it keeps coming up and nothing changes.",
        "I am worried and tired, and I would like us to sort it out calmly.",
    ],
    "assert": [
        "I would like you to pay on the first of the month from now on.",
        "Please give me ten minutes at the start of the next meeting.",
        "I am asking you to clear the kitchen before you go to bed.",
        "Can you send me the report by Wednesday noon, please?",
    ],
    "reinforce": [
        "That way we both stop worrying and evenings get easier for us.",
        "It would mean I can back you up fully when the manager asks.",
        "If we do this I will stop reminding you and we will both be happier.",
        "You would get more time for your own projects as well.",
    ],
    "negotiate": [
        "If the first is hard, could we agree on the third instead?",
        "I can take the bins if you handle the dishes, would that work?",
        "What would make this easier for you, so we can find a middle way?",
        "Could we try it for one month and then talk about it again?",
    ],
}
FILLER = [
    "I have thought about how to say this.",
    "This matters to me and I want to be fair to you.",
    "I know you have a lot going on right now.",
    "Thank you for hearing me out.",
]


@dataclass
class LoadConfig:
    """One run of the load: how many learners, how many turns, how fast they think."""

    learners: int = 10
    messages: int = 4  # learner messages per conversation (the product allows 10)
    feedback_per_message: int = 1
    # The share of messages changed after the feedback was read (the rest are sent as rated).
    edited_after_feedback: float = 0.25
    # A learner reads the reply, thinks and writes about 40 words: 20-60 s here, about twice the
    # pace of the published study's participants (10 messages in 15-20 minutes).
    draft_think_s: tuple[float, float] = (20.0, 60.0)
    read_think_s: tuple[float, float] = (3.0, 8.0)
    ramp_s: float | None = None  # spread of the set-ups; default learners / 50 per second
    wait_timeout_s: float = 90.0
    seed: int = 7
    direct: bool = True  # the limit: the same calls straight to the model
    # The generator's event loop: "uvloop" (as the web processes run) or "asyncio" (the
    # standard library's, which costs the machine more CPU per learner; sessions 1-11 used it).
    client_loop: str = "uvloop"
    # How the "Get feedback" button asks: "socket" (the page's way while its feedback socket is
    # open) or "http" (its fallback, and every session's way before 19).
    feedback_over: str = "socket"


# --- a small HTTP/1.1 client ------------------------------------------------------------------
# One connection per request, nothing pooled or buffered behind the caller's back, so the time
# measured is the time of the request (and the direct client adds as little as a client can).


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def cookies(self) -> dict[str, str]:
        found = {}
        for key, value in self.headers:
            if key.lower() == "set-cookie":
                pair = value.split(";", 1)[0]
                if "=" in pair:
                    name, _, val = pair.partition("=")
                    found[name.strip()] = val.strip()
        return found

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = []
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers.append((key.strip(), value.strip()))
    return status, headers


async def _body_chunks(
    reader: asyncio.StreamReader, headers: list[tuple[str, str]]
) -> Any:  # an async iterator of bytes
    values = {k.lower(): v for k, v in headers}
    if values.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in values:
        length = int(values["content-length"])
        if length:
            yield await reader.readexactly(length)
    else:
        while chunk := await reader.read(65536):
            yield chunk


def _request_bytes(
    method: str, host: str, path: str, headers: dict[str, str], body: bytes
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def http(
    base: str, method: str, path: str, *, headers: dict[str, str] | None = None,
    body: bytes = b"", timeout: float = 60.0,
) -> Response:  # fmt: skip
    """One HTTP/1.1 request on its own connection; the whole body read."""
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    async def go() -> Response:
        reader, writer = await asyncio.open_connection(host, port, limit=2**20)
        try:
            writer.write(_request_bytes(method, f"{host}:{port}", path, headers or {}, body))
            await writer.drain()
            status, response_headers = await _read_head(reader)
            data = b"".join([chunk async for chunk in _body_chunks(reader, response_headers)])
            return Response(status, response_headers, data)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.wait_for(go(), timeout)


# --- the direct client: the limit ------------------------------------------------------------


@dataclass
class DirectResult:
    first_ms: float | None = None  # first content token (streamed) or whole reply (JSON)
    total_ms: float | None = None
    error: str | None = None


_DIRECT_SCHEMA = {
    "type": "object",
    "properties": {
        "rating": {"type": "string", "enum": ["strong", "weak", "none"]},
        "reasoning": {"type": "string"},
        "suggestion": {"type": "string"},
    },
    "required": ["rating", "reasoning", "suggestion"],
    "additionalProperties": False,
}


async def direct_call(
    fake_url: str, text: str, *, stream: bool, timeout: float = 60.0
) -> DirectResult:
    """The model's own time for a request like the product's, seen by a minimal client."""
    body: dict[str, Any] = {
        "model": "fake-small",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 400,
    }
    if stream:
        body["stream"] = True
    else:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "direct", "schema": _DIRECT_SCHEMA, "strict": True},
        }
    payload = json.dumps(body).encode()
    parts = urlsplit(fake_url)
    result = DirectResult()
    started = time.perf_counter()

    async def go() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            headers = {"Content-Type": "application/json", "X-Imbue-Purpose": "direct"}
            writer.write(
                _request_bytes(
                    "POST", f"{parts.hostname}:{parts.port}", "/v1/chat/completions",
                    headers, payload,
                )
            )  # fmt: skip
            await writer.drain()
            status, response_headers = await _read_head(reader)
            if status != 200:
                result.error = f"direct HTTP {status}"
                return
            buffer = b""
            async for chunk in _body_chunks(reader, response_headers):
                if not stream:
                    buffer += chunk
                    continue
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    if result.first_ms is None and b'"content": "' in event:
                        data = json.loads(event[len(b"data: ") :])
                        choices = data.get("choices") or [{}]
                        if (choices[0].get("delta") or {}).get("content"):
                            result.first_ms = (time.perf_counter() - started) * 1000
            if not stream:
                json.loads(buffer)
                result.first_ms = (time.perf_counter() - started) * 1000
            result.total_ms = (time.perf_counter() - started) * 1000
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    try:
        await asyncio.wait_for(go(), timeout)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        result.error = f"direct {type(exc).__name__}"
    return result


# --- a socket that keeps every frame with the time it arrived --------------------------------


class Socket:
    """A websocket as the page holds it: every frame kept with its arrival time."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[tuple[float, str]] = []
        self.send_key = ""  # the composer's key for the next Send, as the page keeps it
        self.closed: str | None = None
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.connection:
                text = frame if isinstance(frame, str) else frame.decode()
                self.frames.append((time.time(), text))
                if 'id="send-key"' in text:
                    found = SEND_KEY.search(text)
                    self.send_key = found.group(1) if found else self.send_key
                self._changed.set()
        except websockets.ConnectionClosed as exc:
            self.closed = f"closed {exc.rcvd.code if exc.rcvd else ''}".strip()
        finally:
            self.closed = self.closed or "closed"
            self._changed.set()

    async def wait_for(
        self, match: Callable[[str], Any], start: int, timeout: float
    ) -> tuple[int, float, Any]:
        """The first frame from index `start` on for which `match` is truthy: (index, time,
        what `match` returned). TimeoutError, or ConnectionError when the socket closes."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.frames):
                at, text = self.frames[index]
                found = match(text)
                if found:
                    return index, at, found
                index += 1
            if self.closed:
                raise ConnectionError(f"socket {self.closed}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching frame")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def send(self, data: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(data))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.connection.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


# --- one learner ------------------------------------------------------------------------------

SITUATION_LINK = re.compile(r'action="(/practice/situations/(\d+)/practise/)"')
FORM_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
PAGE_TOKEN = re.compile(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'")
PANEL = re.compile(r'data-state="(\w+)" data-request-id="(\d+)"')
PARTNER_BUBBLE = re.compile(r'id="msg-(\d+)" class="msg msg-partner msg-(\w+)"')
DELTA = re.compile(r'hx-swap-oob="beforeend:#msg-(\d+)-text"')
BUBBLE_TEXT = re.compile(r'id="msg-(\d+)-text">([^<]+)</p>')
SEND_KEY = re.compile(r'id="send-key" value="([^"]+)"')
CHAT_ERROR = re.compile(r'id="chat-error"[^>]*><p class="error">([^<]*)</p>')


@dataclass
class Turn:
    """What one learner message measured (times in ms; wall-clock stamps in s)."""

    learner: int
    turn: int
    tag: str
    sent_at: float
    first_ms: float | None = None
    done_ms: float | None = None
    direct_first_ms: float | None = None
    direct_total_ms: float | None = None
    error: str | None = None


@dataclass
class FeedbackAsk:
    """What one "Get feedback" measured."""

    learner: int
    turn: int
    tag: str
    asked_at: float
    offline_ms: float | None = None  # the POST's answer: the quick offline panel
    display_ms: float | None = None  # request to the final panel on the socket
    direct_ms: float | None = None
    direct_tag: str = ""
    request_id: int | None = None
    error: str | None = None


@dataclass
class Results:
    setups_ms: list[float] = field(default_factory=list)
    # Each set-up step's time (ms) by step: where a learner's wait for a live page goes when
    # many arrive at once (`SETUP_STEPS`).
    setup_steps_ms: dict[str, list[float]] = field(default_factory=dict)
    turns: list[Turn] = field(default_factory=list)
    asks: list[FeedbackAsk] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connected: int = 0
    turns_started: float | None = None
    turns_ended: float | None = None
    loop_lag_ms: list[float] = field(default_factory=list)
    direct_errors: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0  # this generator's own CPU during the turns
    # The extensions the server agreed to on each socket ("" for none): compression's cost
    # shows in the server's memory per socket and CPU, so a run records which it had.
    ws_extensions: set[str] = field(default_factory=set)
    keyed_sends: int = 0  # sends carrying the page's key, as a browser's do


def draft_text(rng: random.Random, chosen: Sequence[str], tag: str) -> str:
    """A learner's draft for these strategies, 30-50 words, carrying its tag."""
    parts = [rng.choice(LINES[s]) for s in chosen]
    while len(" ".join(parts).split()) < 30:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(FILLER))
    return " ".join(parts) + f" (ref {tag})"


class Learner:
    """One browser with one conversation page open."""

    def __init__(
        self, index: int, base_url: str, fake_url: str, config: LoadConfig, results: Results
    ) -> None:
        self.index = index
        self.base = base_url
        self.fake_url = fake_url
        self.config = config
        self.results = results
        self.rng = random.Random(config.seed * 100_003 + index)
        self.cookies: dict[str, str] = {}
        self.token = ""
        self.conversation_id = 0
        self.chat: Socket | None = None
        self.feedback: Socket | None = None
        self.complete: set[int] = set()

    @property
    def origin(self) -> str:
        return self.base

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = {"User-Agent": "imbue-bench", "Accept": "text/html"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers.update(extra)
        return headers

    async def _call(self, method: str, path: str, **kwargs: Any) -> Response:
        response = await http(self.base, method, path, **kwargs)
        self.cookies.update(response.cookies())
        return response

    def _step(self, name: str, since: float) -> float:
        """Record set-up step `name` as ended now; returns now."""
        now = time.perf_counter()
        self.results.setup_steps_ms.setdefault(name, []).append((now - since) * 1000)
        return now

    async def setup(self, situation_ids: list[int]) -> None:
        """Open the library, start a conversation, load its page, open both sockets."""
        started = time.perf_counter()
        library = await self._call("GET", "/practice/library/", headers=self._headers())
        step = self._step("library", started)
        if library.status != 200:
            raise RuntimeError(f"library HTTP {library.status}")
        form_token = FORM_TOKEN.search(library.text)
        links = [int(m.group(2)) for m in SITUATION_LINK.finditer(library.text)]
        if not form_token or not (links or situation_ids):
            raise RuntimeError("library page has no practise form")
        situation = self.rng.choice(links or situation_ids)
        start = await self._call(
            "POST",
            f"/practice/situations/{situation}/practise/",
            headers=self._headers(
                **{"Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin,
                   "Referer": self.base + "/practice/library/"}
            ),
            body=urlencode({"csrfmiddlewaretoken": form_token.group(1)}).encode(),
        )  # fmt: skip
        step = self._step("practise", step)
        location = start.header("location") or ""
        found = re.search(r"/practice/c/(\d+)/", location)
        if start.status != 302 or not found:
            raise RuntimeError(f"practise HTTP {start.status}")
        self.conversation_id = int(found.group(1))
        page = await self._call("GET", location, headers=self._headers())
        step = self._step("page", step)
        token = PAGE_TOKEN.search(page.text)
        if page.status != 200 or not token:
            raise RuntimeError(f"conversation page HTTP {page.status}")
        self.token = token.group(1)
        self.chat = await self._open(f"/ws/conversations/{self.conversation_id}/")
        step = self._step("chat_socket", step)
        self.feedback = await self._open(f"/ws/conversations/{self.conversation_id}/feedback/")
        step = self._step("feedback_socket", step)
        # The page is live once the socket has sent the transcript.
        await self.chat.wait_for(lambda t: 'id="transcript"' in t, 0, self.config.wait_timeout_s)
        self._step("transcript", step)
        self.results.setups_ms.append((time.perf_counter() - started) * 1000)

    async def _open(self, path: str) -> Socket:
        ws_url = "ws" + self.base[len("http") :] + path
        connection = await websockets.connect(
            ws_url,
            origin=self.origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": self._headers()["Cookie"], "User-Agent": "imbue-bench"},
            open_timeout=self.config.wait_timeout_s,
            ping_interval=None,  # browsers do not ping; they answer the server's pings
            max_size=2**22,
        )
        response = connection.response
        agreed = response.headers.get("Sec-WebSocket-Extensions", "") if response else ""
        self.results.ws_extensions.add(agreed)
        return Socket(connection)

    def _tag(self, turn: int, revision: int) -> str:
        return f"bx{self.index}y{turn}z{revision}"

    def _choose(self) -> list[str]:
        count = self.rng.choice((1, 1, 2, 2, 3))
        return sorted(self.rng.sample(STRATEGIES, count), key=STRATEGIES.index)

    async def _think(self, span: tuple[float, float]) -> None:
        await asyncio.sleep(self.rng.uniform(*span))

    async def run_turns(self) -> None:
        for turn in range(1, self.config.messages + 1):
            chosen = self._choose()
            if turn == 1:
                # Learners arrive at different times: the first draft is anywhere between just
                # started and a whole think time in, so the turns do not all fall at once.
                await asyncio.sleep(self.rng.uniform(0, self.config.draft_think_s[1]))
            else:
                await self._think(self.config.draft_think_s)
            revision = 1
            text = draft_text(self.rng, chosen, self._tag(turn, revision))
            for revision in range(1, self.config.feedback_per_message + 1):
                text = draft_text(self.rng, chosen, self._tag(turn, revision))
                ask = await self.ask_feedback(turn, text, chosen)
                if ask.error:
                    raise RuntimeError(ask.error)
                await self._think(self.config.read_think_s)
            # The message is the last draft, as rated or changed after the feedback was read
            # (then it carries revision 0's tag).
            # (A generator of its own: the think times stay those of earlier runs.)
            edit = random.Random(f"{self.config.seed}-{self.index}-{turn}").random()
            if edit < self.config.edited_after_feedback:
                text = text.replace(self._tag(turn, revision), self._tag(turn, 0)) + " Thank you."
            sent = await self.send_message(turn, text, chosen)
            if sent.error:
                raise RuntimeError(sent.error)

    async def ask_feedback(self, turn: int, text: str, chosen: list[str]) -> FeedbackAsk:
        """The "Get feedback" button (over the socket or HTTP), then the final panel on the
        feedback socket."""
        assert self.feedback is not None
        tag = tag_in(text)
        ask = FeedbackAsk(self.index, turn, tag, time.time())
        self.results.asks.append(ask)
        start_index = len(self.feedback.frames)
        direct = None
        if self.config.direct:
            ask.direct_tag = tag + "d"
            direct = asyncio.create_task(
                direct_call(self.fake_url, text.replace(tag, ask.direct_tag), stream=False)
            )
        started = time.perf_counter()
        try:
            if self.config.feedback_over == "socket":
                request_id = await self._ask_over_socket(text, chosen, start_index)
            else:
                request_id = await self._ask_over_http(text, chosen)
            ask.offline_ms = (time.perf_counter() - started) * 1000
            ask.request_id = int(request_id)

            def final(frame: str) -> bool:
                found = PANEL.search(frame)
                return bool(found and found.group(1) == "final" and found.group(2) == request_id)

            _, at, _ = await self.feedback.wait_for(final, start_index, self.config.wait_timeout_s)
            ask.display_ms = (at - ask.asked_at) * 1000
            await self.feedback.send({"action": "viewed", "request_id": int(request_id)})
        except Exception as exc:
            ask.error = f"feedback: {type(exc).__name__}: {exc}"[:200]
        if direct is not None:
            result = await direct
            ask.direct_ms = result.first_ms
            if result.error:
                self.results.direct_errors.append(result.error)
        return ask

    async def _ask_over_socket(self, text: str, chosen: list[str], start: int) -> str:
        """The button while the feedback socket is open: the request as a frame; its answer is
        the next panel (or refusal) the socket sends. Returns the request's id."""
        assert self.feedback is not None
        await self.feedback.send(
            {"action": "request", "text": text, "strategies": chosen, "used_rewrite": ""}
        )
        _, _, found = await self.feedback.wait_for(
            lambda frame: PANEL.search(frame) or ('data-state="error"' in frame and frame),
            start,
            self.config.wait_timeout_s,
        )
        if isinstance(found, str):
            words = " ".join(re.sub(r"<[^>]+>", " ", found).split())
            raise RuntimeError(f"feedback refused: {words}"[:160])
        return found.group(2)

    async def _ask_over_http(self, text: str, chosen: list[str]) -> str:
        """The button's own HTTP request (its fallback). Returns the request's id."""
        form = [("text", text), *[("strategies", s) for s in chosen], ("used_rewrite", ""),
                ("csrfmiddlewaretoken", self.token)]  # fmt: skip
        response = await self._call(
            "POST",
            f"/feedback/c/{self.conversation_id}/request/",
            headers=self._headers(
                **{"Content-Type": "application/x-www-form-urlencoded",
                   "HX-Request": "true", "HX-Trigger": "feedback-button",
                   "HX-Target": "feedback-panel-body", "X-CSRFToken": self.token,
                   "HX-Current-URL": f"{self.base}/practice/c/{self.conversation_id}/",
                   "Origin": self.origin}
            ),
            body=urlencode(form).encode(),
            timeout=self.config.wait_timeout_s,
        )  # fmt: skip
        panel = PANEL.search(response.text)
        if response.status != 200 or not panel:
            raise RuntimeError(f"feedback HTTP {response.status}")
        return panel.group(2)

    async def send_message(self, turn: int, text: str, chosen: list[str]) -> Turn:
        """The chat form's ws-send, then the partner's reply as it streams."""
        assert self.chat is not None
        record = Turn(self.index, turn, tag_in(text), time.time())
        self.results.turns.append(record)
        start_index = len(self.chat.frames)
        direct = None
        if self.config.direct:
            direct = asyncio.create_task(
                direct_call(self.fake_url, text.replace(record.tag, record.tag + "d"), stream=True)
            )
        payload = {
            "action": "send", "text": text, "strategies": chosen, "send_key": self.chat.send_key,
            "csrfmiddlewaretoken": self.token,
            "HEADERS": {"HX-Request": "true", "HX-Trigger": "chat-form",
                        "HX-Trigger-Name": None, "HX-Target": "chat",
                        "HX-Current-URL": f"{self.base}/practice/c/{self.conversation_id}/"},
        }  # fmt: skip
        self.results.keyed_sends += bool(self.chat.send_key)
        try:
            await self.chat.send(payload)
            complete = self.complete

            def first(frame: str) -> Any:
                error = CHAT_ERROR.search(frame)
                if error and error.group(1).strip():
                    return ("error", error.group(1))
                for found in DELTA.finditer(frame):
                    if int(found.group(1)) not in complete:
                        return ("token", int(found.group(1)))
                bubbles = {int(m.group(1)): m.group(2) for m in PARTNER_BUBBLE.finditer(frame)}
                for found in BUBBLE_TEXT.finditer(frame):
                    pk = int(found.group(1))
                    if pk in bubbles and pk not in complete and found.group(2).strip():
                        return ("token", pk)
                return None

            index, at, (kind, value) = await self.chat.wait_for(
                first, start_index, self.config.wait_timeout_s
            )
            if kind == "error":
                raise RuntimeError(f"chat error: {value}")
            record.first_ms = (at - record.sent_at) * 1000
            reply_id = value

            def done(frame: str) -> Any:
                for found in PARTNER_BUBBLE.finditer(frame):
                    if int(found.group(1)) == reply_id and found.group(2) in ("complete", "failed"):
                        return found.group(2)
                return None

            _, at, state = await self.chat.wait_for(done, index, self.config.wait_timeout_s)
            if state != "complete":
                raise RuntimeError("the partner's reply failed")
            record.done_ms = (at - record.sent_at) * 1000
            complete.add(reply_id)
        except Exception as exc:
            record.error = f"message: {type(exc).__name__}: {exc}"[:200]
        if direct is not None:
            result = await direct
            record.direct_first_ms, record.direct_total_ms = result.first_ms, result.total_ms
            if result.error:
                self.results.direct_errors.append(result.error)
        return record

    def _choose_again(self, text: str) -> list[str]:
        # The message keeps the strategies of its drafts: recover them from the sentences used.
        chosen = [s for s in STRATEGIES if any(line in text for line in LINES[s])]
        return chosen or ["describe"]

    async def close(self) -> None:
        for sock in (self.chat, self.feedback):
            if sock is not None:
                await sock.close()


def tag_in(text: str) -> str:
    """The bench tag a text carries (empty if none)."""
    found = re.search(r"\bbx\d+y\d+z\d+\b", text)
    return found.group(0) if found else ""


# --- the run ----------------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Allow as many open files as the hard limit permits (1,000 learners hold 2,000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _watch_loop(results: Results, stop: asyncio.Event) -> None:
    """The generator's own event-loop lag: if it is large, the client is the bottleneck."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.1)
        results.loop_lag_ms.append((time.perf_counter() - before - 0.1) * 1000)


async def run_load(
    base_url: str,
    fake_url: str,
    config: LoadConfig,
    *,
    on_connected: Callable[[], None] | None = None,
) -> Results:
    """Set up every learner, then (all connected) run their turns; returns what was measured.

    `on_connected` is called once all learners hold their sockets, before the first turn (the
    runner samples memory there).
    """
    raise_fd_limit()
    results = Results()
    learners = [Learner(i, base_url, fake_url, config, results) for i in range(config.learners)]
    ramp = config.ramp_s if config.ramp_s is not None else max(1.0, config.learners / 50)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_loop(results, stop))
    ready: list[Learner] = []

    async def set_up(learner: Learner) -> None:
        await asyncio.sleep(ramp * learner.index / max(1, config.learners))
        try:
            await learner.setup([])
            ready.append(learner)
        except Exception as exc:
            results.errors.append(f"setup: {type(exc).__name__}: {exc}"[:200])
            await learner.close()

    await asyncio.gather(*(set_up(learner) for learner in learners))
    results.connected = len(ready)
    if on_connected is not None:
        await asyncio.get_running_loop().run_in_executor(None, on_connected)

    async def turns(learner: Learner) -> None:
        try:
            await learner.run_turns()
        except Exception as exc:
            results.errors.append(str(exc)[:200])
        finally:
            await learner.close()

    results.turns_started = time.time()
    cpu_before = time.process_time()
    await asyncio.gather(*(turns(learner) for learner in ready))
    results.client_cpu_s = time.process_time() - cpu_before
    results.turns_ended = time.time()
    stop.set()
    await watcher
    return results
