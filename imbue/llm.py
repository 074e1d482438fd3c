"""The one gateway to language models.

Every model call in IMBUE goes through this module, on the official `openai` SDK's async client, so
it works with anything that speaks the chat-completions protocol (OpenAI, Azure OpenAI, vLLM,
Ollama, llama.cpp's server, LM Studio). It reads `settings.LLM` at call time, retries transient
failures itself (bounded, exponential backoff with jitter, honouring Retry-After), validates
structured replies with one repair attempt, raises typed errors that carry a plain-language message,
and records every call as an `LLMCall` row: which model, prompt and parameters produced which reply.

Callers pass a `Prompt` (so the record names the template that produced the words) and a
`CallContext` (the conversation, message or draft the call serves):

    async with llm.stream_text(purpose="partner", messages=m, prompt=P, context=ctx) as reply:
        async for delta in reply:
            ...
    data = (await llm.complete_json(purpose="feedback", messages=m, schema=S, schema_name="rating",
                                    prompt=P, context=ctx)).data

With no model configured (`settings.LLM["base_url"]` is None) every call raises `NotConfigured`;
the product then runs on its offline engines, and `status_label()` says so on the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import aiohttp
import openai
import redis
from asgiref.sync import sync_to_async
from django.conf import settings

from imbue import redis_quiet
from imbue.models import LLMCall

log = logging.getLogger(__name__)

Message = Mapping[str, Any]
Outcome = LLMCall.Outcome
Format = LLMCall.Format

# A Retry-After longer than this would stall a live conversation: give up and let the caller decide.
MAX_RETRY_AFTER_S = 30.0
MAX_BACKOFF_S = 10.0
_ERROR_CHARS = 300


# --- prompts and context ----------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """A named, versioned prompt template; its hash goes into the record of every call it makes."""

    name: str
    version: str
    template: str

    @property
    def hash(self) -> str:
        """SHA-256 of the template text: the same words always give the same hash."""
        return hashlib.sha256(self.template.encode()).hexdigest()

    def render(self, **values: Any) -> str:
        """The template filled in with `str.format` (write literal braces as `{{` and `}}`)."""
        return self.template.format(**values)


@dataclass(frozen=True)
class CallContext:
    """What a call serves, stored on its record so researchers can trace every word."""

    conversation_id: int | None = None
    message_id: int | None = None
    draft_id: int | None = None


@dataclass(frozen=True)
class Reply:
    """A finished reply: its text, the validated JSON value (`complete_json`), and its record."""

    text: str
    data: Any = None
    call_id: int | None = None
    outcome: str = Outcome.OK
    model: str = ""


# --- errors -----------------------------------------------------------------------------------


class LLMError(Exception):
    """Any failure of a model call. `user_message` is safe to show; `str()` is for the logs."""

    outcome: str = Outcome.GAVE_UP
    retryable = False
    user_message = "The language model could not answer just now."

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after: float | None = None,
        transient: bool | None = None,
        partial_text: str = "",
    ) -> None:
        super().__init__(detail or self.user_message)
        self.detail = detail
        self.retry_after = retry_after
        # Worth another attempt inside this call (before the first token), which is not always
        # what `retryable` tells the caller about the call as a whole.
        self.transient = self.retryable if transient is None else transient
        self.partial_text = partial_text
        self.call_id: int | None = None


class NotConfigured(LLMError):
    outcome = Outcome.NOT_CONFIGURED
    user_message = "No language model is connected."


class Misconfigured(LLMError):
    """The server rejected the credentials, the model name or the request itself."""

    outcome = Outcome.MISCONFIGURED
    user_message = "The language model is not set up correctly, so this part is unavailable."


class Rejected(Misconfigured):
    """The server refused this one request (HTTP 400, 413 or 422: a prompt too long for the
    model's context, one its policy flagged, a parameter it does not take): the set-up may be
    fine, so neither the pages nor the learner are told otherwise. Stored as `misconfigured`
    all the same (the server's words are in the record)."""

    user_message = (
        "The language model refused this request. Please try again; if it refuses again, a "
        "shorter message may help."
    )


class Refused(LLMError):
    outcome = Outcome.REFUSED
    user_message = "The language model declined to answer this. Try putting it differently."


class Malformed(LLMError):
    """The reply could not be used, even after the repair attempt."""

    outcome = Outcome.MALFORMED
    user_message = "The language model gave an answer that could not be used."


class Retryable(LLMError):
    """A passing failure: the same call may well succeed a little later."""

    retryable = True
    user_message = "The language model is busy. Please try again in a moment."


class GaveUp(Retryable):
    outcome = Outcome.GAVE_UP
    user_message = "The language model did not answer after several tries. Please try again soon."


class TimedOut(GaveUp):
    outcome = Outcome.TIMEOUT
    user_message = "The language model took too long to answer. Please try again."


class StreamCut(Retryable):
    """The reply stopped midway; `partial_text` holds what had arrived."""

    outcome = Outcome.CUT
    user_message = "The reply was cut off midway. Please try again."


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    base_url: str
    api_key: str
    provider: str
    api_version: str
    timeout_s: float
    max_retries: int
    backoff_s: float
    http_client: str
    deployment: str = ""  # an Azure deployment named in the address: the model of every call

    @property
    def azure_v1(self) -> bool:
        """Azure's v1 API (`.../openai/v1`): the OpenAI protocol as is, no api-version."""
        return self.base_url.endswith("/openai/v1")

    @property
    def host(self) -> str:
        parts = urlsplit(self.base_url)
        return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else ""


def is_configured() -> bool:
    """Whether a language model is connected (else the product runs on its offline engines)."""
    return bool(settings.LLM.get("base_url"))


# (Base URL, purpose) whose last call in this process failed on its set-up (a wrong key, model
# or address), with why; a call for that purpose that succeeds takes it off. For the pages'
# status line. By purpose: each may name its own model, and one that works must not hide one
# that does not.
_failing: dict[tuple[str, str], str] = {}

# The same, shared between processes through Redis, so that a failure only the Celery worker
# meets (the feedback model's) shows on the web's pages too. No cost on a call that works: a
# process writes only when a call fails on its set-up (already a failed request to the model) or
# a failure it knows of ends, in the thread hop that writes the call's row anyway; pages read the
# hash at most every `SHARED_READ_S`, and take an entry older than `SHARED_FAILING_S` as over
# (its process may have stopped without a call succeeding).
SHARED_FAILING_KEY = "imbue:llm:failing"
SHARED_READ_S = 15.0
SHARED_FAILING_S = 600.0
_shared: dict[tuple[str, str], str] = {}  # as last read
_shared_read_at = -math.inf  # monotonic


def is_working() -> bool:
    """Configured, and no purpose's last call failed on its set-up, here or in another process
    (as last read; see `SHARED_READ_S`)."""
    base_url = str(settings.LLM.get("base_url") or "").rstrip("/")
    if not base_url or any(url == base_url for url, _ in _failing):
        return False
    return all(url != base_url for url, _ in _shared_failures())


def _shared_failures() -> dict[tuple[str, str], str]:
    """The failures all processes shared, read again when the last read is `SHARED_READ_S` old
    (kept as it was while Redis does not answer)."""
    global _shared_read_at
    now = time.monotonic()
    if now - _shared_read_at < SHARED_READ_S:
        return _shared
    _shared_read_at = now
    if redis_quiet.quiet():
        return _shared
    try:
        entries = _redis().hgetall(SHARED_FAILING_KEY)
    except redis.RedisError as error:
        log.warning("could not read the shared model status: %s", error)
        redis_quiet.note(error)
        return _shared
    fresh: dict[tuple[str, str], str] = {}
    for name, value in entries.items():
        try:
            url, purpose = name.decode().rsplit(" ", 1)
            entry = json.loads(value)
            if time.time() - float(entry["at"]) < SHARED_FAILING_S:
                fresh[(url, purpose)] = str(entry["why"])
        except (ValueError, KeyError, TypeError):
            continue
    _shared.clear()
    _shared.update(fresh)
    return _shared


def _share_status(change: tuple[tuple[str, str], str | None]) -> None:
    """Write one purpose's start (`why`) or end (None) of failing to the shared hash."""
    (url, purpose), why = change
    name = f"{url} {purpose}"
    if redis_quiet.quiet():
        return  # Redis just failed to answer in time: the pages keep this process's own view
    try:
        if why is None:
            _redis().hdel(SHARED_FAILING_KEY, name)
        else:
            entry = json.dumps({"why": why[:_ERROR_CHARS], "at": time.time()})
            with _redis().pipeline() as pipe:
                pipe.hset(SHARED_FAILING_KEY, name, entry)
                pipe.expire(SHARED_FAILING_KEY, int(SHARED_FAILING_S))
                pipe.execute()
    except redis.RedisError as error:
        log.warning("could not share the model status of %s: %s", purpose, error)
        redis_quiet.note(error)


_redis_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis:
    url = settings.REDIS_URL
    if url not in _redis_clients:
        _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return _redis_clients[url]


def status_label() -> str:
    """One plain sentence for the pages about which language model, if any, is connected."""
    if not is_configured():
        return (
            "No language model is connected: you are practising with the offline partner and "
            "offline feedback."
        )
    partner = settings.LLM.get("purposes", {}).get("partner", {}).get("model") or "unnamed"
    if not is_working():
        return (
            f"The language model ({partner}) is not set up correctly: feedback comes from the "
            "offline rater for now, and a reply that fails can be tried again."
        )
    return f"A language model is connected ({partner})."


def _config() -> _Config:
    conf = settings.LLM
    if not conf.get("base_url"):
        raise NotConfigured("settings.LLM has no base_url")
    # The endpoint's own address, pasted whole, is a common mistake: the SDK adds that part.
    base_url = str(conf["base_url"]).strip().rstrip("/").removesuffix("/chat/completions")
    provider = str(conf.get("provider") or "openai")
    api_key = str(conf.get("api_key") or "")
    api_version, deployment = str(conf.get("api_version") or ""), ""
    if provider == "azure":
        base_url, deployment, api_version = _azure_address(base_url, api_version)
        if not api_key:
            raise Misconfigured("LLM_PROVIDER=azure needs LLM_API_KEY (a key from the portal)")
        if not api_version and not base_url.endswith("/openai/v1"):
            raise Misconfigured(
                "LLM_PROVIDER=azure needs LLM_API_VERSION (such as 2024-10-21), or the v1 "
                "address https://<resource>.openai.azure.com/openai/v1 as LLM_BASE_URL"
            )
    return _Config(
        base_url=base_url,
        api_key=api_key,
        provider=provider,
        api_version=api_version,
        timeout_s=float(conf.get("timeout_s", 30.0)),
        max_retries=max(0, int(conf.get("max_retries", 2))),
        backoff_s=max(0.0, float(conf.get("backoff_s", 0.5))),
        http_client=_http_client_kind(conf.get("http_client")),
        deployment=deployment,
    )


def _azure_address(url: str, api_version: str) -> tuple[str, str, str]:
    """(endpoint, deployment, api version) from any address Azure's portal shows: the resource
    (`https://X.openai.azure.com`), a deployment's target URI (`.../openai/deployments/D/chat/
    completions?api-version=V`), or the v1 API (`.../openai/v1`, kept whole). An api-version in
    the address wins over LLM_API_VERSION: it is what that address was copied with."""
    parts = urlsplit(url)
    version = (parse_qs(parts.query).get("api-version") or [api_version])[0]
    path = parts.path.rstrip("/")
    root = f"{parts.scheme}://{parts.netloc}"
    if path.endswith("/openai/v1"):
        return root + path, "", version
    before, found, after = path.partition("/openai/deployments/")
    if found:
        return root + before, after.split("/")[0], version
    return root + path.removesuffix("/openai"), "", version


HTTP_CLIENTS = ("aiohttp", "httpx")


def _http_client_kind(value: Any) -> str:
    kind = str(value or "aiohttp").strip().lower()
    if kind not in HTTP_CLIENTS:
        choices = ", ".join(HTTP_CLIENTS)
        raise Misconfigured(f"LLM_HTTP_CLIENT must be one of {choices}, not {kind!r}")
    return kind


def _http_client(cfg: _Config) -> Any:
    """The SDK's own HTTP client, on aiohttp unless configured otherwise.

    Reading a streamed reply is per-chunk work on the event loop that streams every learner's
    reply: through httpx (h11's pure-Python parser, an anyio cancel scope per read) about 110 us
    a chunk, through aiohttp (a C parser) about half (bench/README.md, session 9). The SDK offers
    both (`openai[aiohttp]`); its exceptions, timeouts and retries are the same either way.
    """
    if cfg.http_client == "httpx":
        return openai.DefaultAsyncHttpxClient(timeout=cfg.timeout_s)
    return openai.DefaultAioHttpClient(timeout=cfg.timeout_s)


def _purpose_settings(purpose: str) -> dict[str, Any]:
    found = settings.LLM.get("purposes", {}).get(purpose)
    if not found or not found.get("model"):
        raise Misconfigured(f"settings.LLM['purposes'] names no model for {purpose!r}")
    return dict(found)


# One client per event loop and configuration: an httpx connection pool cannot cross loops. Sync
# callers share one long-lived loop (below), so their client lives as long as the process.
_clients: dict[tuple[int, _Config], tuple[weakref.ref[asyncio.AbstractEventLoop], Any, Any]] = {}


async def _client(cfg: _Config) -> openai.AsyncOpenAI:
    loop = asyncio.get_running_loop()
    key = (id(loop), cfg)
    found = _clients.get(key)
    if found and found[0]() is loop:
        return found[1]
    for old_key, (ref, _, _) in list(_clients.items()):
        if ref() is None:
            _clients.pop(old_key, None)
    client: openai.AsyncOpenAI
    if cfg.provider == "azure" and cfg.azure_v1:
        # Azure's v1 API is the OpenAI protocol: the key as a bearer token (its documented use
        # with the OpenAI client) and as Azure's own `api-key` header.
        client = openai.AsyncOpenAI(
            base_url=cfg.base_url,
            api_key=cfg.api_key,
            default_headers={"api-key": cfg.api_key},
            max_retries=0,
            timeout=cfg.timeout_s,
            http_client=_http_client(cfg),
        )
    elif cfg.provider == "azure":
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=cfg.base_url,
            api_key=cfg.api_key,
            api_version=cfg.api_version,
            max_retries=0,
            timeout=cfg.timeout_s,
            http_client=_http_client(cfg),
        )
    else:
        # Local servers want no key, but the SDK insists on one.
        client = openai.AsyncOpenAI(
            base_url=cfg.base_url,
            api_key=cfg.api_key or "no-key",
            max_retries=0,
            timeout=cfg.timeout_s,
            http_client=_http_client(cfg),
        )
    closer = _close_with_loop(client, key)
    await anext(closer)
    _clients[key] = (weakref.ref(loop), client, closer)
    return client


async def _close_with_loop(client: openai.AsyncOpenAI, key: Any) -> AsyncIterator[None]:
    """Parked until its loop shuts down its async generators (`asyncio.run` does, and so does
    async_to_sync), then closes the client while that loop still runs: closed any later, its
    connections would try to close on a dead loop."""
    try:
        yield
    finally:
        _clients.pop(key, None)
        await client.close()


# What each (server, model) was found to reject, learnt from its 400 answers, so the next call
# asks the right way at once: parameters to leave out, the structured-output formats it does not
# take (`_Ban` below), the context its prompts must fit.
_quirks: dict[tuple[str, str], set[str]] = {}
_FORMAT_ORDER = [Format.JSON_SCHEMA, Format.JSON_OBJECT, Format.JSON_IN_PROMPT]

# A format given up on weaker evidence than a 400 naming it (one prose answer to json_schema from
# a proxy that may pass it on to a model that ignored it this once; a 500 that names
# response_format, perhaps in passing) is asked for again after this long, and after twice as
# long each time the evidence repeats, up to `FORMAT_RETRY_MAX_S`.
FORMAT_RETRY_S = 300.0
FORMAT_RETRY_MAX_S = 6 * 3600.0


@dataclass
class _Ban:
    """A structured-output format a (server, model) did not take: for good (`until` None: it
    answered 400 naming it), or until `until` (monotonic time), after `strikes` such answers."""

    until: float | None
    strikes: int = 1


_formats: dict[tuple[str, str], dict[str, _Ban]] = {}
_clock = time.monotonic  # tests move it on


def _format_for(key: tuple[str, str]) -> str:
    """The strictest structured-output format this (server, model) is not known to refuse."""
    bans = _formats.get(key)
    if not bans:
        return Format.JSON_SCHEMA
    now = _clock()
    for fmt in _FORMAT_ORDER[:-1]:
        ban = bans.get(fmt)
        if ban is None or (ban.until is not None and ban.until <= now):
            return fmt
    return Format.JSON_IN_PROMPT


def _ban_format(key: tuple[str, str], fmt: str, *, lasting: bool) -> float | None:
    """Stop asking `key` for `fmt`: for good, or for a while that doubles with each repeat.
    Returns how long, in seconds (None: for good)."""
    bans = _formats.setdefault(key, {})
    earlier = bans.get(fmt)
    if earlier is not None and earlier.until is None:
        return None
    strikes = earlier.strikes + 1 if earlier is not None else 1
    if lasting:
        bans[fmt] = _Ban(until=None, strikes=strikes)
        return None
    wait = min(FORMAT_RETRY_S * 2 ** (strikes - 1), FORMAT_RETRY_MAX_S)
    bans[fmt] = _Ban(until=_clock() + wait, strikes=strikes)
    return wait


# (Server, model) -> (its context length, characters per prompt token), from vLLM's 400 to a
# prompt plus max_tokens beyond its context: later calls ask for a limit that fits at once
# instead of each being refused first.
_contexts: dict[tuple[str, str], tuple[int, float]] = {}
# The estimate of a prompt's tokens from its characters errs this much on the safe side.
_PROMPT_MARGIN = 1.1


def forget_server_capabilities() -> None:
    """Forget what servers were found not to support (after changing the server, and in tests)."""
    _formats.clear()
    _quirks.clear()
    _contexts.clear()
    global _shared_read_at
    _failing.clear()
    _shared.clear()
    _shared_read_at = -math.inf
    with contextlib.suppress(redis.RedisError):
        _redis().delete(SHARED_FAILING_KEY)
    _opened_by_template.clear()


# --- one call ---------------------------------------------------------------------------------


@dataclass
class _Run:
    """The state of one gateway call, written to `LLMCall` when it ends, however it ends."""

    purpose: str
    prompt: Prompt
    context: CallContext
    stream: bool
    response_format: str = Format.TEXT
    cfg: _Config | None = None
    model: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    attempts: int = 0
    tokens_in: int | None = None
    tokens_out: int | None = None
    ttft_ms: float | None = None
    finish_reason: str = ""
    retried: bool = False  # after a passing failure (a format fallback or repair is not a retry)
    repaired: bool = False
    reasoned: bool = False  # the model sent reasoning (its own field or a <think> block)
    revised: bool = False  # a stream's text is not what its deltas made (reasoning taken back)

    def __post_init__(self) -> None:
        if self.purpose not in LLMCall.Purpose.values:
            raise ValueError(
                f"unknown purpose {self.purpose!r}; use one of {LLMCall.Purpose.values}"
            )

    def configure(self) -> _Config:
        self.cfg = _config()
        chosen = _purpose_settings(self.purpose)
        self.model = self.cfg.deployment or str(chosen["model"])
        self.params = {
            "temperature": chosen.get("temperature"),
            "max_tokens": chosen.get("max_tokens"),
            "timeout_s": self.cfg.timeout_s,
            "max_retries": self.cfg.max_retries,
        }
        return self.cfg

    @property
    def key(self) -> tuple[str, str]:
        return (self.cfg.base_url if self.cfg else "", self.model)

    def request(self, messages: Sequence[Message], **extra: Any) -> dict[str, Any]:
        """Keyword arguments for `chat.completions.create` (sent by `_post`), minus what this
        server rejects."""
        assert self.cfg is not None
        quirks = _quirks.get(self.key, set())
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "timeout": self.cfg.timeout_s,
            "extra_headers": {"X-Imbue-Purpose": self.purpose},
            **extra,
        }
        if self.params.get("temperature") is not None and "temperature" not in quirks:
            kwargs["temperature"] = self.params["temperature"]
        if self.params.get("max_tokens"):
            token_param = "max_completion_tokens" if "max_tokens" in quirks else "max_tokens"
            kwargs[token_param] = self.params["max_tokens"]
            if self.key in _contexts:
                self.fit_to_context(kwargs, token_param)
        if self.stream and "stream_options" not in quirks:
            kwargs["stream_options"] = {"include_usage": True}
        return kwargs

    def fit_to_context(self, kwargs: dict[str, Any], token_param: str) -> None:
        """Lower the token limit to what the model's context (learnt from an earlier refusal)
        has room for beside this prompt, estimated from its characters; should the estimate
        fall short, the server's refusal is still fitted as before."""
        context, chars_per_token = _contexts[self.key]
        estimate = math.ceil(_prompt_chars(kwargs["messages"]) / chars_per_token * _PROMPT_MARGIN)
        room = context - estimate
        if MIN_REPLY_TOKENS <= room < kwargs[token_param]:
            kwargs[token_param] = self.params["fitted_max_tokens"] = room

    def learn_from_rejection(self, kwargs: dict[str, Any], error: openai.APIStatusError) -> bool:
        """Drop or rename a parameter the server said it does not support, or lower the token
        limit to what the model's context has room for; True if the request changed."""
        text = _error_text(error).lower()
        sizes = _context_sizes(text)
        if sizes is not None:
            # vLLM refuses a prompt plus max_tokens beyond the model's context (OpenAI stops
            # the reply there instead); its words name both parameters, and renaming is no fix.
            context, prompt_tokens = sizes
            if prompt_tokens > 0:  # remembered, so later calls fit at once (`fit_to_context`)
                _contexts[self.key] = (context, _prompt_chars(kwargs["messages"]) / prompt_tokens)
            room = context - prompt_tokens
            limit = "max_completion_tokens" if "max_completion_tokens" in kwargs else "max_tokens"
            if not MIN_REPLY_TOKENS <= room < int(kwargs.get(limit) or 0):
                return False  # the prompt alone (nearly) fills the context
            kwargs[limit] = self.params["fitted_max_tokens"] = room
            return True
        quirks = _quirks.setdefault(self.key, set())
        if "max_tokens" in kwargs and "max_completion_tokens" in text:
            kwargs["max_completion_tokens"] = kwargs.pop("max_tokens")
            quirks.add("max_tokens")
            return True
        for name in ("temperature", "stream_options"):
            if name in kwargs and name in text:
                kwargs.pop(name)
                quirks.add(name)
                return True
        return False

    def add_usage(self, usage: Any) -> bool:
        """Count one attempt's `usage` object (plain JSON; absent or partial on some servers);
        whether it held both counts."""
        if not isinstance(usage, dict):
            return False
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int):
            self.tokens_in = (self.tokens_in or 0) + prompt
        if isinstance(completion, int):
            self.tokens_out = (self.tokens_out or 0) + completion
        return isinstance(prompt, int) and isinstance(completion, int)

    def estimate_usage(self, messages: Sequence[Message], text: str, usage: Any) -> None:
        """Count what an attempt's `usage` left out (all of it on some servers, one count on
        others) at about four characters a token, so the conversation's token budget still
        applies; the record says it is an estimate. What the server did count is not added
        again."""
        reported = usage if isinstance(usage, dict) else {}
        if not isinstance(reported.get("prompt_tokens"), int):
            chars = sum(len(str(m.get("content") or "")) + 16 for m in messages)
            self.tokens_in = (self.tokens_in or 0) + math.ceil(chars / 4)
        if not isinstance(reported.get("completion_tokens"), int):
            self.tokens_out = (self.tokens_out or 0) + math.ceil(len(text) / 4)
        self.params["tokens_estimated"] = True

    def used_up(self, kwargs: Mapping[str, Any]) -> Malformed:
        """The error for a reply whose token limit ran out before any of its words."""
        limit = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens")
        by = " by the model's reasoning" if self.reasoned else ""
        return _UsedUp(
            f"the token limit ({limit}) was used up{by} before the reply began: raise "
            f"LLM_{self.purpose.upper()}_MAX_TOKENS or turn the model's reasoning off"
        )

    def first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000

    def success_outcome(self) -> str:
        if self.repaired:
            return Outcome.REPAIRED
        return Outcome.RETRIED_OK if self.retried else Outcome.OK

    def record_params(self) -> dict[str, Any]:
        """The `params` of the call's row."""
        params = dict(self.params)
        if _quirks.get(self.key):
            params["adapted_to_server"] = sorted(_quirks[self.key])
        return params

    def row(self, outcome: str, error: str = "") -> dict[str, Any]:
        """The fields of the call's `LLMCall` row."""
        cfg = self.cfg
        params = self.record_params()
        return {
            "purpose": self.purpose,
            "model": self.model,
            "provider": cfg.provider if cfg else "",
            "host": cfg.host if cfg else "",
            "prompt_name": self.prompt.name,
            "prompt_version": self.prompt.version,
            "prompt_hash": self.prompt.hash,
            "params": params,
            "response_format": self.response_format,
            "stream": self.stream,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "ttft_ms": self.ttft_ms,
            "total_ms": (time.perf_counter() - self.started) * 1000,
            "attempts": self.attempts,
            "outcome": outcome,
            "finish_reason": self.finish_reason or "",
            "error": _scrub(error, cfg),
            "conversation_id": self.context.conversation_id,
            "message_id": self.context.message_id,
            "draft_id": self.context.draft_id,
        }

    def note_outcome(
        self, outcome: str, failure: LLMError | None
    ) -> tuple[tuple[str, str], str | None] | None:
        """Keep the pages' status line true: a purpose is failing from its first call refused
        for its set-up (not for one request's content) until one succeeds. Returns the change
        to share with the other processes, if any (never for a call that works while none
        fails: see `SHARED_FAILING_KEY`)."""
        key = (str(settings.LLM.get("base_url") or "").rstrip("/"), self.purpose)
        if isinstance(failure, Misconfigured) and not isinstance(failure, Rejected):
            if not key[0]:
                return None
            why = _failing[key] = str(failure)
            return key, why
        if outcome in (Outcome.OK, Outcome.RETRIED_OK, Outcome.REPAIRED):
            known = _failing.pop(key, None) is not None
            if known or key in _shared:
                _shared.pop(key, None)
                return key, None
        return None

    async def record(
        self, outcome: str, error: str = "", failure: LLMError | None = None
    ) -> int | None:
        """Write the call's row; a failure to write is logged, never raised over the reply."""
        change = self.note_outcome(outcome, failure)
        try:
            if change is None:
                call = await LLMCall.objects.acreate(**self.row(outcome, error))
            else:  # in the same thread hop as the row
                call = await sync_to_async(self._create_and_share)(outcome, error, change)
        except Exception:
            log.exception("could not record the %s call", self.purpose)
            return None
        return call.pk

    def _create_and_share(
        self, outcome: str, error: str, change: tuple[tuple[str, str], str | None]
    ) -> LLMCall:
        _share_status(change)
        return LLMCall.objects.create(**self.row(outcome, error))

    def record_sync(
        self, outcome: str, error: str = "", failure: LLMError | None = None
    ) -> int | None:
        """`record` in the calling thread, so the row joins the caller's transaction."""
        change = self.note_outcome(outcome, failure)
        if change is not None:
            _share_status(change)
        try:
            call = LLMCall.objects.create(**self.row(outcome, error))
        except Exception:
            log.exception("could not record the %s call", self.purpose)
            return None
        return call.pk


