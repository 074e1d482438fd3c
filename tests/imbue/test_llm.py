"""The gateway, driven through the real openai SDK against the fake server over HTTP."""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import openai
import pytest
from asgiref.sync import async_to_sync

from imbue import llm
from imbue.models import LLMCall
from tests.fakes.llm_server import FakeServer, fake_reply, reply_deltas, start_fake_server

T = TypeVar("T")

PROMPT = llm.Prompt(
    name="test.partner", version="3", template="You play {who}. Be hard to convince."
)
CONTEXT = llm.CallContext(conversation_id=41, message_id=42, draft_id=43)
MESSAGES = [
    {"role": "system", "content": PROMPT.render(who="my flatmate")},
    {"role": "user", "content": "Could you please do the dishes on weekdays from now on?"},
]
RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "level": {"type": "string", "enum": ["strong", "weak", "none"]},
        "suggestion": {"type": "string"},
        "examples": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["level", "suggestion", "examples"],
    "additionalProperties": False,
}


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run async gateway code from a sync test, so the ORM shares the test's transaction."""
    return async_to_sync(make)()


def stream(messages: list[dict[str, str]] = MESSAGES, stop_after: int | None = None) -> Any:
    async def go() -> tuple[list[str], llm.TextStream]:
        deltas: list[str] = []
        async with llm.stream_text(
            purpose="partner", messages=messages, prompt=PROMPT, context=CONTEXT
        ) as reply:
            async for delta in reply:
                deltas.append(delta)
                if stop_after is not None and len(deltas) >= stop_after:
                    break
        return deltas, reply

    return run(go)


def complete_text() -> llm.Reply:
    return llm.complete_text_sync(
        purpose="partner", messages=MESSAGES, prompt=PROMPT, context=CONTEXT
    )


def complete_json(**kwargs: Any) -> llm.Reply:
    return llm.complete_json_sync(
        purpose="feedback",
        messages=MESSAGES,
        schema=RATING_SCHEMA,
        schema_name="rating",
        prompt=PROMPT,
        context=CONTEXT,
        **kwargs,
    )


def last_call() -> LLMCall:
    return LLMCall.objects.latest("id")


@pytest.fixture
def quick(fake_llm: FakeServer, settings: Any) -> FakeServer:
    """The fake with a short timeout, two retries and almost no backoff."""
    settings.LLM = {**settings.LLM, "timeout_s": 0.5, "max_retries": 2, "backoff_s": 0.001}
    return fake_llm


# --- no model ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_a_model_calls_raise_not_configured_and_the_pages_say_so(no_llm: None) -> None:
    assert not llm.is_configured()
    assert llm.status_label().startswith("No language model is connected")
    before = LLMCall.objects.order_by("-id").values_list("id", flat=True).first() or 0
    with pytest.raises(llm.NotConfigured) as raised:
        complete_text()
    assert raised.value.user_message == "No language model is connected."
    assert not raised.value.retryable
    with pytest.raises(llm.NotConfigured):
        stream()
    calls = list(LLMCall.objects.filter(id__gt=before).order_by("id"))
    assert [c.outcome for c in calls] == ["not_configured", "not_configured"]
    assert calls[0].model == "" and calls[0].host == "" and calls[0].prompt_hash == PROMPT.hash


@pytest.mark.django_db
def test_status_label_names_the_partner_model(fake_llm: FakeServer) -> None:
    assert llm.is_configured()
    assert llm.status_label() == "A language model is connected (gpt-4o-mini)."


def test_prompt_hash_is_stable_and_changes_with_the_words() -> None:
    same = llm.Prompt(name="other", version="9", template=PROMPT.template)
    changed = llm.Prompt(name="test.partner", version="3", template=PROMPT.template + " ")
    assert same.hash == PROMPT.hash and len(PROMPT.hash) == 64
    assert changed.hash != PROMPT.hash


def test_unknown_purpose_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        llm.stream_text(purpose="poetry", messages=MESSAGES, prompt=PROMPT)


