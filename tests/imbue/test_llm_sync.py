"""The gateway's synchronous calls: one long-lived loop and client, the record in the caller's
transaction, and no pooled database connection held while the model answers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections, transaction

from imbue import llm
from imbue.models import LLMCall
from tests.fakes.llm_server import FakeServer

PROMPT = llm.Prompt(name="test.sync", version="1", template="Rate this.")
MESSAGES = [{"role": "user", "content": "Could you please do the dishes tonight?"}]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"level": {"type": "string", "enum": ["strong", "weak", "none"]}},
    "required": ["level"],
    "additionalProperties": False,
}


def ask() -> llm.Reply:
    return llm.complete_json_sync(
        purpose="feedback", messages=MESSAGES, schema=SCHEMA, schema_name="rating", prompt=PROMPT
    )


@pytest.mark.django_db
def test_sync_calls_reuse_one_loop_and_one_client(fake_llm: FakeServer) -> None:
    first, second = ask(), ask()
    assert first.outcome == second.outcome == "ok"
    assert first.data["level"] in ("strong", "weak", "none") and first.data == second.data
    loop = llm._shared_loop()
    assert loop.is_running()
    cfg = llm._config()
    clients = [entry[1] for key, entry in llm._clients.items() if key == (id(loop), cfg)]
    # One client, made once, on the shared loop (async_to_sync made one per call, with its own
    # TLS context and connections).
    assert len(clients) == 1
    assert threading.current_thread() is not next(
        t for t in threading.enumerate() if t.name == "llm-gateway"
    )


@pytest.mark.django_db
def test_the_record_joins_the_callers_transaction(fake_llm: FakeServer) -> None:
    before = LLMCall.objects.count()

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        reply = ask()
        assert LLMCall.objects.filter(pk=reply.call_id, outcome="ok").exists()
        raise Undo
    # Rolled back with the caller's work: the row was written on the caller's connection.
    assert LLMCall.objects.count() == before


@pytest.mark.django_db
def test_failures_are_recorded_in_the_callers_transaction(
    fake_llm: FakeServer, settings: Any
) -> None:
    settings.LLM = {**settings.LLM, "max_retries": 0}
    fake_llm.faults(["500"])
    with transaction.atomic():
        with pytest.raises(llm.GaveUp) as raised:
            ask()
        call = LLMCall.objects.get(pk=raised.value.call_id)
        assert call.outcome == "gave_up" and call.purpose == "feedback" and call.attempts == 1
        transaction.set_rollback(True)
    assert not LLMCall.objects.filter(pk=raised.value.call_id).exists()


@pytest.mark.django_db(transaction=True)
def test_a_pooled_connection_is_handed_back_while_the_model_answers(
    fake_llm: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    LLMCall.objects.exists()  # this thread now holds a connection
    assert connection.connection is not None
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {"pool": {"max_size": 2}})
    seen: list[object] = []
    real = llm._on_shared_loop

    def watch(coroutine: Any) -> Any:
        seen.append(connection.connection)  # what the thread holds while the model answers
        return real(coroutine)

    monkeypatch.setattr(llm, "_on_shared_loop", watch)
    reply = ask()
    assert seen == [None]
    assert LLMCall.objects.filter(pk=reply.call_id).exists()  # recorded on a fresh connection


@pytest.mark.django_db
def test_a_connection_inside_a_transaction_is_kept(
    fake_llm: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {"pool": {"max_size": 2}})
    with transaction.atomic():
        held = connection.connection
        ask()
        assert connection.connection is held


@pytest.mark.django_db(transaction=True)
def test_a_sync_caller_of_the_async_call_hands_its_connection_back_too(
    fake_llm: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view writing a partner's brief through async_to_sync(complete_json) held a pooled
    connection for the whole model call; a burst of conversation starts emptied the pool."""
    from asgiref.sync import async_to_sync

    LLMCall.objects.exists()
    mine = connections["default"]  # this thread's wrapper (the coroutine runs on another thread)
    assert mine.connection is not None
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {"pool": {"max_size": 2}})
    seen: list[object] = []
    real = llm._json_conversation

    async def watch(*args: Any, **kwargs: Any) -> Any:
        seen.append(mine.connection)  # the caller's connection, as the model answers
        return await real(*args, **kwargs)

    monkeypatch.setattr(llm, "_json_conversation", watch)
    reply = async_to_sync(llm.complete_json)(
        purpose="feedback", messages=MESSAGES, schema=SCHEMA, schema_name="rating", prompt=PROMPT
    )
    assert seen == [None]
    assert LLMCall.objects.filter(pk=reply.call_id).exists()
