"""A fake OpenAI-compatible chat model server for tests, demos and benchmarks.

It speaks the chat-completions wire protocol (plain and server-sent-event streaming, the final usage
chunk, `GET /v1/models`, Azure's deployment paths), answers deterministically from the request, and
can be told to misbehave the way real providers do. Run it as its own process:

    python -m tests.fakes.llm_server --port 8011 --ttft-ms 300 --tokens-per-s 40

or start it from Python with `start_fake_server()`. Tests steer it through `/_fake/*`:

- `POST /_fake/faults` `{"queue": ["429", {"kind": "cut"}], "rate": 0.1, "kinds": ["500"]}`: the
  queue is used up by the next chat requests, one fault each; the rate applies after that.
- `POST /_fake/config` changes knobs at run time, `GET /_fake/config` shows them.
- `GET /_fake/requests` lists every chat request received (full body, headers, purpose, fault,
  send times); `POST /_fake/reset` forgets faults and requests and restores the start-up knobs.

Fault kinds: any HTTP status as three digits ("429" carries Retry-After, "500", "401", "404"...;
a fault given as a dict may set "retry_after", "message" and "code"),
"cut" (connection dropped midway), "hang" (no answer until the client gives up), "malformed"
(broken JSON content), "bad_body" (a response body that is not JSON at all), "bad_shape" (JSON,
but not shaped as the protocol says: `choices` not a list, a message that is not an object),
"schema_violation"
(valid JSON that breaks the requested schema), "empty", "refuse" (a refusal), "content_filter",
"stream_error" (an `error` object sent inside the stream midway, as vLLM, llama.cpp and Ollama
do), "error_200" (HTTP 200 whose body is an error object, as some proxies answer). A fault given
as a dict may also set "body": the error body sent verbatim (another server's error shape).

Knobs make it answer as other real servers do: `reasoning` ("reasoning_content" as DeepSeek and
older vLLM, "reasoning" as Ollama and newer vLLM, "think" for `<think>...</think>` inside the
content as Qwen3 or DeepSeek-R1 on llama.cpp and Ollama, "think_in_template" for the same without
the opening `<think>`, which DeepSeek-R1's chat template puts in the prompt); `usage` ("final",
"none", or "every": cumulative usage on every chunk); `keepalive` (`: ping` SSE comments between
chunks); `context_length` (vLLM's 400 when the prompt plus `max_tokens` exceeds it);
`format_rejection` ("llama.cpp": older llama-server's HTTP 500 to a format it lacks); `require_v1`
(404 to a chat path outside `/v1/`, as vLLM and Ollama answer a base URL without it);
`ignore_response_format` (answer as if no format was asked, as older Ollama and some other servers
do, without an error).

Replies are words from a small vocabulary chosen by a hash of the messages, about as long as the
last user message (capped by `reply_tokens` and `max_tokens`); `fake_reply()` predicts them. When
the last user message contains `#agree`, the reply ends with the partner's agreement marker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import uvicorn

AGREE_MARKER = "<<AGREE>>"
AGREE_TRIGGER = "#agree"
DEFAULT_MODELS = ("fake-small", "fake-large", "gpt-4o-mini")
FAULT_KINDS = (
    "cut",
    "hang",
    "malformed",
    "bad_body",
    "bad_shape",
    "schema_violation",
    "empty",
    "refuse",
    "content_filter",
    "stream_error",
    "error_200",
)
# A reasoning trace that holds a JSON object of its own, as real ones often do.
REASONING_WORDS = ("Let", " me", " think:", " maybe", ' {"draft":', " 1}", " fits.")

# Plain conversational words, so demo transcripts read like (odd) speech rather than noise.
_VOCABULARY = """
    I hear you but maybe not now really think about it that is hard for me we could
    talk later why does this matter so much well okay fine the time again sure
    honestly feel busy right still want to know more what would change if said yes
    no perhaps tomorrow help understand point your my work home plan try agree wait
    listen first