# --- streaming --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_stream_yields_the_deltas_in_order_and_records_the_call(fake_llm: FakeServer) -> None:
    fake_llm.configure(ttft_ms=60)
    deltas, reply = stream()
    expected, _ = reply_deltas(MESSAGES)
    assert deltas == expected
    assert reply.text == fake_reply(MESSAGES) and reply.outcome == "ok"
    call = LLMCall.objects.get(pk=reply.call_id)
    assert call.purpose == "partner" and call.model == "gpt-4o-mini" and call.stream
    assert call.provider == "openai" and call.host == fake_llm.root_url.removeprefix("http://")
    assert (call.prompt_name, call.prompt_version, call.prompt_hash) == (
        "test.partner",
        "3",
        PROMPT.hash,
    )
    assert (call.conversation_id, call.message_id, call.draft_id) == (41, 42, 43)
    assert call.outcome == "ok" and call.attempts == 1 and call.retries == 0
    assert call.finish_reason == "stop" and call.error == "" and call.response_format == "text"
    words_in = sum(3 + len(m["content"].split()) for m in MESSAGES)
    assert call.tokens_out == 11 and call.tokens_in == words_in
    assert 60 <= call.ttft_ms <= call.total_ms
    assert call.params["temperature"] == 0.8 and call.params["max_tokens"] == 400
    sent = fake_llm.requests()[0]
    assert sent["purpose"] == "partner" and sent["body"]["stream_options"] == {
        "include_usage": True
    }
    assert sent["body"]["temperature"] == 0.8 and sent["body"]["max_tokens"] == 400
    assert sent["headers"]["authorization"] == "Bearer test-key"


@pytest.mark.django_db
def test_first_token_reaches_the_caller_before_the_stream_ends(fake_llm: FakeServer) -> None:
    fake_llm.configure(ttft_ms=20, tokens_per_s=50)

    async def go() -> tuple[float, float]:
        started = time.perf_counter()
        first = 0.0
        async with llm.stream_text(purpose="partner", messages=MESSAGES, prompt=PROMPT) as reply:
            async for _ in reply:
                first = first or time.perf_counter() - started
        return first, time.perf_counter() - started

    first, total = run(go)
    assert first >= 0.02 and total - first >= 0.15  # 10 more tokens at 50/s come after the first


@pytest.mark.django_db
def test_stopping_early_records_the_call_as_cut_by_the_caller(fake_llm: FakeServer) -> None:
    deltas, reply = stream(stop_after=2)
    assert len(deltas) == 2
    call = LLMCall.objects.get(pk=reply.call_id)
    assert call.outcome == "cut" and call.error == "stopped by the caller"


@pytest.mark.django_db
def test_cut_mid_stream_raises_stream_cut_with_the_partial_text(quick: FakeServer) -> None:
    quick.faults(["cut"])
    with pytest.raises(llm.StreamCut) as raised:
        stream()
    assert raised.value.partial_text == "".join(reply_deltas(MESSAGES)[0][:5])
    assert raised.value.retryable
    assert len(quick.requests()) == 1  # tokens had reached the caller: no silent retry
    call = LLMCall.objects.get(pk=raised.value.call_id)
    assert call.outcome == "cut" and call.attempts == 1 and call.ttft_ms is not None


@pytest.mark.django_db
def test_stream_retries_a_500_before_the_first_token(quick: FakeServer) -> None:
    quick.faults(["500"])
    deltas, reply = stream()
    assert "".join(deltas) == fake_reply(MESSAGES) and reply.outcome == "retried_ok"
    assert last_call().attempts == 2


@pytest.mark.django_db
def test_stream_retries_an_empty_reply(quick: FakeServer) -> None:
    quick.faults(["empty"])
    deltas, reply = stream()
    assert "".join(deltas) == fake_reply(MESSAGES) and reply.outcome == "retried_ok"


@pytest.mark.django_db
def test_stream_refusal_is_not_retried(quick: FakeServer) -> None:
    quick.faults(["content_filter"])
    with pytest.raises(llm.Refused) as raised:
        stream()
    assert not raised.value.retryable and len(quick.requests()) == 1
    assert last_call().outcome == "refused"


# --- retries, timeouts, errors -----------------------------------------------------------------


@pytest.mark.django_db
def test_429_waits_as_long_as_retry_after_then_succeeds(quick: FakeServer) -> None:
    quick.faults([{"kind": "429", "retry_after": 0.3}])
    started = time.perf_counter()
    reply = complete_text()
    assert time.perf_counter() - started >= 0.3
    assert reply.text == fake_reply(MESSAGES) and reply.outcome == "retried_ok"
    call = LLMCall.objects.get(pk=reply.call_id)
    assert call.attempts == 2 and call.stream is False and call.ttft_ms is None


