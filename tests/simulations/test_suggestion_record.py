"""Every "suggest a skill" answer shown is on record (SkillSuggestion): where the chat stood when
it was asked, the skill, the sentence shown, the engine and model, and the model call behind it.

`suggest.recorded` does the storing around `services.asuggest_skill`, the service that the chat
page without JavaScript and the socket both go through."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync

from imbue.models import LLMCall
from simulations import services, suggest
from simulations.models import SkillSuggestion
from tests.simulations.test_services import STRONG, reply_to, start

pytestmark = pytest.mark.django_db(transaction=True)

ask = async_to_sync(services.asuggest_skill)


@pytest.fixture(autouse=True)
def no_rate_limit(settings: Any) -> None:
    settings.IMBUE = {**settings.IMBUE, "messages_per_minute": 0}


def say(conversation: Any, turn: int = 0) -> None:
    strategies, text = STRONG[turn]
    services.record_learner_message(conversation=conversation, text=text, strategies=strategies)
    reply_to(conversation)


def test_each_suggestion_is_stored_where_the_chat_stood(no_llm: None) -> None:
    conversation = start()
    first = ask(conversation=conversation)
    say(conversation)
    later = ask(conversation=conversation)
    rows = list(SkillSuggestion.objects.filter(conversation=conversation))
    assert [(r.turn, r.after_seq, r.skill, r.reason, r.engine) for r in rows] == [
        (1, 0, "describe", first.reason, "rule"),
        (2, 2, later.skill, later.reason, "offline"),
    ]
    assert all(r.model == "" and r.llm_call_id is None for r in rows)
    assert rows[0].created_at <= rows[1].created_at


def test_a_model_suggestion_names_its_model_and_call(fake_llm: Any) -> None:
    conversation = start()
    say(conversation)
    shown = ask(conversation=conversation)
    assert shown.engine == "llm"
    row = SkillSuggestion.objects.get(conversation=conversation)
    call = LLMCall.objects.get(conversation_id=conversation.pk, purpose="suggestion")
    assert (row.engine, row.skill, row.reason) == ("llm", shown.skill, shown.reason)
    assert (row.llm_call_id, row.model) == (call.pk, call.model) and row.model
    # The next one names its own call, not the first.
    say(conversation, 1)
    ask(conversation=conversation)
    calls = list(
        LLMCall.objects.filter(conversation_id=conversation.pk, purpose="suggestion")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    recorded = list(
        SkillSuggestion.objects.filter(conversation=conversation).values_list(
            "llm_call_id", flat=True
        )
    )
    assert recorded == calls and len(set(calls)) == 2


def test_when_the_model_fails_the_rules_answer_and_the_failed_call_is_named(
    fake_llm: Any,
) -> None:
    conversation = start()
    say(conversation)
    fake_llm.faults(["500", "500", "500"])
    shown = ask(conversation=conversation)
    row = SkillSuggestion.objects.get(conversation=conversation)
    call = LLMCall.objects.get(conversation_id=conversation.pk, purpose="suggestion")
    assert shown.engine == "offline" and call.outcome != LLMCall.Outcome.OK
    assert (row.engine, row.model, row.llm_call_id) == ("offline", "", call.pk)


def test_nothing_is_stored_when_suggestions_are_off(no_llm: None) -> None:
    conversation = start(suggestion_enabled=False)
    with pytest.raises(services.ConversationError):
        ask(conversation=conversation)
    assert not SkillSuggestion.objects.exists()


@pytest.mark.parametrize("status", ["ended", "limit", "agreed", "paused"])
def test_a_closed_chat_gets_no_suggestion_no_model_call_and_nothing_stored(
    fake_llm: Any, status: str
) -> None:
    conversation = start()
    say(conversation)
    conversation.status = status
    conversation.save(update_fields=["status"])
    calls = LLMCall.objects.filter(purpose="suggestion")
    with pytest.raises(services.ConversationError) as refused:
        ask(conversation=conversation)
    if status == "paused":
        assert refused.value.user_message == services.SUGGESTION_PAUSED
    else:
        assert refused.value.user_message == services.SUGGESTION_ENDED
    assert not SkillSuggestion.objects.exists() and not calls.exists()
    assert not [r for r in fake_llm.requests() if r["purpose"] == "suggestion"]


def test_a_failure_to_store_still_shows_the_suggestion(
    no_llm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(suggest, "record_suggestion", broken)
    shown = ask(conversation=start())
    assert shown.skill == "describe" and not SkillSuggestion.objects.exists()


def test_suggestions_belong_to_their_conversation_only(no_llm: None) -> None:
    mine, theirs = start(), start()
    ask(conversation=mine)
    ask(conversation=mine)
    assert SkillSuggestion.objects.filter(conversation=mine).count() == 2
    assert not SkillSuggestion.objects.filter(conversation=theirs).exists()
    assert not SkillSuggestion.objects.filter(conversation__learner=theirs.learner).exists()
    # They go with the conversation (a study's withdrawal deletes the learner's conversations).
    mine.delete()
    assert not SkillSuggestion.objects.exists()


def test_the_chat_service_records_what_it_suggests(no_llm: None) -> None:
    # The page without JavaScript and the socket both call services.(a)suggest_skill.
    conversation = start()
    shown = services.suggest_skill(conversation=conversation)
    row = SkillSuggestion.objects.get(conversation=conversation)
    assert (row.skill, row.reason, row.engine) == (shown.skill, shown.reason, shown.engine)


def test_a_spent_token_budget_gets_the_written_rules_and_no_model_call(fake_llm: Any) -> None:
    # Pressing "Suggest a skill" again and again must not spend past the conversation's budget:
    # the partner and the feedback stop calling the model there, and so must the suggestions.
    conversation = start()
    say(conversation)
    assert conversation.partner_engine == "llm"
    conversation.token_budget = 1  # the persona and partner calls have spent more than this
    conversation.save(update_fields=["token_budget"])
    shown = [ask(conversation=conversation) for _ in range(3)]
    assert [s.engine for s in shown] == ["offline"] * 3
    assert not LLMCall.objects.filter(purpose="suggestion").exists()
    assert not [r for r in fake_llm.requests() if r["purpose"] == "suggestion"]
    rows = SkillSuggestion.objects.filter(conversation=conversation)
    assert [r.engine for r in rows] == ["offline"] * 3