"""
WORDS = tuple(_VOCABULARY.split())

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Knobs:
    """Run-time behaviour of the fake server; every field is settable by CLI and `/_fake/config`."""

    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0  # 0 = as fast as possible
    reply_tokens: int = 40
    fault_rate: float = 0.0
    fault_kinds: list[str] = field(default_factory=lambda: ["429", "500"])
    json_schema: bool = True  # False: answer 400 to `response_format: json_schema`
    json_object: bool = True  # False: answer 400 to `response_format: json_object`
    retry_after_s: float = 1.0
    hang_s: float = 300.0
    seed: int = 0
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    reasoning: str = ""  # "", "reasoning_content", "reasoning", "think" or "think_in_template"
    reasoning_tokens: int = 0  # 0: len(REASONING_WORDS); counted against max_tokens
    usage: str = "final"  # "final" (when asked), "none", "every" (cumulative, on every chunk)
    keepalive: bool = False  # ": ping" comments before every chunk
    context_length: int = 0  # 0: no limit; else vLLM's 400 when prompt + max_tokens exceed it
    format_rejection: str = "openai"  # or "llama.cpp": older llama-server's 500 to json_schema
    require_v1: bool = False  # 404 (as vLLM, Ollama) to a chat path outside /v1/ or Azure's
    ignore_response_format: bool = False  # answer as if none was asked (older Ollama and others)
    sentence_words: int = 0  # 0: no stops; else a full stop after every this many words

    def update(self, values: Mapping[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown knob {key!r}")
            current = getattr(self, key)
            if isinstance(current, bool):
                value = bool(value)
            elif isinstance(current, (int, float)):
                value = type(current)(value)
            elif isinstance(current, list):
                value = [str(v) for v in value]
            setattr(self, key, value)


# --- deterministic content --------------------------------------------------------------------


def content_text(content: Any) -> str:
    """The text of a message's content, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def messages_seed(messages: Sequence[Mapping[str, Any]]) -> int:
    """A stable integer derived from the messages; every choice the fake makes starts here."""
    canonical = json.dumps(
        [[m.get("role", ""), content_text(m.get("content"))] for m in messages], ensure_ascii=False
    )
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big")