def _error_text(exc: BaseException) -> str:
    """The server's own words about an error, whatever its shape: OpenAI's and llama.cpp's
    `{"error": {"message"}}`, older vLLM's `{"object": "error", "message"}`, TGI's and Ollama's
    `{"error": "..."}` (the SDK hands over the inner value), FastAPI's 422 `{"detail": [...]}`
    (field and problem only: its `input` may quote the whole prompt), or plain text."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str) and inner:
            return inner
        detail = body.get("detail")
        if isinstance(detail, list):
            return "; ".join(
                ".".join(map(str, d.get("loc", ()))) + f": {d.get('msg', '')}"
                for d in detail
                if isinstance(d, Mapping)
            )
        if detail:
            return str(detail)
    elif isinstance(body, str) and body.strip():
        return body.strip()
    return str(getattr(exc, "message", "") or exc)


# A fitted token limit below this would not leave room for a useful reply.
MIN_REPLY_TOKENS = 32
_CONTEXT_LIMIT = re.compile(r"maximum context length is (\d+)")
_PROMPT_SIZE = re.compile(r"(\d+) in the messages|(\d+) input tokens")


def _context_sizes(text: str) -> tuple[int, int] | None:
    """(The model's context length, the prompt's tokens) from a "maximum context length" error
    (vLLM's words, in each of its versions); None when the error is about something else."""
    limit, prompt = _CONTEXT_LIMIT.search(text), _PROMPT_SIZE.search(text)
    if not limit or not prompt:
        return None
    return int(limit.group(1)), int(prompt.group(1) or prompt.group(2))


def _room_for_reply(text: str) -> int | None:
    """Tokens left for the reply by a "maximum context length" error; None when the error is
    about something else."""
    sizes = _context_sizes(text)
    return None if sizes is None else sizes[0] - sizes[1]


def _prompt_chars(messages: Sequence[Message]) -> int:
    return sum(len(str(m.get("content") or "")) + 16 for m in messages)


def _scrub(text: str, cfg: _Config | None) -> str:
    """Error text for the record: no keys, one line, short."""
    if cfg and cfg.api_key:
        text = text.replace(cfg.api_key, "[key]")
    text = re.sub(r"\b(sk-|Bearer\s+)[A-Za-z0-9_\-*.]{6,}", "[key]", text)
    return " ".join(text.split())[:_ERROR_CHARS]


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue  # an HTTP date: rare from model servers; fall back to our backoff
    return None


def _connection_failure(exc: BaseException) -> BaseException | None:
    """The connection error (refused, reset, closed) behind an SDK error, if it was one and not
    a wait that ran out. The SDK's aiohttp transport maps every aiohttp connection error, a
    refused connection included, to httpx's `ConnectTimeout`."""
    seen: BaseException | None = exc
    walked: set[int] = set()
    while seen is not None and id(seen) not in walked:  # a chain can loop back on itself
        walked.add(id(seen))
        if isinstance(seen, aiohttp.ClientConnectionError) and not isinstance(
            seen, asyncio.TimeoutError
        ):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _classify(exc: BaseException, cfg: _Config | None = None) -> LLMError:
    """Turn whatever the SDK raised into one of our typed errors."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.NotFoundError) and cfg is not None:
        return Misconfigured(f"HTTP 404: {_error_text(exc)}{_address_hint(exc, cfg)}")
    if type(exc) is openai.OpenAIError:  # the SDK refused its settings before any request
        return Misconfigured(str(exc))
    if isinstance(exc, openai.APITimeoutError):
        refused = _connection_failure(exc)
        if refused is not None:  # aiohttp's transport reports a refused connection as a timeout
            return GaveUp(f"connection failed: {_error_text(refused)}")
        return TimedOut("no answer within the timeout")
    if isinstance(exc, openai.APIConnectionError):
        return GaveUp(f"connection failed: {_error_text(exc.__cause__ or exc)}")
    if isinstance(exc, openai.APIStatusError):
        status, text = exc.status_code, _error_text(exc)
        detail = f"HTTP {status}: {text}"
        if status == 429 and getattr(exc, "code", None) == "insufficient_quota":
            return Misconfigured(detail)  # out of credit: retrying cannot help
        if status in (408, 409, 429) or status >= 500:
            return GaveUp(detail, retry_after=_retry_after(exc))
        if getattr(exc, "code", None) == "content_filter":
            return Refused(detail)
        if status in (400, 413, 422):
            return Rejected(detail)
        return Misconfigured(detail)
    if isinstance(exc, (ValueError, openai.APIResponseValidationError)):
        # The server's answer was not the protocol (broken JSON body or stream event).
        return Malformed(f"unreadable response: {type(exc).__name__}", transient=True)
    return GaveUp(f"{type(exc).__name__}: {exc}")


# A path that already names an API version or an OpenAI-compatible layer (/v1, /v1beta/openai,
# /api/v2, /openai/v1): adding /v1 to it is not the fix.
_VERSIONED_PATH = re.compile(r"/(v\d[\w.-]*|openai)(/|$)", re.I)
GEMINI_HOST = "generativelanguage.googleapis.com"


def _address_hint(exc: openai.NotFoundError, cfg: _Config) -> str:
    """A hint when a 404 is about the address rather than the model: vLLM, Ollama and LM Studio
    serve the protocol under /v1 only, and answer a path outside it with a bare 404."""
    if "model" in _error_text(exc).lower() or cfg.provider == "azure":
        return ""
    parts = urlsplit(cfg.base_url)
    path = parts.path.rstrip("/")
    if parts.hostname == GEMINI_HOST:
        return f" (Gemini's OpenAI-compatible address is https://{GEMINI_HOST}/v1beta/openai)"
    if _VERSIONED_PATH.search(path + "/"):
        return f" (is {cfg.base_url} the server's OpenAI-compatible address?)"
    if not path:
        return f" (LLM_BASE_URL={cfg.base_url} may need to end in /v1)"
    root = f"{parts.scheme}://{parts.netloc}"
    return (
        f" (is {cfg.base_url} the server's OpenAI-compatible address? Most servers have it at "
        f"/v1, such as {root}/v1)"
    )


async def _pause(cfg: _Config, retries_done: int, error: LLMError) -> None:
    if error.retry_after is not None:
        if error.retry_after > MAX_RETRY_AFTER_S:
            raise GaveUp(f"server asked to wait {error.retry_after:.0f}s") from error
        delay = error.retry_after
    else:
        delay = cfg.backoff_s * (2**retries_done) * (0.5 + random.random() / 2)
    await asyncio.sleep(min(delay, MAX_BACKOFF_S))


def _reraise(error: LLMError, cause: BaseException) -> NoReturn:
    if error is cause:
        raise error
    raise error from cause


def _about_format(exc: openai.APIStatusError) -> bool:
    """Whether a 400 is about the structured-output request (not, say, an over-long prompt)."""
    if getattr(exc, "param", None) == "response_format":
        return True
    return bool(re.search(r"response_format|json|schema|format", _error_text(exc), re.I))


class _UsedUp(Malformed):
    """The token limit ran out before the reply began: a repair, under the same limit, would
    run it out again."""


class _FormatRejected(Exception):
    """The server refused a structured-output request: try a plainer format. `lasting`: it said
    so with a 400 (a 500 naming the format may be a passing fault, so it is asked again later)."""

    def __init__(self, detail: str, *, lasting: bool) -> None:
        super().__init__(detail)
        self.lasting = lasting


# Keyword arguments of `request()` that are the SDK's request options, not the JSON body.
_REQUEST_OPTIONS = {"timeout": "timeout", "extra_headers": "headers"}


async def _post(client: openai.AsyncOpenAI, kwargs: dict[str, Any], *, stream: bool) -> Any:
    """`chat.completions.create(**kwargs)`, through the SDK's public `post`: the same client
    (its auth, Azure's deployment paths, its HTTP errors and server-sent-event reading), but the
    body goes as we built it (plain JSON already) and the answer stays plain JSON. The typed call
    first re-walks every message against the SDK's TypedDicts (2.6 ms for a 13-message prompt on
    the bench machine, before the request leaves, so on every first token) and builds a pydantic
    object per streamed chunk (about 64 us each); see bench/README.md, session 6."""
    body = {k: v for k, v in kwargs.items() if k not in _REQUEST_OPTIONS}
    options = {_REQUEST_OPTIONS[k]: v for k, v in kwargs.items() if k in _REQUEST_OPTIONS}
    if not stream:
        return await client.post("/chat/completions", body=body, cast_to=object, options=options)
    return await client.post(
        "/chat/completions",
        body={**body, "stream": True},
        cast_to=object,
        options=options,
        stream=True,
        stream_cls=openai.AsyncStream[object],
    )


def _first_choice(reply: Any, part: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A completion's (or a streamed chunk's) first choice and its `part` ("message" or
    "delta"); (None, {}) when it has no choice. Anything not shaped as the protocol says is
    `Malformed` (retried while nothing has reached the caller)."""
    if not isinstance(reply, dict):
        raise Malformed(f"unreadable response: {type(reply).__name__}", transient=True)
    choices = reply.get("choices") or []
    if not isinstance(choices, list):
        raise Malformed("unreadable response: choices", transient=True)
    if not choices:
        if reply.get("error"):  # HTTP 200 with an error body, as some servers and proxies send
            error = reply["error"]
            words = error.get("message") if isinstance(error, dict) else error
            raise GaveUp(f"the server answered with an error: {words}")
        return None, {}
    choice = choices[0]
    inner = choice.get(part) if isinstance(choice, dict) else None
    if inner is None and isinstance(choice, dict):
        inner = {}
    if not isinstance(inner, dict):
        raise Malformed(f"unreadable response: {part}", transient=True)
    return choice, inner


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


async def _complete(run: _Run, kwargs: dict[str, Any]) -> str:
    """One non-streamed reply's text, with bounded retries on passing failures."""
    assert run.cfg is not None
    client = await _client(run.cfg)
    retries = 0
    while True:
        run.attempts += 1
        try:
            completion = await _post(client, kwargs, stream=False)
            choice, message = _first_choice(completion, "message")
            counted = run.add_usage(completion.get("usage"))
            if choice is None:
                raise Malformed("a reply with no choices", transient=True)
            run.finish_reason = _text(choice.get("finish_reason"))
            if _text(message.get("refusal")):
                raise Refused(f"refusal: {message['refusal']}")
            if run.finish_reason == "content_filter":
                raise Refused("stopped by the content filter")
            content = _text(message.get("content"))
            run.reasoned = bool(message.get("reasoning_content") or message.get("reasoning"))
            answer = _without_thinking(content)
            if answer is not content:
                if not content.lstrip().startswith(THINK_OPEN):
                    # The template opens the block: this model's streams (the partner's, if
                    # it plays the partner too) are held back from their first one.
                    _opened_by_template.add(run.key)
                run.reasoned, content = True, answer
            if not counted:
                run.estimate_usage(kwargs["messages"], content, completion.get("usage"))
            if not content.strip():
                if run.finish_reason == "length":
                    raise run.used_up(kwargs)
                raise Malformed("an empty reply", transient=True)
            return content
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            if run.learn_from_rejection(kwargs, exc):
                continue
            if getattr(exc, "code", None) == "content_filter":
                raise Refused(f"HTTP {exc.status_code}: {_error_text(exc)}") from exc
            if "response_format" in kwargs and _about_format(exc):
                raise _FormatRejected(_error_text(exc), lasting=True) from exc
            raise Rejected(f"HTTP {exc.status_code}: {_error_text(exc)}") from exc
        except openai.InternalServerError as exc:
            # Older llama-server answers a response format it lacks with a 500 naming it.
            if "response_format" in kwargs and "response_format" in _error_text(exc):
                raise _FormatRejected(_error_text(exc), lasting=False) from exc
            error = _classify(exc, run.cfg)
            if retries >= run.cfg.max_retries:
                _reraise(error, exc)
        except Exception as exc:
            error = _classify(exc, run.cfg)
            if not error.transient or retries >= run.cfg.max_retries:
                _reraise(error, exc)
        await _pause(run.cfg, retries, error)
        retries += 1
        run.retried = True


async def _stream_deltas(run: _Run, kwargs: dict[str, Any], parts: list[str]) -> AsyncIterator[str]:
    """Text deltas as they arrive; retries only while nothing has reached the caller."""
    assert run.cfg is not None
    client = await _client(run.cfg)
    retries = 0
    while True:
        run.attempts += 1
        run.finish_reason = ""
        usage: Any = None
        opened = run.key in _opened_by_template
        gate = _ThinkGate(opened=opened)
        try:
            stream = await _post(client, kwargs, stream=True)
            async with stream:
                async for chunk in stream:
                    choice, delta = _first_choice(chunk, "delta")
                    if chunk.get("usage"):
                        usage = chunk["usage"]  # running totals on some servers: keep the last
                    if choice is None:
                        continue
                    if _text(delta.get("refusal")):
                        raise Refused(f"refusal: {delta['refusal']}")
                    if _text(choice.get("finish_reason")):
                        run.finish_reason = choice["finish_reason"]
                    content = _text(delta.get("content"))
                    if content:
                        if not gate.passed:
                            content = gate.feed(content)
                            if not content:
                                continue
                        run.first_token()
                        parts.append(content)
                        yield content
                    elif not run.reasoned:
                        run.reasoned = bool(
                            delta.get("reasoning_content") or delta.get("reasoning")
                        )
            if opened and gate.unclosed:
                # No block this time: this model's replies stream token by token again until
                # one shows a `</think>` of its own.
                _opened_by_template.discard(run.key)
                run.reasoned = run.reasoned or run.finish_reason == "length"
            tail = gate.finish(cut=run.finish_reason == "length")
            if tail:
                run.first_token()
                parts.append(tail)
                yield tail
            run.reasoned = run.reasoned or gate.thought
            if not gate.thought and parts:
                _take_back_reasoning(run, parts)
            if run.finish_reason == "content_filter":
                raise Refused("stopped by the content filter", partial_text="".join(parts))
            if not run.finish_reason:
                raise GaveUp("the stream ended without a finish reason")
            if not parts:
                if run.finish_reason == "length":
                    raise run.used_up(kwargs)
                # Not retried once the caller has seen words (reasoning, taken back).
                raise Malformed("an empty reply", transient=not run.revised)
            if not run.add_usage(usage):
                run.estimate_usage(kwargs["messages"], "".join(parts), usage)
            return
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            if run.learn_from_rejection(kwargs, exc):
                continue
            raise _classify(exc) from exc
        except Exception as exc:
            if usage is not None:  # a failed attempt's tokens were spent all the same
                run.add_usage(usage)
            error = _classify(exc, run.cfg)
            if parts and not isinstance(error, Refused):
                raise StreamCut(str(error), partial_text="".join(parts)) from exc
            if not error.transient or retries >= run.cfg.max_retries:
                _reraise(error, exc)
        await _pause(run.cfg, retries, error)
        retries += 1
        run.retried = True


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# (Server, model) whose reply showed a `</think>` with no `<think>` before it: its chat template
# opens the block in the prompt, so its later streams are held back until the block closes
# (`_ThinkGate(opened=True)`). Learnt from a whole reply (a persona brief or rating, or a stream
# once it ended): finding it out mid-stream would mean looking at every token of every model's
# reply.
_opened_by_template: set[tuple[str, str]] = set()


def _take_back_reasoning(run: _Run, parts: list[str]) -> None:
    """At the end of a stream that went out token by token: if it was reasoning up to a
    `</think>` whose opening tag was in the prompt, keep only the words after it (`parts` then
    holds them alone, and the caller replaces what it showed) and hold this model's later streams
    back until their block closes. One search of the finished reply, never per token."""
    text = "".join(parts)
    if THINK_CLOSE not in text:
        return
    answer = _without_thinking(text)
    if answer is text:
        return  # the tags were only mentioned
    _opened_by_template.add(run.key)
    run.reasoned = run.revised = True
    run.params["reasoning_taken_back"] = len(text) - len(answer)
    parts[:] = [answer] if answer else []


def _without_thinking(text: str) -> str:
    """A whole reply without the reasoning some servers leave in the content (`text` itself when
    there is none): a leading `<think>...</think>` block (Qwen3, DeepSeek-R1 on llama.cpp or
    Ollama), or everything up to a `</think>` whose opening tag was in the prompt's template; an
    unclosed block is all reasoning. A reply that only mentions the tags is left whole."""
    start = text.lstrip()
    if start.startswith(THINK_OPEN):
        _, closed, after = start.partition(THINK_CLOSE)
        return after.lstrip() if closed else ""
    before, closed, after = text.partition(THINK_CLOSE)
    if closed and THINK_OPEN not in before:
        return after.lstrip()
    return text


class _ThinkGate:
    """Holds a streamed reply back while it opens with a `<think>` block, and lets the words
    after the block through. Once the reply is shown to have no such block, or the block has
    ended, `passed` is True and the caller stops feeding it: nothing more per token. Inside a
    block it keeps only what could be the start of a split `</think>`, never the reasoning
    itself: kept whole and searched again on every token, a trace of 8,000 tokens cost 72 ms of
    the event loop that streams every learner's reply.

    `opened`: the model's chat template opens the block in the prompt (DeepSeek-R1 and its
    distillations), so the reply starts inside it and only its `</think>` shows where the words
    begin. Everything is held until then; should the stream end without one, the reply had no
    reasoning after all and `finish` gives it whole (kept as a list, never searched again)."""

    __slots__ = ("_held", "_inside", "_kept", "passed", "thought")

    def __init__(self, *, opened: bool = False) -> None:
        self._held = ""
        self._inside = opened
        self._kept: list[str] | None = [] if opened else None
        self.passed = False
        self.thought = False

    @property
    def unclosed(self) -> bool:
        """An `opened` gate whose block never closed (so far)."""
        return self._kept is not None

    def feed(self, text: str) -> str:
        """The part of `text` (with what was held back) that is the reply's own words."""
        if self.passed:
            return text
        if self._kept is not None:
            self._kept.append(text)
        held = self._held + text
        while True:
            if self._inside:
                reasoning, closed, held = held.partition(THINK_CLOSE)
                if not closed:
                    self._held = reasoning[1 - len(THINK_CLOSE) :]
                    return ""
                self._inside, self._kept = False, None  # the whitespace after it goes with it
                self.thought = True
            start = held.lstrip()
            if start.startswith(THINK_OPEN):
                self.thought = self._inside = True
                held = start[len(THINK_OPEN) :]
                continue
            if not start or (not self.thought and THINK_OPEN.startswith(start)):
                self._held = held  # blank so far, or perhaps the start of "<think>"
                return ""
            self.passed, self._held = True, ""
            return start if self.thought else held

    def finish(self, *, cut: bool = False) -> str:
        """What was held back when the stream ended: text that only looked like a tag's start,
        or an `opened` gate's whole reply when no block closed. An unclosed block is reasoning,
        never shown: a `<think>` one always, an `opened` one when the stream was `cut` at the
        token limit (the reasoning ran out of room)."""
        held, self._held = self._held, ""
        if self._kept is not None:
            kept, self._kept = "".join(self._kept), None
            return "" if cut else kept.strip()
        return "" if self.passed or self.thought else held


# --- public calls -----------------------------------------------------------------------------


class TextStream:
    """A streamed reply. Use it as `async with stream_text(...) as s: async for delta in s`.

    After the loop, `text` holds the whole reply and `call_id` its `LLMCall` row. Errors are typed
    (`LLMError`); before the first token they come after the retries, after it as `StreamCut`.
    Leaving the `async with` early records the call as cut ("stopped by the caller").
    """

    def __init__(
        self, *, purpose: str, messages: Sequence[Message], prompt: Prompt, context: CallContext
    ) -> None:
        self._run = _Run(purpose=purpose, prompt=prompt, context=context, stream=True)
        self._messages = list(messages)
        self._parts: list[str] = []
        self._generator: AsyncIterator[str] | None = None
        self.call_id: int | None = None
        self.outcome: str | None = None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def ttft_ms(self) -> float | None:
        return self._run.ttft_ms

    @property
    def revised(self) -> bool:
        """Whether `text` differs from the deltas streamed: the model's reasoning, which only
        its closing `</think>` at the end showed, was taken out. What was shown of it must be
        replaced by `text`."""
        return self._run.revised

    @property
    def finish_reason(self) -> str:
        """The server's finish reason ("stop"; "length" when the token limit cut the reply)."""
        return self._run.finish_reason

    async def add_to_record(self, **params: Any) -> None:
        """Add what the caller made of the finished reply to its `LLMCall` row's `params` (one
        write; for the rare reply that needs it, such as one cut by the token limit)."""
        self._run.params.update(params)
        if self.call_id is None:
            return
        try:
            await LLMCall.objects.filter(pk=self.call_id).aupdate(params=self._run.record_params())
        except Exception:
            log.exception("could not add %s to the record of call %s", sorted(params), self.call_id)

    def __aiter__(self) -> AsyncIterator[str]:
        if self._generator is None:
            self._generator = self._deltas()
        return self._generator

    async def __aenter__(self) -> TextStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._generator is not None:
            await self._generator.aclose()  # type: ignore[attr-defined]

    async def _deltas(self) -> AsyncIterator[str]:
        run, outcome, failure = self._run, "", None
        try:
            run.configure()
            kwargs = run.request(self._messages)
            async with contextlib.aclosing(_stream_deltas(run, kwargs, self._parts)) as deltas:
                async for delta in deltas:
                    yield delta
            outcome = run.success_outcome()
        except Exception as exc:
            failure = _classify(exc)
            failure.partial_text = failure.partial_text or self.text
            outcome = failure.outcome
            if failure is exc:
                raise
            raise failure from exc
        finally:
            error_text = str(failure) if failure else ""
            if not outcome:  # the caller stopped reading, or its task was cancelled
                outcome, error_text = Outcome.CUT, "stopped by the caller"
            self.outcome = outcome
            self.call_id = await run.record(outcome, error_text, failure)
            if failure is not None:
                failure.call_id = self.call_id


def stream_text(
    *, purpose: str, messages: Sequence[Message], prompt: Prompt, context: CallContext | None = None
) -> TextStream:
    """Stream a text reply for `purpose`, delta by delta (see `TextStream`)."""
    return TextStream(
        purpose=purpose, messages=messages, prompt=prompt, context=context or CallContext()
    )


async def complete_text(
    *, purpose: str, messages: Sequence[Message], prompt: Prompt, context: CallContext | None = None
) -> Reply:
    """A whole text reply for `purpose`, once it is complete."""
    run = _Run(purpose=purpose, prompt=prompt, context=context or CallContext(), stream=False)
    try:
        run.configure()
        await _release_callers_connections()
        text = await _complete(run, run.request(messages))
    except Exception as exc:
        error = _classify(exc)
        error.call_id = await run.record(error.outcome, str(error), error)
        if error is exc:
            raise
        raise error from exc
    except BaseException:
        await run.record(Outcome.CUT, "cancelled by the caller")
        raise
    outcome = run.success_outcome()
    call_id = await run.record(outcome)
    return Reply(text=text, call_id=call_id, outcome=outcome, model=run.model)


async def complete_json(
    *,
    purpose: str,
    messages: Sequence[Message],
    schema: Mapping[str, Any],
    schema_name: str,
    prompt: Prompt,
    context: CallContext | None = None,
    validate: Callable[[Any], None] | None = None,
) -> Reply:
    """A JSON reply valid against `schema` (and `validate`, which raises ValueError), as `.data`.

    Asks with the json_schema response format, falling back to JSON mode and then to the schema in
    the prompt where the server rejects it; an invalid reply gets one repair attempt (the problem is
    sent back), then `Malformed`. Schemas should follow the strict structured-output rules: every
    property listed in `required`, `additionalProperties: false`.
    """
    run = _Run(purpose=purpose, prompt=prompt, context=context or CallContext(), stream=False)
    try:
        run.configure()
        await _release_callers_connections()
        run.params["schema_name"] = schema_name
        run.params["gateway_text_version"] = GATEWAY_TEXT_VERSION
        data, text = await _json_conversation(run, list(messages), schema, schema_name, validate)
    except Exception as exc:
        error = _classify(exc)
        error.call_id = await run.record(error.outcome, str(error), error)
        if error is exc:
            raise
        raise error from exc
    except BaseException:
        await run.record(Outcome.CUT, "cancelled by the caller")
        raise
    outcome = run.success_outcome()
    call_id = await run.record(outcome)
    return Reply(text=text, data=data, call_id=call_id, outcome=outcome, model=run.model)


async def _json_conversation(
    run: _Run,
    messages: list[dict[str, Any]] | list[Message],
    schema: Mapping[str, Any],
    schema_name: str,
    validate: Callable[[Any], None] | None,
) -> tuple[Any, str]:
    conversation: list[Message] = list(messages)
    while True:
        run.response_format = _format_for(run.key)
        kwargs = run.request(_with_json_instruction(conversation, run.response_format, schema))
        if run.response_format == Format.JSON_SCHEMA:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": dict(schema), "strict": True},
            }
        elif run.response_format == Format.JSON_OBJECT:
            kwargs["response_format"] = {"type": "json_object"}
        try:
            text = await _complete(run, kwargs)
        except _FormatRejected as rejected:
            _give_up_format(run, str(rejected), lasting=rejected.lasting)
            continue
        except _UsedUp:
            raise
        except Malformed as error:
            # An empty or unreadable reply, even after retries: the repair may still rescue it.
            text, problem = "", error.detail
        else:
            problem = _problem_with(text, schema, validate)
            if problem is None:
                if run.key in _formats:  # asked again after a while, and taken: evidence gone
                    _formats[run.key].pop(run.response_format, None)
                return parse_json_reply(text), text
            if run.response_format == Format.JSON_SCHEMA and text.strip() and "{" not in text:
                # Prose with no object at all, which no constrained decoder writes: the server
                # ignored the format without a word (older Ollama and others), and the prompt
                # alone never showed the schema, so a repair could not help either.
                _give_up_format(run, "answered in prose", lasting=False)
                continue
        if run.repaired:
            raise Malformed(f"still unusable after one repair: {problem}")
        run.repaired = True
        conversation = [
            *messages,
            {"role": "assistant", "content": text or "(empty reply)"},
            {"role": "user", "content": REPAIR_NOTE.format(problem=problem)},
        ]