@pytest.mark.django_db
def test_gives_up_after_the_configured_retries(quick: FakeServer) -> None:
    quick.faults(["500", "503", "500", "500"])
    with pytest.raises(llm.GaveUp) as raised:
        complete_text()
    assert raised.value.retryable and "try again" in raised.value.user_message
    assert len(quick.requests()) == 3  # the first try and max_retries=2
    call = LLMCall.objects.get(pk=raised.value.call_id)
    assert call.outcome == "gave_up" and call.attempts == 3 and "HTTP 500" in call.error


@pytest.mark.django_db
def test_a_hanging_server_times_out(quick: FakeServer, settings: Any) -> None:
    settings.LLM = {**settings.LLM, "max_retries": 1}
    quick.faults(["hang", "hang"])
    started = time.perf_counter()
    with pytest.raises(llm.TimedOut) as raised:
        complete_text()
    assert 1.0 <= time.perf_counter() - started < 3
    assert raised.value.retryable and raised.value.outcome == "timeout"
    assert last_call().outcome == "timeout" and last_call().attempts == 2


@pytest.mark.django_db
def test_empty_and_unreadable_replies_are_retried(quick: FakeServer) -> None:
    quick.faults(["empty", "bad_body"])
    reply = complete_text()
    assert reply.text == fake_reply(MESSAGES) and last_call().attempts == 3


@pytest.mark.django_db
def test_answers_shaped_against_the_protocol_are_retried_as_malformed(quick: FakeServer) -> None:
    """Valid JSON that is not a completion (`choices` not a list, a message that is text): the
    gateway reads plain JSON, so it checks the shape itself."""
    quick.faults(["bad_shape"])
    deltas, reply = stream()
    assert "".join(deltas) == fake_reply(MESSAGES) and reply.outcome == "retried_ok"
    quick.faults(["bad_shape", "bad_shape", "bad_shape"])
    with pytest.raises(llm.Malformed):
        complete_text()
    assert last_call().attempts == 3 and last_call().outcome == "malformed"


@pytest.mark.django_db
def test_the_body_goes_as_built_and_the_answer_is_read_as_the_protocol_says(
    fake_llm: FakeServer,
) -> None:
    """The gateway posts its own JSON body (no SDK rewrite) and reads usage, finish reason and
    text from plain JSON, streamed or whole."""
    stream()
    complete_text()
    streamed, whole = fake_llm.requests()
    assert streamed["body"] == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "temperature": 0.8,
        "max_tokens": 400,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert whole["body"] == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "temperature": 0.8,
        "max_tokens": 400,
    }
    assert whole["headers"]["x-imbue-purpose"] == "partner"
    call = last_call()
    words_in = sum(3 + len(m["content"].split()) for m in MESSAGES)
    assert (call.tokens_in, call.tokens_out) == (words_in, 11)
    assert call.finish_reason == "stop" and not call.stream


@pytest.mark.parametrize(
    "reply",
    [None, "text", [], {"choices": "x"}, {"choices": [{"delta": "x"}]}, {"choices": [7]}],
)
def test_a_reply_not_shaped_as_the_protocol_is_malformed(reply: Any) -> None:
    with pytest.raises(llm.Malformed):
        llm._first_choice(reply, "delta")


def test_a_reply_with_no_choice_or_no_delta_is_read_as_empty() -> None:
    assert llm._first_choice({"choices": [], "usage": {}}, "delta") == (None, {})
    assert llm._first_choice({}, "delta") == (None, {})
    choice = {"index": 0, "delta": None, "finish_reason": "stop"}
    assert llm._first_choice({"choices": [choice]}, "delta") == (choice, {})


def test_usage_counts_only_token_numbers() -> None:
    run_ = llm._Run(purpose="partner", prompt=PROMPT, context=CONTEXT, stream=True)
    for usage in (None, "x", {"prompt_tokens": None}, {"prompt_tokens": "3"}):
        run_.add_usage(usage)
    assert (run_.tokens_in, run_.tokens_out) == (None, None)
    run_.add_usage({"prompt_tokens": 5, "completion_tokens": 2})
    run_.add_usage({"completion_tokens": 3})
    assert (run_.tokens_in, run_.tokens_out) == (5, 5)


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_credentials_and_model_errors_are_misconfiguration_and_not_retried(
    quick: FakeServer, status: str
) -> None:
    quick.faults([status])
    with pytest.raises(llm.Misconfigured) as raised:
        complete_text()
    assert not raised.value.retryable and len(quick.requests()) == 1
    assert last_call().outcome == "misconfigured"


