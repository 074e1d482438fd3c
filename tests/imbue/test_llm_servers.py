"""The gateway against the ways real OpenAI-compatible servers differ from OpenAI's own: the fake
server answers as vLLM, llama.cpp's server, Ollama or Azure do, through the real openai SDK."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from imbue import llm
from tests.fakes.llm_server import REASONING_WORDS, FakeServer, fake_reply
from tests.imbue.test_llm import (
    MESSAGES,
    PROMPT,
    RATING_SCHEMA,
    complete_json,
    complete_text,
    last_call,
    stream,
)

REASONING = "".join(REASONING_WORDS)


@pytest.fixture
def quick(fake_llm: FakeServer, settings: Any) -> FakeServer:
    """The fake with a short timeout, two retries and almost no backoff."""
    settings.LLM = {**settings.LLM, "timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.001}
    return fake_llm


def with_max_tokens(settings: Any, purpose: str, value: int) -> None:
    purposes = {**settings.LLM["purposes"], purpose: {**settings.LLM["purposes"][purpose]}}
    purposes[purpose]["max_tokens"] = value
    settings.LLM = {**settings.LLM, "purposes": purposes}


# --- reasoning models -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("style", ["think", "reasoning_content", "reasoning"])
def test_a_reasoning_models_thinking_never_reaches_the_streamed_reply(
    quick: FakeServer, style: str
) -> None:
    quick.configure(reasoning=style)
    deltas, reply = stream()
    assert "".join(deltas) == reply.text == fake_reply(MESSAGES)
    assert "think" not in reply.text
    call = last_call()
    assert call.outcome == "ok" and call.attempts == 1


@pytest.mark.django_db
@pytest.mark.parametrize("style", ["think", "think_in_template", "reasoning_content", "reasoning"])
def test_a_reasoning_models_thinking_never_reaches_a_whole_reply(
    quick: FakeServer, style: str
) -> None:
    quick.configure(reasoning=style)
    assert complete_text().text == fake_reply(MESSAGES)


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["json_schema", "json_object", "json_in_prompt"])
@pytest.mark.parametrize("style", ["think", "think_in_template"])
def test_thinking_inside_the_content_is_not_parsed_as_the_rating(
    quick: FakeServer, fmt: str, style: str
) -> None:
    # The trace holds a JSON object of its own ({"draft": 1}): parsed first, it would fail the
    # schema, cost a repair and then fall back to the offline rater.
    quick.configure(
        reasoning=style,
        json_schema=fmt == "json_schema",
        json_object=fmt != "json_in_prompt",
    )
    reply = complete_json()
    assert llm.schema_errors(reply.data, RATING_SCHEMA) == []
    assert reply.outcome == "ok" and "<think>" not in reply.text


def test_a_think_tag_split_across_deltas_is_still_held_back() -> None:
    gate = llm._ThinkGate()
    shown = [gate.feed(piece) for piece in ["  <th", "ink>", "plan: {", "}</thi", "nk>\n\nHi", "!"]]
    assert "".join(shown) == "Hi!"
    gate = llm._ThinkGate()
    assert gate.feed("<") == "" and gate.feed("b>bold</b>") == "<b>bold</b>"


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        ("<think>plan</think>\n\nHi!", "Hi!"),
        ("  <think>plan", ""),
        ("plan, opened by the template</think>\nHi!", "Hi!"),
        # A reply that only mentions the tags (a correctly configured server's own words).
        ("Wrap it in <think>...</think> tags, then answer.", None),
        ("Say no first. <think> is not a tag here, nor </think>.", None),
        ("No tags at all.", None),
    ],
)
def test_only_reasoning_is_taken_out_of_a_whole_reply(content: str, shown: str | None) -> None:
    assert llm._without_thinking(content) == (content if shown is None else shown)


def test_the_think_gate_keeps_none_of_a_long_trace_while_it_waits_for_the_close() -> None:
    # Kept whole and searched again on every token, a long trace made each token cost more than
    # the last (quadratic, on the event loop that streams every learner's reply).
    gate = llm._ThinkGate()
    assert gate.feed("<think>") == ""
    for _ in range(2000):
        assert gate.feed(" maybe {") == ""
        assert len(gate._held) < len(llm.THINK_CLOSE)
    assert [gate.feed(p) for p in ["}</", "thi", "nk>", "\n\nHi"]] == ["", "", "", "Hi"]
    assert gate.passed and gate.thought and gate.finish() == ""


@pytest.mark.django_db
@pytest.mark.parametrize("style", ["think", "reasoning"])
def test_reasoning_that_uses_up_the_token_limit_is_a_clear_error_not_retried(
    quick: FakeServer, settings: Any, style: str
) -> None:
    quick.configure(reasoning=style, reasoning_tokens=50)
    with_max_tokens(settings, "partner", 20)
    with pytest.raises(llm.Malformed) as raised:
        stream()
    assert "token limit" in raised.value.detail and "LLM_PARTNER_MAX_TOKENS" in raised.value.detail
    assert len(quick.requests()) == 1  # the same limit would be used up again
    with pytest.raises(llm.Malformed) as raised:
        complete_text()
    assert "token limit" in raised.value.detail and len(quick.requests()) == 2
    assert "token limit" in last_call().error


@pytest.mark.django_db
def test_reasoning_that_uses_up_a_ratings_token_limit_is_not_sent_for_repair(
    quick: FakeServer, settings: Any
) -> None:
    # The repair asks again under the same limit: a second wait for the same error.
    quick.configure(reasoning="reasoning", reasoning_tokens=50)
    with_max_tokens(settings, "feedback", 20)
    with pytest.raises(llm.Malformed) as raised:
        complete_json()
    assert "LLM_FEEDBACK_MAX_TOKENS" in raised.value.detail and len(quick.requests()) == 1
    assert last_call().outcome == "malformed" and "token limit" in last_call().error


# --- streams that differ --------------------------------------------------------------------


@pytest.mark.django_db
def test_usage_sent_on_every_chunk_is_counted_once(quick: FakeServer) -> None:
    # Some servers repeat the running usage on each chunk; summed, a 40-word reply would count
    # its prompt 40 times and spend the conversation's token budget in a turn or two.
    quick.configure(usage="every")
    deltas, _ = stream()
    plain = quick.requests()[0]
    call = last_call()
    assert call.tokens_out == len(deltas)
    prompt_tokens = sum(3 + len(m["content"].split()) for m in plain["body"]["messages"])
    assert call.tokens_in == prompt_tokens


@pytest.mark.django_db
def test_a_server_that_sends_no_usage_still_counts_against_the_budget(quick: FakeServer) -> None:
    quick.configure(usage="none")
    _, reply = stream()
    call = last_call()
    assert call.tokens_in and call.tokens_out and call.params["tokens_estimated"] is True
    assert call.tokens_out == pytest.approx(len(reply.text) / 4, abs=2)
    complete_text()
    assert last_call().tokens_out and last_call().params["tokens_estimated"] is True


def test_a_count_the_server_did_report_is_not_estimated_again() -> None:
    # A server that reports the prompt's tokens but not the reply's: estimating both counted
    # the prompt twice.
    run = llm._Run(purpose="partner", prompt=PROMPT, context=llm.CallContext(), stream=True)
    usage = {"prompt_tokens": 120, "completion_tokens": None}
    assert not run.add_usage(usage)
    run.estimate_usage(MESSAGES, "a" * 40, usage)
    assert run.tokens_in == 120 and run.tokens_out == 10 and run.params["tokens_estimated"]


@pytest.mark.django_db
def test_keepalive_comments_and_role_only_chunks_are_skipped(quick: FakeServer) -> None:
    quick.configure(keepalive=True)
    deltas, reply = stream()
    assert reply.text == fake_reply(MESSAGES) and deltas[0] == reply.text.split(" ")[0]


@pytest.mark.django_db
def test_an_error_sent_inside_the_stream_cuts_it_with_the_servers_words(quick: FakeServer) -> None:
    quick.faults(["stream_error"])
    with pytest.raises(llm.StreamCut) as raised:
        stream()
    assert raised.value.partial_text and "crashed midway" in last_call().error


@pytest.mark.django_db
def test_http_200_with_an_error_body_is_retried_and_recorded_with_its_words(
    quick: FakeServer,
) -> None:
    quick.faults(["error_200"])
    assert complete_text().text == fake_reply(MESSAGES)
    assert len(quick.requests()) == 2 and last_call().outcome == "retried_ok"
    quick.faults(["error_200"] * 3)
    with pytest.raises(llm.GaveUp):
        complete_text()
    assert "The model crashed (fake)." in last_call().error


# --- parameters a server rejects --------------------------------------------------------------


@pytest.mark.django_db
def test_a_vllm_context_too_small_for_max_tokens_gets_a_smaller_limit(
    quick: FakeServer, settings: Any
) -> None:
    # vLLM refuses a prompt plus max_tokens beyond --max-model-len (OpenAI would just stop).
    prompt_tokens = sum(3 + len(m["content"].split()) for m in MESSAGES)
    quick.configure(context_length=prompt_tokens + 300)
    with_max_tokens(settings, "partner", 400)
    assert complete_text().text == fake_reply(MESSAGES)
    rejected, accepted = (r["body"] for r in quick.requests())
    assert rejected["max_tokens"] == 400 and accepted["max_tokens"] == 300
    assert "max_completion_tokens" not in accepted  # vLLM's words name it; it is not the fix
    assert last_call().params["fitted_max_tokens"] == 300
    _, reply = stream()
    assert reply.text == fake_reply(MESSAGES)


@pytest.mark.parametrize(
    ("text", "room"),
    [
        (
            "This model's maximum context length is 4096 tokens. However, you requested 4500 "
            "tokens (4100 in the messages, 400 in the completion). Please reduce the length of "
            "the messages or completion.",
            -4,
        ),
        (
            "'max_tokens' or 'max_completion_tokens' is too large: 1800. This model's maximum "
            "context length is 4096 tokens and your request has 2500 input tokens "
            "(1800 > 4096 - 2500).",
            1596,
        ),
        (
            "This model's maximum context length is 128000 tokens. However, you requested 65535 "
            "output tokens and your prompt contains at least 62466 input tokens, for a total of "
            "at least 128001 tokens.",
            65534,
        ),
        ("Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead.", None),
    ],
)
def test_the_room_left_for_the_reply_is_read_from_vllms_words(text: str, room: int | None) -> None:
    assert llm._room_for_reply(text) == room


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"object": "error", "message": "Unrecognized request argument supplied: stream_options",
         "type": "BadRequestError", "param": None, "code": 400},
        {"error": "Input validation error: unknown field `stream_options`",
         "error_type": "validation"},
        {"detail": [{"type": "extra_forbidden", "loc": ["body", "stream_options"],
                     "msg": "Extra inputs are not permitted"}]},
    ],
)  # fmt: skip
def test_other_servers_error_shapes_are_understood(quick: FakeServer, body: Any) -> None:
    quick.faults([{"kind": "422" if "detail" in body else "400", "body": body}])
    _, reply = stream()
    first, second = (r["body"] for r in quick.requests())
    assert "stream_options" in first and "stream_options" not in second
    assert "temperature" in second and second["max_tokens"] == 400
    assert reply.text == fake_reply(MESSAGES)


@pytest.mark.django_db
def test_an_older_llama_server_that_answers_500_to_json_schema_gets_json_mode(
    quick: FakeServer,
) -> None:
    quick.configure(json_schema=False, format_rejection="llama.cpp")
    reply = complete_json()
    assert llm.schema_errors(reply.data, RATING_SCHEMA) == []
    formats = [r["body"]["response_format"]["type"] for r in quick.requests()]
    assert formats == ["json_schema", "json_object"]
    complete_json()
    assert quick.requests()[-1]["body"]["response_format"]["type"] == "json_object"


# --- base URL and credentials mistakes --------------------------------------------------------


@pytest.mark.django_db
def test_a_base_url_without_v1_is_named_in_the_error(quick: FakeServer, settings: Any) -> None:
    quick.configure(require_v1=True)
    settings.LLM = {**settings.LLM, "base_url": quick.root_url + "/"}
    with pytest.raises(llm.Misconfigured) as raised:
        stream()
    assert "/v1" in raised.value.detail and len(quick.requests()) == 0
    assert "/v1" in last_call().error


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["/v1/", "/v1/chat/completions", " /v1/chat/completions/ "])
def test_a_base_url_with_a_trailing_slash_or_the_endpoint_pasted_whole_works(
    quick: FakeServer, settings: Any, suffix: str
) -> None:
    quick.configure(require_v1=True)
    settings.LLM = {**settings.LLM, "base_url": quick.root_url + suffix}
    _, reply = stream()
    assert reply.text == fake_reply(MESSAGES)
    assert quick.requests()[0]["path"] == "/v1/chat/completions"


@pytest.mark.django_db
def test_a_model_the_server_does_not_have_is_not_blamed_on_the_address(quick: FakeServer) -> None:
    quick.faults(["404"])
    with pytest.raises(llm.Misconfigured) as raised:
        complete_text()
    assert "does not exist" in raised.value.detail and "/v1" not in raised.value.detail


@pytest.mark.django_db
def test_a_failing_model_shows_on_the_status_label_until_a_call_succeeds(
    quick: FakeServer,
) -> None:
    assert llm.status_label() == "A language model is connected (gpt-4o-mini)."
    quick.faults(["401"])
    with pytest.raises(llm.Misconfigured):
        stream()
    assert not llm.is_working()
    assert "not set up correctly" in llm.status_label() and "offline" in llm.status_label()
    stream()
    assert llm.is_working() and llm.status_label().startswith("A language model is connected")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 128000 tokens. However, your messages resulted "
        "in 130000 tokens. Please reduce the length of the messages.",
        "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
    ],
)
def test_one_request_the_server_refuses_does_not_say_the_model_is_not_set_up(
    quick: FakeServer, message: str
) -> None:
    # One learner's long conversation or flagged words must not tell every page that the
    # model is not set up correctly.
    quick.faults([{"kind": "400", "message": message}])
    with pytest.raises(llm.Misconfigured):
        stream()
    assert last_call().outcome == "misconfigured" and message[:40] in last_call().error
    assert llm.is_working() and llm.status_label().startswith("A language model is connected")


@pytest.mark.django_db
def test_a_wrong_model_for_one_purpose_is_not_hidden_by_another_that_works(
    quick: FakeServer,
) -> None:
    quick.faults(["404"])
    with pytest.raises(llm.Misconfigured):
        complete_json()  # feedback
    stream()  # the partner's model answers
    assert not llm.is_working()
    complete_json()
    assert llm.is_working()


# --- Azure OpenAI -----------------------------------------------------------------------------


def azure(settings: Any, base_url: str, **extra: Any) -> None:
    settings.LLM = {**settings.LLM, "provider": "azure", "base_url": base_url, **extra}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("suffix", "version"),
    [
        ("", "2024-10-21"),
        ("/", "2024-10-21"),
        ("/openai", "2024-10-21"),
        ("/openai/deployments/gpt-4o-mini", "2024-10-21"),
        ("/openai/deployments/gpt-4o-mini/chat/completions?api-version=2025-01-01-preview",
         "2025-01-01-preview"),
    ],
)  # fmt: skip
def test_azure_accepts_the_address_shapes_its_portal_shows(
    quick: FakeServer, settings: Any, suffix: str, version: str
) -> None:
    azure(settings, quick.root_url + suffix)
    assert complete_text().text == fake_reply(MESSAGES)
    sent = quick.requests()[0]
    assert sent["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert sent["query"] == f"api-version={version}" and sent["headers"]["api-key"] == "test-key"


@pytest.mark.django_db
def test_a_deployment_named_in_the_azure_address_is_the_one_called(
    quick: FakeServer, settings: Any
) -> None:
    azure(settings, quick.root_url + "/openai/deployments/my-gpt4o")
    complete_json()
    assert quick.requests()[0]["path"] == "/openai/deployments/my-gpt4o/chat/completions"
    assert last_call().model == "my-gpt4o"


@pytest.mark.django_db
@pytest.mark.parametrize("provider", ["azure", "openai"])
def test_azures_v1_address_works_with_either_provider(
    quick: FakeServer, settings: Any, provider: str
) -> None:
    settings.LLM = {
        **settings.LLM, "provider": provider, "base_url": quick.root_url + "/openai/v1/"
    }  # fmt: skip
    _, reply = stream()
    assert reply.text == fake_reply(MESSAGES)
    sent = quick.requests()[0]
    assert sent["path"] == "/openai/v1/chat/completions" and "api-version" not in sent["query"]
    assert sent["headers"]["authorization"] == "Bearer test-key"
    if provider == "azure":
        assert sent["headers"]["api-key"] == "test-key"


@pytest.mark.django_db
@pytest.mark.parametrize(("key", "version"), [("", "2024-10-21"), ("test-key", "")])
def test_azure_without_a_key_or_version_is_misconfigured_not_busy(
    quick: FakeServer, settings: Any, key: str, version: str
) -> None:
    azure(settings, quick.root_url, api_key=key, api_version=version)
    with pytest.raises(llm.Misconfigured) as raised:
        complete_text()
    assert "LLM_API_KEY" in raised.value.detail or "LLM_API_VERSION" in raised.value.detail
    assert last_call().outcome == "misconfigured" and quick.requests() == []


@pytest.mark.django_db
def test_a_server_that_ignores_json_schema_silently_gets_the_schema_in_the_prompt(
    quick: FakeServer,
) -> None:
    # Older Ollama (and others) answer a json_schema request as plain text, without an error:
    # the prompt never showed the schema, so the repair could not help either.
    quick.configure(ignore_response_format=True)
    reply = complete_json()
    assert llm.schema_errors(reply.data, RATING_SCHEMA) == [] and reply.outcome == "ok"
    ignored, asked = (r["body"] for r in quick.requests())
    assert ignored["response_format"]["type"] == "json_schema"
    assert asked["response_format"] == {"type": "json_object"}
    assert '"enum": ["strong", "weak", "none"]' in asked["messages"][0]["content"]
    complete_json()
    assert quick.requests()[-1]["body"]["response_format"] == {"type": "json_object"}


# --- reasoning opened by the chat template (DeepSeek-R1) --------------------------------------


@pytest.mark.django_db
def test_reasoning_opened_by_the_template_is_taken_back_and_later_streams_wait_for_its_end(
    quick: FakeServer,
) -> None:
    # DeepSeek-R1's template ends the prompt with "<think>\n": the reply streams its reasoning
    # and only a "</think>" shows where the words begin.
    quick.configure(reasoning="think_in_template")
    deltas, reply = stream()
    assert "".join(deltas).startswith("Let me think")  # streamed before anything showed it
    assert reply.revised and reply.text == fake_reply(MESSAGES)
    assert last_call().params["reasoning_taken_back"] > len(REASONING)
    # From now on this model's streams are held back until the reasoning ends.
    deltas, reply = stream()
    assert not reply.revised and "".join(deltas) == reply.text == fake_reply(MESSAGES)
    assert len(deltas) == len(fake_reply(MESSAGES).split())  # then token by token
    assert "reasoning_taken_back" not in last_call().params


@pytest.mark.django_db
def test_a_model_held_back_for_reasoning_that_stops_reasoning_streams_token_by_token_again(
    quick: FakeServer,
) -> None:
    quick.configure(reasoning="think_in_template")
    stream()  # learnt
    quick.configure(reasoning="")  # another model behind the same name, or thinking turned off
    deltas, reply = stream()
    assert deltas == [fake_reply(MESSAGES)] and not reply.revised  # held to the end, then whole
    deltas, reply = stream()
    assert len(deltas) == len(fake_reply(MESSAGES).split()) and reply.text == fake_reply(MESSAGES)


@pytest.mark.django_db
def test_reasoning_opened_by_the_template_that_uses_up_the_limit_is_never_shown(
    quick: FakeServer, settings: Any
) -> None:
    quick.configure(reasoning="think_in_template")
    stream()  # learnt
    quick.configure(reasoning_tokens=50)
    with_max_tokens(settings, "partner", 20)
    deltas: list[str] = []
    with pytest.raises(llm.Malformed) as raised:
        deltas, _ = stream()
    assert deltas == [] and "LLM_PARTNER_MAX_TOKENS" in raised.value.detail
    assert "by the model's reasoning" in raised.value.detail


def test_an_opened_gate_holds_everything_until_the_close_even_split_across_deltas() -> None:
    gate = llm._ThinkGate(opened=True)
    pieces = ["plan: say", " no {", "}</thi", "nk>\n\n", "No", " way."]
    assert "".join(gate.feed(p) for p in pieces) == "No way." and gate.thought
    gate = llm._ThinkGate(opened=True)
    for _ in range(2000):  # a long trace: kept as pieces, never searched again
        assert gate.feed(" maybe {") == ""
        assert len(gate._held) < len(llm.THINK_CLOSE)
    assert gate.unclosed and gate.finish(cut=True) == ""
    gate = llm._ThinkGate(opened=True)
    assert gate.feed("No reasoning") == gate.feed(" at all.") == ""
    assert gate.finish() == "No reasoning at all."


# --- what a server refused, remembered for a while --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock()
    monkeypatch.setattr(llm, "_clock", moved)
    return moved


def formats_asked(server: FakeServer) -> list[str]:
    return [(r["body"].get("response_format") or {}).get("type", "text") for r in server.requests()]


@pytest.mark.django_db
def test_one_prose_answer_to_json_schema_gives_it_up_for_a_while_not_for_good(
    quick: FakeServer, clock: Clock
) -> None:
    # A proxy that ignored json_schema once (its model did, this time) must not cost every
    # later rating its schema for the life of the process.
    quick.configure(ignore_response_format=True)
    complete_json()
    complete_json()
    assert formats_asked(quick) == ["json_schema", "json_object", "json_object"]
    clock.now += llm.FORMAT_RETRY_S + 1
    complete_json()  # asked again: ignored again, so given up for twice as long
    assert formats_asked(quick)[3:] == ["json_schema", "json_object"]
    clock.now += llm.FORMAT_RETRY_S + 1
    complete_json()
    assert formats_asked(quick)[5:] == ["json_object"]
    quick.configure(ignore_response_format=False)
    clock.now += llm.FORMAT_RETRY_S + 1
    complete_json()
    complete_json()
    assert formats_asked(quick)[6:] == ["json_schema", "json_schema"]


@pytest.mark.django_db
def test_a_500_naming_response_format_gives_it_up_for_a_while(
    quick: FakeServer, clock: Clock
) -> None:
    quick.faults([{"kind": "500", "message": "error applying response_format: worker restarted"}])
    assert llm.schema_errors(complete_json().data, RATING_SCHEMA) == []
    complete_json()
    assert formats_asked(quick) == ["json_schema", "json_object", "json_object"]
    clock.now += llm.FORMAT_RETRY_S + 1
    complete_json()
    assert formats_asked(quick)[3:] == ["json_schema"]


@pytest.mark.django_db
def test_a_400_that_refuses_json_schema_gives_it_up_for_good(
    quick: FakeServer, clock: Clock
) -> None:
    quick.configure(json_schema=False)
    complete_json()
    clock.now += llm.FORMAT_RETRY_MAX_S * 10
    complete_json()
    assert formats_asked(quick) == ["json_schema", "json_object", "json_object"]


@pytest.mark.django_db
def test_a_vllm_context_learnt_once_fits_later_prompts_without_a_refusal(
    quick: FakeServer, settings: Any
) -> None:
    prompt_tokens = sum(3 + len(m["content"].split()) for m in MESSAGES)
    quick.configure(context_length=prompt_tokens + 300)
    with_max_tokens(settings, "partner", 400)
    complete_text()
    assert [r["status"] for r in quick.requests()] == [400, 200]
    complete_text()
    stream()
    longer = [
        *MESSAGES,
        {"role": "assistant", "content": "No. " * 40},
        {"role": "user", "content": "Then at least on Mondays and Thursdays, please?"},
    ]
    stream(longer)
    assert [r["status"] for r in quick.requests()] == [400, 200, 200, 200, 200]
    fitted = [r["body"]["max_tokens"] for r in quick.requests()[2:]]
    assert all(limit <= 300 for limit in fitted) and fitted[-1] < fitted[0]
    assert last_call().params["fitted_max_tokens"] == fitted[-1]


# --- addresses ----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "hint"),
    [
        ("/v1beta/openai", "/v1beta/openai the server's OpenAI-compatible address?"),
        ("/api", "/api the server's OpenAI-compatible address? Most servers have it at /v1"),
        ("", "may need to end in /v1"),
    ],
)
def test_the_address_hint_on_a_bare_404_fits_the_address(
    quick: FakeServer, settings: Any, path: str, hint: str
) -> None:
    # Gemini's address ends in /v1beta/openai: "may need to end in /v1" would send the operator
    # the wrong way.
    quick.configure(require_v1=True)
    settings.LLM = {**settings.LLM, "base_url": quick.root_url + path}
    with pytest.raises(llm.Misconfigured) as raised:
        complete_text()
    assert hint in raised.value.detail
    if path:
        assert "may need to end in /v1" not in raised.value.detail


def test_a_bare_404_from_gemini_names_its_address() -> None:
    cfg = llm._Config(
        base_url="https://generativelanguage.googleapis.com/v1", api_key="k", provider="openai",
        api_version="", timeout_s=1, max_retries=0, backoff_s=0, http_client="aiohttp",
    )  # fmt: skip
    missing = type("Missing", (), {"body": {"detail": "Not Found"}, "message": "Not Found"})()
    assert "/v1beta/openai" in llm._address_hint(missing, cfg)  # type: ignore[arg-type]


# --- the status line, shared between processes ---------------------------------------------------


def as_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget what this process learnt itself, as a process that never made the calls would."""
    monkeypatch.setattr(llm, "_failing", {})
    monkeypatch.setattr(llm, "_shared", {})
    monkeypatch.setattr(llm, "_shared_read_at", -float("inf"))