def _give_up_format(run: _Run, why: str, *, lasting: bool) -> None:
    """This call asks again in the next plainer format; later calls do too, for good or for a
    while (`_ban_format`)."""
    fmt = run.response_format
    wait = _ban_format(run.key, fmt, lasting=lasting)
    plainer = _FORMAT_ORDER[_FORMAT_ORDER.index(Format(fmt)) + 1]
    run.params.setdefault("formats_given_up", []).append(fmt)
    log.warning(
        "%s did not take %s (%s); asking for %s %s",
        run.cfg.host if run.cfg else "?", fmt, why, plainer,
        "from now on" if wait is None else f"for the next {wait / 60:.0f} minutes",
    )  # fmt: skip


def _problem_with(
    text: str, schema: Mapping[str, Any], validate: Callable[[Any], None] | None
) -> str | None:
    """Why a structured reply cannot be used, in words the model can act on; None if it can."""
    try:
        data = parse_json_reply(text)
    except ValueError as exc:
        return str(exc)
    errors = schema_errors(data, schema)
    if errors:
        return "; ".join(errors[:5])
    if validate is not None:
        try:
            validate(data)
        except ValueError as exc:
            return str(exc) or "the reply failed validation"
        except Exception as exc:  # a caller's check that trips over odd data still means "invalid"
            return f"the reply failed validation ({type(exc).__name__}: {exc})"
    return None