@pytest.mark.django_db
def test_an_exhausted_quota_is_not_retried(quick: FakeServer) -> None:
    quick.faults([{"kind": "429", "code": "insufficient_quota", "retry_after": 0}])
    with pytest.raises(llm.Misconfigured):
        complete_text()
    assert len(quick.requests()) == 1


@pytest.mark.django_db
def test_refusal_is_typed_and_not_retried(quick: FakeServer) -> None:
    quick.faults(["refuse"])
    with pytest.raises(llm.Refused):
        complete_text()
    assert len(quick.requests()) == 1 and last_call().outcome == "refused"


@pytest.mark.django_db
def test_error_text_in_the_record_carries_no_key(quick: FakeServer) -> None:
    quick.faults(
        [{"kind": "401", "message": "Incorrect API key provided: test-key. Or sk-abcdef123456"}]
    )
    with pytest.raises(llm.Misconfigured):
        complete_text()
    error = last_call().error
    assert "test-key" not in error and "sk-abcdef" not in error and "Incorrect API key" in error


@pytest.mark.django_db
def test_a_model_that_wants_max_completion_tokens_gets_it(quick: FakeServer) -> None:
    message = "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead."
    quick.faults([{"kind": "400", "message": message}])
    complete_text()
    complete_text()
    first, second, third = (r["body"] for r in quick.requests())
    assert "max_tokens" in first and second["max_completion_tokens"] == 400
    assert "max_tokens" not in third  # remembered for this server and model
    assert last_call().params["adapted_to_server"] == ["max_tokens"]


@pytest.mark.django_db
def test_a_400_unrelated_to_the_format_does_not_downgrade_it(quick: FakeServer) -> None:
    quick.faults([{"kind": "400", "message": "This model's maximum context length is 8192."}])
    with pytest.raises(llm.Misconfigured):
        complete_json()
    complete_json()
    assert quick.requests()[-1]["body"]["response_format"]["type"] == "json_schema"


# --- structured output ------------------------------------------------------------------------


