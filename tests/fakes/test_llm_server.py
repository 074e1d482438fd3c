"""The fake model server speaks the OpenAI wire protocol: checked with the real SDK and raw HTTP."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from imbue.llm import schema_errors
from tests.fakes.llm_server import (
    AGREE_MARKER,
    FakeServer,
    fake_json,
    fake_reply,
    start_fake_server,
    violate_schema,
)

MESSAGES = [
    {"role": "system", "content": "You play my flatmate."},
    {"role": "user", "content": "Could you please do the dishes on weekdays from now on?"},
]
RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "level": {"type": "string", "enum": ["strong", "weak", "none"]},
        "reasons": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
        "score": {"type": "integer", "minimum": 0, "maximum": 2},
        "mindful": {"type": "boolean"},
        "advice": {"$ref": "#/$defs/advice"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["level", "reasons", "score", "mindful", "advice", "note"],
    "additionalProperties": False,
    "$defs": {
        "advice": {
            "type": "object",
            "properties": {
                "tip": {"type": "string", "maxLength": 30},
                "weight": {"type": "number"},
            },
            "required": ["tip", "weight"],
            "additionalProperties": False,
        }
    },
}


@pytest.fixture
def fake(fake_llm_server: FakeServer) -> Iterator[FakeServer]:
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture
def client(fake: FakeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0, timeout=5)


def _raw_stream(fake: FakeServer, body: dict[str, Any]) -> list[str]:
    request = urllib.request.Request(
        fake.base_url + "/chat/completions",
        data=json.dumps({"model": "m", "stream": True, **body}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line]


def test_models_endpoint_lists_the_served_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["fake-small", "fake-large", "gpt-4o-mini"]


def test_reply_is_deterministic_and_predicted_by_fake_reply(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="fake-small", messages=MESSAGES)
    again = client.chat.completions.create(model="fake-small", messages=MESSAGES)
    other = client.chat.completions.create(
        model="fake-small", messages=[*MESSAGES[:1], {"role": "user", "content": "Hello there"}]
    )
    assert first.choices[0].message.content == fake_reply(MESSAGES)
    assert again.choices[0].message.content == first.choices[0].message.content
    assert other.choices[0].message.content != first.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None and first.usage.completion_tokens == 11


def test_reply_length_follows_the_user_message_within_the_caps(
    client: openai.OpenAI, fake: FakeServer
) -> None:
    long_message = [{"role": "user", "content": "word " * 30}]
    assert len(fake_reply(long_message).split()) == 30
    assert len(fake_reply([{"role": "user", "content": "hi"}]).split()) == 3
    fake.configure(reply_tokens=12)
    capped = client.chat.completions.create(model="m", messages=long_message)
    assert len(capped.choices[0].message.content.split()) == 12
    limited = client.chat.completions.create(model="m", messages=long_message, max_tokens=5)
    assert len(limited.choices[0].message.content.split()) == 5
    assert limited.choices[0].finish_reason == "length"


def test_agree_tag_in_the_last_user_message_ends_the_reply_with_the_marker(
    client: openai.OpenAI,
) -> None:
    agreeing = [{"role": "user", "content": "Fine, I hear you and I will try it #agree"}]
    reply = client.chat.completions.create(model="m", messages=agreeing).choices[0].message.content
    assert reply.endswith(" " + AGREE_MARKER)
    plain = client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    assert AGREE_MARKER not in plain


def test_stream_has_the_openai_chunk_shape_usage_chunk_and_done(fake: FakeServer) -> None:
    events = _raw_stream(fake, {"messages": MESSAGES, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == fake_reply(MESSAGES)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 11
    no_usage = _raw_stream(fake, {"messages": MESSAGES})
    assert all("usage" not in json.loads(e) for e in no_usage[:-1])


def test_sdk_streams_the_same_text_as_the_whole_reply(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    deltas = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) == 11
    assert "".join(deltas) == fake_reply(MESSAGES)


def test_ttft_and_tokens_per_second_pace_the_stream(fake: FakeServer) -> None:
    fake.configure(ttft_ms=150, tokens_per_s=100)
    started = time.perf_counter()
    events = _raw_stream(fake, {"messages": MESSAGES})
    elapsed = time.perf_counter() - started
    entry = fake.requests()[-1]
    assert entry["first_token_at"] - entry["received_at"] >= 0.14
    tokens = sum(
        bool(choice["delta"].get("content"))
        for event in events
        if event != "[DONE]"
        for choice in json.loads(event)["choices"]
    )
    assert tokens >= 10
    # The first token after the ttft, then one every 1/100 s: the last is due at ttft + (n-1)/100.
    assert 0.15 + (tokens - 1) / 100 <= elapsed < 0.15 + tokens / 100 + 0.75


@pytest.mark.parametrize("seed", range(40))
def test_generated_json_is_valid_against_the_schema(seed: int) -> None:
    value = fake_json(RATING_SCHEMA, seed)
    assert schema_errors(value, RATING_SCHEMA) == []
    assert schema_errors(violate_schema(RATING_SCHEMA, value), RATING_SCHEMA) != []


def test_json_schema_request_gets_schema_valid_json(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "rating", "schema": RATING_SCHEMA, "strict": True},
        },
    )
    assert schema_errors(json.loads(reply.choices[0].message.content), RATING_SCHEMA) == []


def test_json_object_and_plain_requests_follow_a_schema_quoted_in_the_prompt(
    client: openai.OpenAI,
) -> None:
    asking = [
        {"role": "system", "content": "Reply in JSON matching " + json.dumps(RATING_SCHEMA)},
        MESSAGES[1],
    ]
    mode = client.chat.completions.create(
        model="m", messages=asking, response_format={"type": "json_object"}
    )
    assert schema_errors(json.loads(mode.choices[0].message.content), RATING_SCHEMA) == []
    plain = client.chat.completions.create(model="m", messages=asking).choices[0].message.content
    assert plain.startswith("Here is the JSON") and "```json" in plain
    bare = client.chat.completions.create(
        model="m", messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert json.loads(bare.choices[0].message.content) == {"reply": fake_reply(MESSAGES)}


def test_servers_without_json_schema_answer_400_without_using_a_queued_fault(
    client: openai.OpenAI, fake: FakeServer
) -> None:
    fake.configure(json_schema=False)
    fake.faults(["500"])
    schema_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": RATING_SCHEMA}}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="m", messages=MESSAGES, response_format=schema_format)
    assert "response_format" in str(raised.value)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=MESSAGES)


def test_status_faults_are_served_in_queue_order_with_retry_after(
    client: openai.OpenAI, fake: FakeServer
) -> None:
    fake.faults([{"kind": "429", "retry_after": 2.5}, "500", "401", "404"])
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.response.headers["retry-after-ms"] == "2500"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices
    assert [r["fault"] for r in fake.requests()] == ["429", "500", "401", "404", None]


@pytest.mark.parametrize("stream", [False, True])
def test_cut_drops_the_connection_midway(
    client: openai.OpenAI, fake: FakeServer, stream: bool
) -> None:
    fake.faults(["cut"])
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        if stream:
            for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
                received += [c.delta.content for c in chunk.choices if c.delta.content]
        else:
            client.chat.completions.create(model="m", messages=MESSAGES)
    assert len(received) == (5 if stream else 0)


def test_hang_holds_the_request_past_the_client_timeout(
    client: openai.OpenAI, fake: FakeServer
) -> None:
    fake.faults(["hang"])
    started = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=MESSAGES, timeout=0.3)
    assert 0.3 <= time.perf_counter() - started < 2


def test_content_faults_shape_the_reply(client: openai.OpenAI, fake: FakeServer) -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": RATING_SCHEMA}}
    fake.faults(["malformed", "schema_violation", "empty", "refuse", "content_filter"])

    def ask() -> Any:
        return client.chat.completions.create(
            model="m", messages=MESSAGES, response_format=schema_format
        ).choices[0]

    malformed = ask().message.content
    with pytest.raises(ValueError):
        json.loads(malformed)
    assert schema_errors(json.loads(ask().message.content), RATING_SCHEMA) != []
    assert ask().message.content == ""
    refused = ask()
    assert refused.message.refusal and refused.message.content is None
    filtered = ask()
    assert filtered.finish_reason == "content_filter" and filtered.message.content == ""


def test_bad_body_is_not_json(client: openai.OpenAI, fake: FakeServer) -> None:
    fake.faults(["bad_body"])
    with pytest.raises(ValueError):
        client.chat.completions.create(model="m", messages=MESSAGES)


def test_fault_rate_is_seeded_and_reproducible(client: openai.OpenAI, fake: FakeServer) -> None:
    def run() -> list[str | None]:
        fake.reset()
        fake.faults(rate=0.5, kinds=["500", "503"])
        for _ in range(20):
            with contextlib.suppress(openai.InternalServerError):
                client.chat.completions.create(model="m", messages=MESSAGES)
        return [r["fault"] for r in fake.requests()]

    first = run()
    assert first == run()
    assert {"500", "503", None} == set(first)


def test_request_log_keeps_body_headers_and_purpose(
    client: openai.OpenAI, fake: FakeServer
) -> None:
    client.chat.completions.create(
        model="fake-large",
        messages=MESSAGES,
        temperature=0.3,
        extra_headers={"X-Imbue-Purpose": "partner"},
    )
    client.chat.completions.create(model="m", messages=MESSAGES, user="feedback")
    partner, feedback = fake.requests()
    assert partner["purpose"] == "partner" and feedback["purpose"] == "feedback"
    assert partner["body"]["model"] == "fake-large" and partner["body"]["temperature"] == 0.3
    assert partner["body"]["messages"] == MESSAGES
    assert partner["headers"]["authorization"] == "Bearer k"
    fake.reset()
    assert fake.requests() == []


def test_unknown_knob_or_fault_kind_is_refused(fake: FakeServer) -> None:
    with pytest.raises(urllib.error.HTTPError):
        fake.configure(colour="blue")


def test_azure_deployment_paths_are_served(fake: FakeServer) -> None:
    azure = openai.AzureOpenAI(
        azure_endpoint=fake.root_url, api_key="azure-key", api_version="2024-10-21", max_retries=0
    )
    reply = azure.chat.completions.create(model="my-deployment", messages=MESSAGES)
    assert reply.choices[0].message.content == fake_reply(MESSAGES)
    entry = fake.requests()[-1]
    assert entry["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert entry["headers"]["api-key"] == "azure-key" and "api-version=2024-10-21" in entry["query"]


def test_command_line_server_runs_as_its_own_process() -> None:
    server = start_fake_server(in_subprocess=True, json_schema=False, reply_tokens=4)
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == fake_reply(MESSAGES, reply_tokens=4)
        assert server.configure()["json_schema"] is False
    finally:
        server.stop()