def _pick(seed: int, path: str, n: int) -> int:
    digest = hashlib.sha256(f"{seed}|{path}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % n


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def reply_deltas(
    messages: Sequence[Mapping[str, Any]],
    *,
    reply_tokens: int = 40,
    max_tokens: int | None = None,
    sentence_words: int = 0,
) -> tuple[list[str], str]:
    """The reply as stream deltas (one word each) and its finish reason ("stop" or "length");
    with `sentence_words`, every that many words end a sentence (the last word always does)."""
    wanted = max(3, len(_last_user_text(messages).split()))
    whole = count = min(wanted, max(1, reply_tokens))
    finish = "stop"
    if max_tokens is not None and max_tokens < count:
        count, finish = max(1, max_tokens), "length"
    seed = messages_seed(messages)
    words = [WORDS[_pick(seed, f"w{i}", len(WORDS))] for i in range(count)]
    if sentence_words > 0:
        words = [
            w + "." if (i + 1) % sentence_words == 0 or i == whole - 1 else w
            for i, w in enumerate(words)
        ]
    deltas = [words[0]] + [" " + w for w in words[1:]]
    if AGREE_TRIGGER in _last_user_text(messages) and finish == "stop":
        deltas.append(" " + AGREE_MARKER)
    return deltas, finish


def fake_reply(
    messages: Sequence[Mapping[str, Any]],
    *,
    reply_tokens: int = 40,
    max_tokens: int | None = None,
    sentence_words: int = 0,
) -> str:
    """The exact text the fake answers to these messages (for tests to assert on)."""
    deltas, _ = reply_deltas(
        messages, reply_tokens=reply_tokens, max_tokens=max_tokens, sentence_words=sentence_words
    )
    return "".join(deltas)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _non_null_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return str(kind)


def fake_json(
    schema: Mapping[str, Any], seed: int, root: Mapping[str, Any] | None = None, path: str = "$"
) -> Any:
    """A value valid against `schema` (the subset structured outputs use), chosen by `seed`."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        options = list(schema["enum"])
        return options[_pick(seed, path, len(options))]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, root).get("type") != "null"]
            return fake_json((options or schema[key])[0], seed, root, path)
    if "allOf" in schema:
        return fake_json(schema["allOf"][0], seed, root, path)
    kind = _non_null_type(schema)
    if kind == "object":
        props = schema.get("properties", {})
        return {name: fake_json(sub, seed, root, f"{path}.{name}") for name, sub in props.items()}
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = int(schema.get("maxItems", max(low, 2)))
        count = max(low, min(high, max(low, 1) + _pick(seed, path + "#n", 2)))
        items = schema.get("items", {"type": "string"})
        return [fake_json(items, seed, root, f"{path}[{i}]") for i in range(count)]
    if kind == "boolean":
        return _pick(seed, path, 2) == 1
    if kind in ("integer", "number"):
        low = math.ceil(schema.get("minimum", 0))
        high = math.floor(schema.get("maximum", low + 10))
        value = low + _pick(seed, path, max(1, high - low + 1))
        return int(value) if kind == "integer" else float(value)
    if kind == "null":
        return None
    count = 3 + _pick(seed, path + "#len", 6)
    text = " ".join(WORDS[_pick(seed, f"{path}#{i}", len(WORDS))] for i in range(count))
    min_len, max_len = int(schema.get("minLength", 0)), schema.get("maxLength")
    text = text.ljust(min_len, ".")
    return text[: int(max_len)] if max_len is not None else text


def violate_schema(schema: Mapping[str, Any], value: Any) -> Any:
    """A copy of a valid `value` that breaks `schema` (for the schema_violation fault)."""
    schema = _resolve(schema, schema)
    if not isinstance(value, dict):
        return {"unexpected": value}
    broken = dict(value)
    required = list(schema.get("required", []))
    if required:
        broken.pop(required[0], None)
    else:
        broken["unexpected_key"] = True
        for name in list(broken)[:1]:
            broken[name] = {"wrong": "type"}
    return broken


def schema_in_messages(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A JSON schema quoted in the prompt (how clients ask for JSON without `json_schema`)."""
    decoder = json.JSONDecoder()
    for message in messages:
        text = content_text(message.get("content"))
        start = text.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(text, start)
            except ValueError:
                value = None
            if isinstance(value, dict) and ("properties" in value or value.get("type") == "object"):
                return value
            start = text.find("{", start + 1)
    return None


# --- the ASGI application ---------------------------------------------------------------------


class _Cut(Exception):
    """Raised inside a response to drop the connection midway."""


def _error_body(status: int, message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _context_error(limit: int, prompt_tokens: int, wanted: int) -> dict[str, Any]:
    """vLLM's answer to a prompt plus `max_tokens` beyond the model's context (its words)."""
    message = (
        f"'max_tokens' or 'max_completion_tokens' is too large: {wanted}. This model's maximum "
        f"context length is {limit} tokens and your request has {prompt_tokens} input tokens "
        f"({wanted} > {limit} - {prompt_tokens})."
    )
    return {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}


class FakeLLMApp:
    """The ASGI app. All state lives on one event loop (the server's), so it needs no locks."""

    def __init__(self, knobs: Knobs | None = None) -> None:
        self.initial = knobs or Knobs()
        self.knobs = Knobs(**asdict(self.initial))
        self.queue: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.rng = random.Random(self.knobs.seed)
        self.counter = 0

    def reset(self) -> None:
        self.knobs = Knobs(**asdict(self.initial))
        self.queue.clear()
        self.requests.clear()
        self.rng = random.Random(self.knobs.seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        try:
            if path.startswith("/_fake/"):
                await self._control(method, path, body, send)
            elif method == "GET" and path.rstrip("/").endswith("/models"):
                await self._models(send)
            elif method == "POST" and path.endswith("/chat/completions"):
                await self._chat(scope, body, receive, send)
            else:
                await _send_json(send, 404, _error_body(404, f"no route {path}", "not_found"))
        except _Cut:
            return  # uvicorn closes the connection: the client sees an incomplete body

    async def _control(self, method: str, path: str, body: bytes, send: Send) -> None:
        data = json.loads(body or b"{}")
        if path == "/_fake/requests":
            await _send_json(send, 200, {"requests": self.requests})
        elif path == "/_fake/reset" and method == "POST":
            self.reset()
            await _send_json(send, 200, {"ok": True})
        elif path == "/_fake/config":
            if method == "POST":
                try:
                    self.knobs.update(data)
                except (ValueError, TypeError) as exc:
                    await _send_json(send, 400, {"error": str(exc)})
                    return
            await _send_json(send, 200, asdict(self.knobs))
        elif path == "/_fake/faults" and method == "POST":
            if "queue" in data:
                self.queue = [_fault_spec(item) for item in data["queue"]]
            if "rate" in data:
                self.knobs.fault_rate = float(data["rate"])
            if "kinds" in data:
                self.knobs.fault_kinds = [str(k) for k in data["kinds"]]
            await _send_json(send, 200, {"queue": self.queue, "rate": self.knobs.fault_rate})
        else:
            await _send_json(send, 404, {"error": f"no control route {path}"})

    async def _models(self, send: Send) -> None:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "imbue-fake"}
            for name in self.knobs.models
        ]
        await _send_json(send, 200, {"object": "list", "data": data})

    def _next_fault(self) -> dict[str, Any] | None:
        if self.queue:
            return self.queue.pop(0)
        if self.knobs.fault_rate > 0 and self.rng.random() < self.knobs.fault_rate:
            kinds = self.knobs.fault_kinds or ["500"]
            return _fault_spec(kinds[self.rng.randrange(len(kinds))])
        return None

    async def _chat(self, scope: Scope, raw: bytes, receive: Receive, send: Send) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            await _send_json(
                send, 400, _error_body(400, "body is not JSON", "invalid_request_error")
            )
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if "/deployments/" in scope["path"]:  # Azure names the model in the path
            body.setdefault("model", scope["path"].split("/deployments/")[1].split("/")[0])
        elif self.knobs.require_v1 and "/v1/" not in scope["path"]:
            await _send_json(send, 404, {"detail": "Not Found"})
            return
        self.counter += 1
        entry: dict[str, Any] = {
            "n": self.counter,
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
            "body": body,
            "purpose": _purpose(headers, body),
            "fault": None,
            "received_at": time.time(),
            "first_token_at": None,
            "status": 200,
        }
        self.requests.append(entry)
        knobs = self.knobs
        messages = body.get("messages") or []
        fmt = (body.get("response_format") or {}).get("type", "text")
        if knobs.ignore_response_format:
            fmt = "text"
        if (fmt == "json_schema" and not knobs.json_schema) or (
            fmt == "json_object" and not knobs.json_object
        ):
            entry["status"] = 400
            message = f"response_format type {fmt!r} is not supported by this server"
            error = _error_body(400, message, "invalid_request_error")
            error["error"]["param"] = "response_format"
            if knobs.format_rejection == "llama.cpp":  # a runtime_error: HTTP 500, its words
                entry["status"] = 500
                message = (
                    f'response_format type must be one of "text" or "json_object", but got: {fmt}'
                )
                error = {"error": {"code": 500, "message": message, "type": "server_error"}}
            await _send_json(send, entry["status"], error)
            return
        prompt_tokens = sum(3 + len(content_text(m.get("content")).split()) for m in messages)
        wanted = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        if knobs.context_length and prompt_tokens + wanted > knobs.context_length:
            entry["status"] = 400
            await _send_json(send, 400, _context_error(knobs.context_length, prompt_tokens, wanted))
            return
        fault = self._next_fault()
        kind = entry["fault"] = fault["kind"] if fault else None
        if kind and kind.isdigit():
            entry["status"] = int(kind)
            await self._status_fault(send, int(kind), fault or {})
            return
        if kind == "hang":
            await _wait_for_disconnect(receive, fault.get("seconds", knobs.hang_s) if fault else 0)
            return
        if kind == "error_200" or (kind == "stream_error" and not body.get("stream")):
            error = _error_body(500, "The model crashed (fake).", "server_error")
            await _send_json(send, 200, (fault or {}).get("body") or error)
            return
        content, finish, refusal = self._content(body, messages, fmt, kind)
        reasoning, content, finish = self._reasoning(body, content, finish)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reasoning) + len(content),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            await self._stream(send, entry, body, content, finish, refusal, usage, kind, reasoning)
        else:
            await self._whole(send, entry, body, content, finish, refusal, usage, kind, reasoning)

    def _reasoning(
        self, body: Mapping[str, Any], content: list[str], finish: str
    ) -> tuple[list[str], list[str], str]:
        """A reasoning model's deltas: its reasoning (in its own field), and the content (with
        the reasoning inside `<think>` tags for the "think" knob), within `max_tokens`."""
        if not self.knobs.reasoning:
            return [], content, finish
        count = self.knobs.reasoning_tokens or len(REASONING_WORDS)
        reasoning = [REASONING_WORDS[i % len(REASONING_WORDS)] for i in range(count)]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and len(reasoning) + len(content) > limit:
            content, finish = content[: max(0, limit - len(reasoning))], "length"
            reasoning = reasoning[:limit]
        if self.knobs.reasoning not in ("think", "think_in_template"):
            return reasoning, content, finish
        closed = ["</think>", "\n\n"] if content or finish != "length" else []
        # DeepSeek-R1's chat template ends the prompt with "<think>\n": the reply opens inside.
        opening = ["<think>", "\n"] if self.knobs.reasoning == "think" else []
        return [], [*opening, *reasoning, *closed, *content], finish

    def _content(
        self,
        body: Mapping[str, Any],
        messages: Sequence[Mapping[str, Any]],
        fmt: str,
        kind: str | None,
    ) -> tuple[list[str], str, str | None]:
        """The reply as deltas, its finish reason, and a refusal text if refusing."""
        if kind == "refuse":
            return [], "stop", "I can't help with that request."
        if kind in ("empty", "content_filter"):
            return [], "content_filter" if kind == "content_filter" else "stop", None
        seed = messages_seed(messages)
        schema: Mapping[str, Any] | None = None
        if fmt == "json_schema":
            schema = (body["response_format"].get("json_schema") or {}).get("schema") or {}
        elif fmt in ("json_object", "text"):
            schema = schema_in_messages(messages)
        if schema is None and fmt == "json_object":
            value: Any = {"reply": fake_reply(messages, reply_tokens=self.knobs.reply_tokens)}
        elif schema is not None:
            value = fake_json(schema, seed)
            if kind == "schema_violation":
                value = violate_schema(schema, value)
        else:
            if kind in ("malformed", "schema_violation"):
                return _chunks('{"reply": "unfinished'), "stop", None
            max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
            deltas, finish = reply_deltas(
                messages,
                reply_tokens=self.knobs.reply_tokens,
                max_tokens=max_tokens,
                sentence_words=self.knobs.sentence_words,
            )
            return deltas, finish, None
        text = json.dumps(value, ensure_ascii=False)
        if kind == "malformed":
            text = "Here is the result: " + text[: max(2, len(text) // 2)]
        elif fmt == "text":
            text = f"Here is the JSON you asked for:\n```json\n{text}\n```"
        return _chunks(text), "stop", None

    async def _status_fault(self, send: Send, status: int, fault: Mapping[str, Any]) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if status == 429:
            wait = float(fault.get("retry_after", self.knobs.retry_after_s))
            headers = [
                (b"retry-after", str(max(0, math.ceil(wait))).encode()),
                (b"retry-after-ms", str(int(wait * 1000)).encode()),
            ]
            error = _error_body(
                429, "Rate limit reached (fake).", "requests", "rate_limit_exceeded"
            )
        elif status >= 500:
            error = _error_body(status, "The server had an error (fake).", "server_error")
        elif status == 401:
            error = _error_body(
                401,
                "Incorrect API key provided (fake).",
                "invalid_request_error",
                "invalid_api_key",
            )
        elif status == 404:
            error = _error_body(
                404, "The model does not exist (fake).", "invalid_request_error", "model_not_found"
            )
        else:
            error = _error_body(status, f"Fake error {status}.", "invalid_request_error")
        if fault.get("message"):
            error["error"]["message"] = str(fault["message"])
        if fault.get("code"):
            error["error"]["code"] = str(fault["code"])
        await _send_json(send, status, fault.get("body") or error, headers)

    async def _pace(self, index: int, started: float) -> None:
        """Sleep until token `index` is due under the ttft and tokens-per-second knobs."""
        due = started + self.knobs.ttft_ms / 1000
        if self.knobs.tokens_per_s > 0:
            due += index / self.knobs.tokens_per_s
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _stream(
        self,
        send: Send,
        entry: dict[str, Any],
        body: Mapping[str, Any],
        content: list[str],
        finish: str,
        refusal: str | None,
        usage: dict[str, int],
        kind: str | None,
        reasoning: list[str],
    ) -> None:
        started = time.perf_counter()
        ident = f"chatcmpl-fake{entry['n']}"
        knobs = self.knobs
        include_usage = knobs.usage == "final" and bool(
            (body.get("stream_options") or {}).get("include_usage")
        )
        sent = 0
        base = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "system_fingerprint": "fp_fake",
        }

        async def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            nonlocal sent
            data: dict[str, Any] = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                data["usage"] = None
            if knobs.usage == "every":  # cumulative, as some servers send on every chunk
                sent += 1 if delta.get("content") or delta.get(knobs.reasoning) else 0
                data["usage"] = {**usage, "completion_tokens": sent}
                data["usage"]["total_tokens"] = usage["prompt_tokens"] + sent
            if knobs.keepalive:
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
            await _send_sse(send, json.dumps(data))

        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await chunk({"role": "assistant", "content": "", "refusal": None})
        for index, piece in enumerate(reasoning):
            await self._pace(index, started)
            if knobs.reasoning == "reasoning":  # Ollama sends an empty content beside it
                await chunk({"content": "", "reasoning": piece})
            else:
                await chunk({knobs.reasoning: piece})
        if refusal:
            await self._pace(0, started)
            entry["first_token_at"] = time.time()
            await chunk({"refusal": refusal})
        cut_at = max(1, len(content) // 2) if kind == "cut" else None
        if kind == "bad_body":
            await self._pace(0, started)
            await _send_sse(send, '{"id": "broken", "choices": [{"delta": {"content": "x"')
        if kind == "bad_shape":
            await self._pace(0, started)
            await _send_sse(send, json.dumps({**base, "choices": "not a list"}))
        for index, delta in enumerate(content):
            if cut_at is not None and index >= cut_at:
                raise _Cut
            if kind == "stream_error" and index == max(1, len(content) // 2):
                error = _error_body(500, "The model crashed midway (fake).", "server_error")
                await _send_sse(send, json.dumps(error))
                await _send_sse(send, "[DONE]")
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await self._pace(index, started)
            if index == 0:
                entry["first_token_at"] = time.time()
            await chunk({"content": delta})
        if kind == "cut":
            raise _Cut
        await chunk({}, finish)
        if include_usage:
            await _send_sse(send, json.dumps({**base, "choices": [], "usage": usage}))
        await _send_sse(send, "[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _whole(
        self,
        send: Send,
        entry: dict[str, Any],
        body: Mapping[str, Any],
        content: list[str],
        finish: str,
        refusal: str | None,
        usage: dict[str, int],
        kind: str | None,
        reasoning: list[str],
    ) -> None:
        started = time.perf_counter()
        await self._pace(max(0, len(content) - 1), started)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if refusal else "".join(content),
            "refusal": refusal,
        }
        if reasoning:
            message[self.knobs.reasoning] = "".join(reasoning)
        data = {
            "id": f"chatcmpl-fake{entry['n']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
        }
        if self.knobs.usage == "none":
            del data["usage"]
        payload = json.dumps(data).encode()
        entry["first_token_at"] = time.time()
        if kind == "bad_body":
            payload = payload[: len(payload) // 2]
        if kind == "bad_shape":
            payload = json.dumps({**data, "choices": [{"index": 0, "message": "text"}]}).encode()
        if kind == "cut":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload[:20], "more_body": True})
            raise _Cut
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


def _chunks(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or []


def _fault_spec(item: Any) -> dict[str, Any]:
    spec = dict(item) if isinstance(item, Mapping) else {"kind": str(item)}
    spec["kind"] = str(spec["kind"])
    if not (spec["kind"].isdigit() or spec["kind"] in FAULT_KINDS):
        raise ValueError(f"unknown fault kind {spec['kind']!r}")
    return spec


def _purpose(headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    if headers.get("x-imbue-purpose"):
        return headers["x-imbue-purpose"]
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("purpose"):
        return str(metadata["purpose"])
    return str(body["user"]) if body.get("user") else None


async def _send_json(
    send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _send_sse(send: Send, data: str) -> None:
    await send(
        {"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True}
    )


async def _wait_for_disconnect(receive: Receive, seconds: float) -> None:
    """Hold the request open until the client gives up (or `seconds` pass)."""

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(until_disconnect(), timeout=seconds)


# --- running it -------------------------------------------------------------------------------


class _QuietCuts(logging.Filter):
    """Drop uvicorn's complaint about the responses the fake cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _uvicorn_config(app: FakeLLMApp, port: int, host: str = "127.0.0.1") -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_QuietCuts())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )


class FakeServer:
    """A running fake server: its base URL (ending in /v1) and a small control client."""

    def __init__(self, root_url: str, stop: Callable[[], None]) -> None:
        self.root_url = root_url
        self.base_url = root_url + "/v1"
        self._stop = stop

    def _call(self, method: str, path: str, data: Any = None) -> Any:
        payload = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(
            self.root_url + path,
            data=payload,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def faults(
        self,
        queue: Sequence[str | Mapping[str, Any]] = (),
        *,
        rate: float | None = None,
        kinds: Sequence[str] | None = None,
    ) -> None:
        """Queue faults for the next chat requests, and/or set a random fault rate."""
        data: dict[str, Any] = {"queue": list(queue)}
        if rate is not None:
            data["rate"] = rate
        if kinds is not None:
            data["kinds"] = list(kinds)
        self._call("POST", "/_fake/faults", data)

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs (see `Knobs`) and return all of them."""
        return self._call("POST", "/_fake/config", knobs)

    def requests(self) -> list[dict[str, Any]]:
        """Every chat request received since the last reset, oldest first."""
        return self._call("GET", "/_fake/requests")["requests"]

    def reset(self) -> None:
        """Forget faults and requests; restore the start-up knobs."""
        self._call("POST", "/_fake/reset", {})

    def stop(self) -> None:
        """Stop the server."""
        self._stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_fake_server(port: int = 0, *, in_subprocess: bool = False, **knobs: Any) -> FakeServer:
    """Start a fake server on 127.0.0.1 (port 0 = a free one) in a thread or its own process."""
    if in_subprocess:
        return _start_subprocess(port or _free_port(), knobs)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    actual = sock.getsockname()[1]
    values = Knobs()
    values.update(knobs)
    server = uvicorn.Server(_uvicorn_config(FakeLLMApp(values), actual))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake LLM server did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()

    return FakeServer(f"http://127.0.0.1:{actual}", stop)


def _start_subprocess(port: int, knobs: Mapping[str, Any]) -> FakeServer:
    args = [sys.executable, "-m", "tests.fakes.llm_server", "--port", str(port)]
    for key, value in knobs.items():
        flag = "--" + key.replace("_", "-")
        if value is False and key in ("json_schema", "json_object"):
            args.append(f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            args += [flag, *map(str, value)]
        elif value is not True:
            args += [flag, str(value)]
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(args, cwd=root, stdout=subprocess.DEVNULL)
    server = FakeServer(f"http://127.0.0.1:{port}", lambda: _end(process))
    deadline = time.monotonic() + 15
    while True:
        try:
            server._call("GET", "/_fake/config")
            return server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                _end(process)
                raise RuntimeError("the fake LLM server process did not start") from None
            time.sleep(0.05)


def _end(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: serve the fake until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token")
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="0 = unlimited")
    parser.add_argument("--reply-tokens", type=int, default=40, help="longest reply, in tokens")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of faulty requests")
    parser.add_argument("--fault-kinds", nargs="*", default=["429", "500"])
    parser.add_argument("--retry-after-s", type=float, default=1.0)
    parser.add_argument("--hang-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--no-json-schema", action="store_true", help="400 to json_schema")
    parser.add_argument("--no-json-object", action="store_true", help="400 to json_object")
    args = parser.parse_args(argv)
    knobs = Knobs(
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        reply_tokens=args.reply_tokens,
        fault_rate=args.fault_rate,
        fault_kinds=list(args.fault_kinds),
        json_schema=not args.no_json_schema,
        json_object=not args.no_json_object,
        retry_after_s=args.retry_after_s,
        hang_s=args.hang_s,
        seed=args.seed,
        models=list(args.models),
    )
    for kind in knobs.fault_kinds:
        _fault_spec(kind)
    print(f"fake LLM server on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.Server(_uvicorn_config(FakeLLMApp(knobs), args.port, args.host)).run()


if __name__ == "__main__":
    main()