# The gateway's own words to the model; their version goes into the record of JSON calls.
GATEWAY_TEXT_VERSION = "1"
REPAIR_NOTE = (
    "Your last reply could not be used: {problem}. Answer again with only the corrected JSON "
    "object, matching the required schema, and no other text."
)
JSON_INSTRUCTION = (
    "Answer with one JSON object and no other text. It must be valid against this JSON schema:\n"
)


def _with_json_instruction(
    messages: Sequence[Message], response_format: str, schema: Mapping[str, Any]
) -> list[Message]:
    """The messages, with the schema spelled out in the system prompt when the server cannot
    take it as a response format (some chat templates allow only one, leading system message)."""
    if response_format == Format.JSON_SCHEMA:
        return list(messages)
    instruction = JSON_INSTRUCTION + json.dumps(schema, ensure_ascii=False)
    result = [dict(m) for m in messages]
    if result and result[0].get("role") == "system" and isinstance(result[0].get("content"), str):
        result[0]["content"] = f"{result[0]['content']}\n\n{instruction}"
    else:
        result.insert(0, {"role": "system", "content": instruction})
    return result


# --- JSON parsing and validation ----------------------------------------------------------------


def parse_json_reply(text: str) -> Any:
    """The JSON value in a reply: the whole text, else the first JSON object found in it."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    start = stripped.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(stripped, start)
            return value
        except ValueError:
            start = stripped.find("{", start + 1)
    raise ValueError("the reply contains no complete JSON object")


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def schema_errors(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, path: str = "$"
) -> list[str]:
    """What makes `value` invalid against `schema` (empty when valid).

    Covers the JSON-schema subset that structured outputs use: type, enum, const, properties,
    required, additionalProperties, items, min/maxItems, min/maxLength, pattern, minimum/maximum,
    anyOf/oneOf/allOf and local `$ref`s.
    """
    root = root if root is not None else schema
    while "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target[part]
        schema = target
    errors: list[str] = []
    for key in ("anyOf", "oneOf"):
        if key in schema and all(schema_errors(value, s, root, path) for s in schema[key]):
            errors.append(f"{path} matches none of the allowed shapes")
    for sub in schema.get("allOf", []):
        errors += schema_errors(value, sub, root, path)
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path} must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path} must be one of {', '.join(map(repr, schema['enum']))}")
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_TYPES.get(name, lambda v: True)(value) for name in names):
            return [*errors, f"{path} must be of type {' or '.join(names)}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path} is missing {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                errors += schema_errors(item, props[name], root, f"{path}.{name}")
            elif extra is False:
                errors.append(f"{path} has an unexpected key {name!r}")
            elif isinstance(extra, Mapping):
                errors += schema_errors(item, extra, root, f"{path}.{name}")
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path} needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path} allows at most {schema['maxItems']} items")
        if isinstance(schema.get("items"), Mapping):
            for index, item in enumerate(value):
                errors += schema_errors(item, schema["items"], root, f"{path}[{index}]")
    elif isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path} is shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path} is longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path} does not match {schema['pattern']!r}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path} must be at most {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path} must be more than {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            errors.append(f"{path} must be less than {schema['exclusiveMaximum']}")
    return errors


# --- for synchronous callers (Celery tasks, management commands) -------------------------------
#
# async_to_sync would start a fresh event loop per call, and with it a fresh client and TLS
# context and new connections (measured: about 22 ms per call). Sync callers instead run the
# network part on one long-lived loop per process, in a background thread, where the client and
# its connection pool live on; everything that touches the database (reading the settings, the
# `LLMCall` row) stays in the caller's thread, so the row joins the caller's transaction.

_sync_loop: asyncio.AbstractEventLoop | None = None
_sync_loop_pid = 0
_sync_loop_lock = threading.Lock()


def _shared_loop() -> asyncio.AbstractEventLoop:
    global _sync_loop, _sync_loop_pid
    with _sync_loop_lock:
        # A forked child (a prefork Celery pool) inherits the object but not the thread.
        if _sync_loop is None or _sync_loop.is_closed() or _sync_loop_pid != os.getpid():
            _sync_loop = asyncio.new_event_loop()
            _sync_loop_pid = os.getpid()
            threading.Thread(target=_sync_loop.run_forever, name="llm-gateway", daemon=True).start()
        return _sync_loop


def _on_shared_loop(coroutine: Any) -> Any:
    """Run `coroutine` on the shared loop and wait for its result in this thread."""
    future = asyncio.run_coroutine_threadsafe(coroutine, _shared_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # this thread was interrupted: stop the call too
        raise


def _release_database_connections() -> None:
    """Hand this thread's pooled database connections back while it waits for the model (a
    feedback task or a persona call would otherwise hold one for the whole call, and a few dozen
    such waits empty the pool). Never inside a transaction, and only when a pool takes them back:
    without one, closing would cost a fresh connection afterwards."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        pooled = (connection.settings_dict.get("OPTIONS") or {}).get("pool")
        if pooled and not connection.in_atomic_block and connection.connection is not None:
            connection.close()