@pytest.mark.django_db
def test_structured_reply_is_schema_valid_and_asked_with_json_schema(fake_llm: FakeServer) -> None:
    reply = complete_json()
    assert llm.schema_errors(reply.data, RATING_SCHEMA) == [] and reply.outcome == "ok"
    sent = fake_llm.requests()[0]["body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == RATING_SCHEMA
    call = last_call()
    assert call.response_format == "json_schema" and call.purpose == "feedback"
    assert call.params["temperature"] == 0.0 and call.params["max_tokens"] == 1800
    assert call.params["schema_name"] == "rating"


@pytest.mark.django_db
def test_without_json_schema_support_it_falls_back_to_json_mode_and_remembers(
    fake_llm: FakeServer,
) -> None:
    fake_llm.configure(json_schema=False)
    reply = complete_json()
    assert llm.schema_errors(reply.data, RATING_SCHEMA) == []
    rejected, accepted = fake_llm.requests()
    assert rejected["status"] == 400
    assert accepted["body"]["response_format"] == {"type": "json_object"}
    assert '"enum": ["strong", "weak", "none"]' in accepted["body"]["messages"][0]["content"]
    assert last_call().response_format == "json_object" and last_call().outcome == "ok"
    complete_json()
    assert len(fake_llm.requests()) == 3  # straight to JSON mode the second time


@pytest.mark.django_db
def test_without_any_json_mode_it_parses_json_out_of_plain_text(fake_llm: FakeServer) -> None:
    fake_llm.configure(json_schema=False, json_object=False)
    reply = complete_json()
    assert reply.text.startswith("Here is the JSON")
    assert llm.schema_errors(reply.data, RATING_SCHEMA) == []
    assert "response_format" not in fake_llm.requests()[-1]["body"]
    assert last_call().response_format == "json_in_prompt"


@pytest.mark.django_db
def test_malformed_json_gets_one_repair_then_succeeds(quick: FakeServer) -> None:
    quick.faults(["malformed"])
    reply = complete_json()
    assert llm.schema_errors(reply.data, RATING_SCHEMA) == [] and reply.outcome == "repaired"
    repair = quick.requests()[1]["body"]["messages"]
    assert repair[-2]["role"] == "assistant"
    assert repair[-2]["content"].startswith("Here is the result: {")
    assert repair[-1]["role"] == "user" and "could not be used" in repair[-1]["content"]
    assert last_call().outcome == "repaired" and last_call().attempts == 2


@pytest.mark.django_db
def test_schema_violation_twice_raises_malformed(quick: FakeServer) -> None:
    quick.faults(["schema_violation", "schema_violation"])
    with pytest.raises(llm.Malformed) as raised:
        complete_json()
    assert "missing 'level'" in str(raised.value) and not raised.value.retryable
    assert len(quick.requests()) == 2
    call = LLMCall.objects.get(pk=raised.value.call_id)
    assert call.outcome == "malformed" and call.attempts == 2


@pytest.mark.django_db
def test_empty_structured_reply_is_retried_before_any_repair(quick: FakeServer) -> None:
    quick.faults(["empty"])
    reply = complete_json()
    assert reply.outcome == "retried_ok" and llm.schema_errors(reply.data, RATING_SCHEMA) == []


@pytest.mark.django_db
def test_a_failing_validate_callback_triggers_the_repair(fake_llm: FakeServer) -> None:
    seen: list[Any] = []

    def validate(data: Any) -> None:
        seen.append(data)
        if len(seen) == 1:
            raise ValueError("the suggestion must quote the message")

    reply = complete_json(validate=validate)
    assert reply.outcome == "repaired" and reply.data == seen[-1] and len(seen) == 2
    repair_note = fake_llm.requests()[-1]["body"]["messages"][-1]["content"]
    assert "the suggestion must quote the message" in repair_note


@pytest.mark.django_db
def test_a_validate_callback_that_crashes_counts_as_invalid(fake_llm: FakeServer) -> None:
    def validate(data: Any) -> None:
        data["no such key"]

    with pytest.raises(llm.Malformed) as raised:
        complete_json(validate=validate)
    assert "KeyError" in str(raised.value) and len(fake_llm.requests()) == 2


@pytest.mark.django_db
def test_azure_provider_calls_the_deployment_path(fake_llm: FakeServer, settings: Any) -> None:
    settings.LLM = {**settings.LLM, "provider": "azure", "base_url": fake_llm.root_url}
    assert complete_text().text == fake_reply(MESSAGES)
    sent = fake_llm.requests()[0]
    assert sent["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert sent["headers"]["api-key"] == "test-key"
    assert last_call().provider == "azure"


# --- pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '  {"a": 1}\n',
        'Sure! Here it is:\n```json\n{"a": 1}\n```',
        'Broken {"a": then {"a": 1} and more',
    ],
)
def test_parse_json_reply_finds_the_object(text: str) -> None:
    assert llm.parse_json_reply(text) == {"a": 1}


def test_parse_json_reply_rejects_text_without_an_object() -> None:
    with pytest.raises(ValueError):
        llm.parse_json_reply('Here is the result: {"level": "str')


def test_schema_errors_name_each_problem() -> None:
    errors = llm.schema_errors(
        {"level": "great", "examples": [], "extra": 1, "suggestion": 5}, RATING_SCHEMA
    )
    assert sorted(errors) == [
        "$ has an unexpected key 'extra'",
        "$.examples needs at least 1 items",
        "$.level must be one of 'strong', 'weak', 'none'",
        "$.suggestion must be of type string",
    ]
    assert llm.schema_errors(True, {"type": "integer"}) == ["$ must be of type integer"]


# --- the gateway's own latency ------------------------------------------------------------------