@pytest.mark.django_db
def test_a_set_up_failure_met_in_another_process_shows_here_and_so_does_its_end(
    quick: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick.faults(["401"])
    with pytest.raises(llm.Misconfigured):
        complete_json()
    as_another_process(monkeypatch)
    assert not llm.is_working() and "not set up correctly" in llm.status_label()
    complete_json()  # answers here: the shared failure is over
    as_another_process(monkeypatch)
    assert llm.is_working()


@pytest.mark.django_db
def test_the_shared_status_costs_ordinary_calls_nothing_and_pages_one_read_per_interval(
    quick: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[str] = []
    real = llm._redis

    def counted() -> Any:
        used.append("redis")
        return real()

    monkeypatch.setattr(llm, "_redis", counted)
    stream()
    complete_text()
    complete_json()
    assert used == []  # nothing failed: no Redis on a call's way
    assert llm.is_working() and llm.is_working() and len(used) == 1
    real().hset(
        llm.SHARED_FAILING_KEY,
        f"{quick.base_url} feedback",
        json.dumps({"why": "HTTP 401", "at": time.time()}),
    )
    assert llm.is_working()  # not read again yet
    monkeypatch.setattr(llm, "_shared_read_at", llm._shared_read_at - llm.SHARED_READ_S)
    assert not llm.is_working() and len(used) == 2


@pytest.mark.django_db
def test_a_shared_failure_no_process_has_renewed_for_a_while_is_taken_as_over(
    quick: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_ago = time.time() - llm.SHARED_FAILING_S - 1
    llm._redis().hset(
        llm.SHARED_FAILING_KEY,
        f"{quick.base_url} feedback",
        json.dumps({"why": "x", "at": long_ago}),
    )
    as_another_process(monkeypatch)
    assert llm.is_working()


@pytest.mark.django_db
def test_a_whole_reply_that_shows_reasoning_opened_by_the_template_holds_back_the_first_stream(
    quick: FakeServer,
) -> None:
    # The partner's brief (a whole reply, from the same model) comes before its first reply.
    quick.configure(reasoning="think_in_template")
    complete_json()
    deltas, reply = stream()
    assert not reply.revised and "".join(deltas) == reply.text == fake_reply(MESSAGES)