async def _release_callers_connections() -> None:
    """`_release_database_connections` in the thread that holds the caller's connection: a sync
    caller through async_to_sync (a view writing a partner's brief), or a socket's database
    thread. Whole replies only: a streamed reply's first token must not wait for the hop."""
    await sync_to_async(_release_database_connections)()


def _finish_sync(run: _Run, call: Callable[[], Any]) -> tuple[Any, str, int | None]:
    """Run the network part of a call on the shared loop; record it here, as the async calls do."""
    try:
        run.configure()
        _release_database_connections()
        result = _on_shared_loop(call())
    except Exception as exc:
        error = _classify(exc)
        error.call_id = run.record_sync(error.outcome, str(error), error)
        if error is exc:
            raise
        raise error from exc
    except BaseException:
        run.record_sync(Outcome.CUT, "cancelled by the caller")
        raise
    outcome = run.success_outcome()
    return result, outcome, run.record_sync(outcome)


def complete_text_sync(
    *, purpose: str, messages: Sequence[Message], prompt: Prompt, context: CallContext | None = None
) -> Reply:
    """`complete_text` for synchronous code such as Celery tasks."""
    run = _Run(purpose=purpose, prompt=prompt, context=context or CallContext(), stream=False)
    text, outcome, call_id = _finish_sync(run, lambda: _complete(run, run.request(messages)))
    return Reply(text=text, call_id=call_id, outcome=outcome, model=run.model)


def complete_json_sync(
    *,
    purpose: str,
    messages: Sequence[Message],
    schema: Mapping[str, Any],
    schema_name: str,
    prompt: Prompt,
    context: CallContext | None = None,
    validate: Callable[[Any], None] | None = None,
) -> Reply:
    """`complete_json` for synchronous code such as Celery tasks (`validate` then runs in the
    gateway's thread: it must not touch the database)."""
    run = _Run(purpose=purpose, prompt=prompt, context=context or CallContext(), stream=False)

    def call() -> Any:
        run.params["schema_name"] = schema_name
        run.params["gateway_text_version"] = GATEWAY_TEXT_VERSION
        return _json_conversation(run, list(messages), schema, schema_name, validate)

    (data, text), outcome, call_id = _finish_sync(run, call)
    return Reply(text=text, data=data, call_id=call_id, outcome=outcome, model=run.model)