@pytest.mark.django_db
def test_gateway_adds_at_most_a_few_milliseconds_to_the_first_token(settings: Any) -> None:
    """Server send -> caller receive of the first token: raw SDK vs gateway, fake in a process."""
    server = start_fake_server(in_subprocess=True, ttft_ms=30)
    settings.LLM = {**settings.LLM, "base_url": server.base_url, "api_key": "k", "max_retries": 0}
    rounds = int(os.environ.get("LLM_OVERHEAD_ROUNDS", "30"))
    try:

        async def measure() -> tuple[list[float], list[float]]:
            sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
            raw, gateway = [], []
            for _ in range(rounds):
                stream = await sdk.chat.completions.create(
                    model="m",
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async with stream:
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            raw.append(time.time())
                            break
                async with llm.stream_text(
                    purpose="partner", messages=MESSAGES, prompt=PROMPT
                ) as s:
                    async for _ in s:
                        gateway.append(time.time())
                        break
            return raw, gateway

        raw_at, gateway_at = run(measure)
        sent = [r["first_token_at"] for r in server.requests()]
    finally:
        server.stop()
    raw_ms = [(got - sent[2 * i]) * 1000 for i, got in enumerate(raw_at)]
    gateway_ms = [(got - sent[2 * i + 1]) * 1000 for i, got in enumerate(gateway_at)]
    raw_median, gateway_median = statistics.median(raw_ms), statistics.median(gateway_ms)
    print(
        f"\nfirst token, server send -> caller ({rounds} rounds): raw SDK median "
        f"{raw_median:.2f} ms (p90 {sorted(raw_ms)[int(rounds * 0.9)]:.2f}); gateway median "
        f"{gateway_median:.2f} ms (p90 {sorted(gateway_ms)[int(rounds * 0.9)]:.2f}); "
        f"gateway's own overhead {gateway_median - raw_median:+.2f} ms"
    )
    assert gateway_median < 10


# --- the SDK's HTTP transport -----------------------------------------------------------------


def _transport(settings: Any, kind: str | None) -> Any:
    """The transport under the SDK client the gateway builds for `kind` (None: the default)."""
    conf = {k: v for k, v in settings.LLM.items() if k != "http_client"}
    settings.LLM = conf if kind is None else {**conf, "http_client": kind}

    async def go() -> Any:
        client = await llm._client(llm._config())
        return client._client._transport

    return run(go)


def test_the_sdk_reads_through_aiohttp_unless_told_otherwise(
    fake_llm: FakeServer, settings: Any
) -> None:
    from openai._vendor.httpx_aiohttp.transport import AiohttpTransport

    assert isinstance(_transport(settings, None), AiohttpTransport)
    assert isinstance(_transport(settings, "aiohttp"), AiohttpTransport)
    plain = _transport(settings, "httpx")
    assert not isinstance(plain, AiohttpTransport)
    assert type(plain).__module__.startswith("httpx2")


@pytest.mark.django_db
def test_an_unknown_transport_is_a_configuration_error(fake_llm: FakeServer, settings: Any) -> None:
    settings.LLM = {**settings.LLM, "http_client": "carrier-pigeon"}
    with pytest.raises(llm.Misconfigured, match="LLM_HTTP_CLIENT"):
        stream()
    assert fake_llm.requests() == []


@pytest.mark.django_db
@pytest.mark.parametrize("kind", llm.HTTP_CLIENTS)
def test_both_transports_stream_retry_cut_and_time_out_alike(
    quick: FakeServer, settings: Any, kind: str
) -> None:
    settings.LLM = {**settings.LLM, "http_client": kind}
    deltas, reply = stream()
    assert deltas == reply_deltas(MESSAGES)[0] and reply.outcome == "ok"
    quick.faults(["500"])
    deltas, reply = stream()
    assert "".join(deltas) == fake_reply(MESSAGES) and reply.outcome == "retried_ok"
    quick.faults(["cut"])
    with pytest.raises(llm.StreamCut) as raised:
        stream()
    assert raised.value.partial_text == "".join(reply_deltas(MESSAGES)[0][:5])
    settings.LLM = {**settings.LLM, "max_retries": 0}
    quick.faults(["hang"])
    started = time.perf_counter()
    with pytest.raises(llm.TimedOut):
        complete_text()
    assert 0.5 <= time.perf_counter() - started < 2
    assert last_call().outcome == "timeout"


@pytest.mark.django_db
@pytest.mark.parametrize("kind", llm.HTTP_CLIENTS)
def test_a_server_that_is_not_there_is_a_failed_connection_not_a_timeout(
    settings: Any, kind: str
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.LLM = {
        **settings.LLM,
        "base_url": f"http://127.0.0.1:{port}/v1",
        "http_client": kind,
        "max_retries": 0,
        "timeout_s": 5.0,
    }
    started = time.perf_counter()
    with pytest.raises(llm.GaveUp) as raised:
        complete_text()
    assert time.perf_counter() - started < 4  # told at once, not after the timeout
    assert not isinstance(raised.value, llm.TimedOut)
    assert "connection failed" in str(raised.value)
    assert last_call().outcome == "gave_up"


def test_a_connection_error_is_found_behind_the_sdk_error_and_a_looping_chain_ends() -> None:
    import aiohttp

    refused = aiohttp.ClientConnectionError("refused")
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = refused
    assert llm._connection_failure(wrapped) is refused
    waited = aiohttp.ServerTimeoutError("read timed out")  # a wait that ran out is a timeout
    assert llm._connection_failure(waited) is None
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert llm._connection_failure(first) is None
