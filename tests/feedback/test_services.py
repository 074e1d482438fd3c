"""feedback.services in-process: drafts, requests, rating, fallback, delivery, mastery."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext

from feedback import services
from feedback.models import Draft, FeedbackRequest
from feedback.services import FeedbackInputError
from imbue import ratelimit, redis_quiet
from imbue.llm import Retryable
from imbue.models import AdverseEvent, LLMCall
from simulations.models import Conversation, Learner, Message, Situation


@pytest.fixture(autouse=True)
def _fresh_feedback_limits(settings) -> None:
    """Learner ids restart with every test database; their rate-limit windows must too."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}feedback:*"):
        client.delete(key)


DRAFT = "The rent was due on the 1st and it's the 9th. I feel anxious. Please pay by Friday."


def make_conversation(**switches: object) -> Conversation:
    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        situation="My flatmate has paid the rent late three months running.",
        goal="Get my flatmate to pay their half on the 1st.",
    )
    return Conversation.objects.create(learner=learner, situation=situation, **switches)


def ask(conversation: Conversation, text: str = DRAFT, **kwargs: object) -> FeedbackRequest:
    kwargs.setdefault("strategies", ["describe", "assert"])
    return services.request_feedback(conversation=conversation, text=text, **kwargs)


def add_turn(conversation: Conversation, text: str = DRAFT) -> Message:
    seq = conversation.messages.count() + 1
    message = Message.objects.create(
        conversation=conversation, seq=seq, role="learner", text=text, strategies=["describe"]
    )
    Message.objects.create(
        conversation=conversation, seq=seq + 1, role="partner", text="I get paid late, you know."
    )
    return message


def send(conversation: Conversation, text: str = DRAFT) -> Message:
    """Send a message through the chat's own service, then let the partner answer."""
    from simulations.services import record_learner_message

    message = record_learner_message(conversation=conversation, text=text, strategies=["assert"])
    Message.objects.filter(conversation=conversation, seq=message.seq + 1).update(
        state=Message.State.COMPLETE, text="I get paid late, you know."
    )
    return message


def count_offline_ratings(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[str]:
    """The texts `module` rates offline from now on (each still rated): a list that grows."""
    texts: list[str] = []
    real = module.rate_offline

    def counting(**kwargs: Any) -> Any:
        texts.append(kwargs["text"])
        return real(**kwargs)

    monkeypatch.setattr(module, "rate_offline", counting)
    return texts


# --------------------------------------------------------------------------- asking


@pytest.mark.django_db
def test_without_a_model_the_offline_rating_is_the_final_answer_at_once(no_llm):
    conversation = make_conversation()
    feedback = ask(conversation)
    feedback.refresh_from_db()
    assert feedback.status == "done"
    assert feedback.engine == "offline"
    assert feedback.fallback_reason == services.NO_MODEL_REASON
    assert feedback.result == feedback.offline_result
    assert set(feedback.result["skills"]) >= {"describe", "assert", "mindful", "confident"}
    assert feedback.result["chosen"] == ["describe", "assert"]
    assert 0 <= feedback.result["mastery"] <= 2
    assert feedback.draft.text == DRAFT


@pytest.mark.django_db
def test_with_a_model_the_request_is_queued_with_the_offline_rating_and_enqueued_on_commit(
    fake_llm, django_capture_on_commit_callbacks
):
    conversation = make_conversation()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        feedback = ask(conversation)
    feedback.refresh_from_db()
    assert feedback.status == "queued"
    assert feedback.offline_result["engine"] == "offline"
    assert feedback.result == {}
    assert len(callbacks) == 1
    assert fake_llm.requests() == []


@pytest.mark.django_db(transaction=True)  # no test transaction: enqueued at the real commit
def test_when_the_queue_cannot_be_reached_the_offline_rating_is_the_answer(fake_llm, monkeypatch):
    from feedback.tasks import rate_feedback_request

    def queue_away(*args, **kwargs):
        raise ConnectionError("Redis is away")

    monkeypatch.setattr(rate_feedback_request, "apply_async", queue_away)
    ratings = count_offline_ratings(monkeypatch, services)
    feedback = ask(make_conversation())
    assert feedback.status == "done"  # the answer the request itself shows
    assert len(ratings) == 1  # rated once, for the answer (not again as the quick rating)
    feedback.refresh_from_db()
    assert feedback.status == "done" and feedback.engine == "offline"
    assert feedback.fallback_reason == services.QUEUE_DOWN_REASON
    assert feedback.result == feedback.offline_result
    assert set(feedback.result["skills"]) >= {"describe", "assert", "mindful", "confident"}
    assert fake_llm.requests() == []


@pytest.mark.django_db(transaction=True)
def test_while_redis_is_not_answering_the_offline_rating_is_the_answer_at_once(
    fake_llm, monkeypatch
):
    """A Redis call just timed out (`imbue.redis_quiet`): the publish, which would wait for
    Redis four times, is not tried; once Redis answers again requests go to the worker."""
    from feedback.tasks import rate_feedback_request

    published: list[int] = []
    monkeypatch.setattr(
        rate_feedback_request, "apply_async", lambda args, **options: published.append(args[0])
    )
    conversation = make_conversation()
    redis_quiet.note(redis.TimeoutError("Timeout reading from socket"))
    feedback = ask(conversation)
    assert published == []
    feedback.refresh_from_db()
    assert feedback.status == "done" and feedback.engine == "offline"
    assert feedback.fallback_reason == services.QUEUE_DOWN_REASON
    assert feedback.result == feedback.offline_result and feedback.result["skills"]
    redis_quiet.forget()
    again = ask(conversation, "Could you pay your half on the 1st? It would help me a lot.")
    assert published == [again.pk]
    assert fake_llm.requests() == []


@pytest.mark.django_db
def test_a_no_feedback_arm_keeps_the_draft_but_computes_and_sends_nothing(
    fake_llm, django_capture_on_commit_callbacks
):
    conversation = make_conversation(feedback_enabled=False)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        feedback = ask(conversation)
    feedback.refresh_from_db()
    assert feedback.status == "withheld"
    assert feedback.result == {} and feedback.offline_result == {}
    assert callbacks == []
    assert fake_llm.requests() == []
    assert Draft.objects.get().text == DRAFT
    services.rate_request(request_id=feedback.pk)
    feedback.refresh_from_db()
    assert feedback.status == "withheld" and feedback.result == {}
    assert fake_llm.requests() == []


@pytest.mark.django_db
def test_every_draft_and_revision_is_kept_and_linked_to_the_message_it_became(no_llm):
    conversation = make_conversation()
    for n in range(3):
        ask(conversation, text=f"{DRAFT} (version {n})", used_rewrite=n == 2)
    assert list(Draft.objects.values_list("turn", "revision", "used_rewrite")) == [
        (1, 1, False),
        (1, 2, False),
        (1, 3, True),
    ]
    sent = send(conversation, text=f"{DRAFT} (version 2)")
    # Linked as it is sent, not only when the next turn asks for feedback (a last turn never
    # does, and its drafts were once exported as never sent).
    drafts = list(Draft.objects.order_by("pk").values_list("turn", "revision", "sent_message"))
    assert drafts == [(1, 1, sent.pk), (1, 2, sent.pk), (1, 3, sent.pk)]
    ask(conversation)
    drafts = list(Draft.objects.order_by("pk").values_list("turn", "revision", "sent_message"))
    assert drafts == [(1, 1, sent.pk), (1, 2, sent.pk), (1, 3, sent.pk), (2, 1, None)]
    assert FeedbackRequest.objects.count() == 4
    second = send(conversation)
    assert Draft.objects.get(turn=2).sent_message_id == second.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sent_text", "sent_strategies", "reused"),
    [
        (DRAFT, ["describe", "assert"], True),  # the very draft that was rated
        (DRAFT + " Thanks.", ["describe", "assert"], False),  # other words
        (DRAFT, ["assert"], False),  # other skills: the mastery differs
    ],
)
def test_a_sent_message_takes_its_drafts_offline_rating_only_when_it_is_that_draft(
    no_llm, monkeypatch, sent_text, sent_strategies, reused
):
    from feedback.raters import offline
    from simulations import services as chat
    from simulations.services import record_learner_message

    conversation = make_conversation()
    ask(conversation)  # turn 1, rated offline
    send(conversation)
    ask(conversation)  # turn 2: the partner's words are part of what was rated
    asked = FeedbackRequest.objects.latest("pk")
    real = offline.rate_offline
    calls = count_offline_ratings(monkeypatch, chat)
    message = record_learner_message(
        conversation=conversation, text=sent_text, strategies=sent_strategies
    )
    expected = real(
        text=sent_text,
        situation=conversation.situation.situation,
        goal=conversation.situation.goal,
        partner_said="I get paid late, you know.",
        chosen=sent_strategies,
    )
    assert calls == ([] if reused else [sent_text])
    assert message.ratings == expected.levels and message.rating_engine == "offline"
    assert message.mastery == pytest.approx(expected.mastery)
    if reused:
        assert message.ratings == {k: v["level"] for k, v in asked.offline_result["skills"].items()}
    message.refresh_from_db()
    assert message.ratings == expected.levels and message.resistance is not None


@pytest.mark.django_db
def test_each_draft_keeps_the_partners_words_it_answered(no_llm):
    conversation = make_conversation()
    ask(conversation)
    send(conversation)
    ask(conversation)
    assert list(Draft.objects.order_by("pk").values_list("turn", "partner_said")) == [
        (1, ""),
        (2, "I get paid late, you know."),
    ]


@pytest.mark.django_db
def test_the_migration_links_drafts_of_turns_sent_before_sending_linked_them(no_llm):
    from importlib import import_module

    from django.apps import apps

    backfill = import_module("feedback.migrations.0002_draft_partner_said").link_sent_drafts
    conversation = make_conversation()
    ask(conversation)
    first = add_turn(conversation)  # stored as older code did: the draft left unlinked
    ask(conversation)
    last = add_turn(conversation)
    ask(conversation)  # turn 3: drafted, never sent
    Draft.objects.update(sent_message=None)
    backfill(apps, None)
    drafts = list(Draft.objects.order_by("turn").values_list("turn", "sent_message"))
    assert drafts == [(1, first.pk), (2, last.pk), (3, None)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "strategies", "message"),
    [
        ("   ", ["describe"], "Write your message first"),
        ("x" * 2001, ["describe"], "the limit is 2,000"),
        (DRAFT, [], "at least one strategy"),
        (DRAFT, ["describe", "shout"], "from the list"),
    ],
)
def test_bad_drafts_are_refused_with_a_clear_message_and_nothing_stored(
    no_llm, text, strategies, message
):
    conversation = make_conversation()
    with pytest.raises(FeedbackInputError, match=message):
        ask(conversation, text=text, strategies=strategies)
    assert not Draft.objects.exists()


@pytest.mark.django_db
def test_single_strategy_mode_and_ended_conversations_are_refused(no_llm):
    single = make_conversation(strategy_mode="single")
    with pytest.raises(FeedbackInputError, match="exactly one"):
        ask(single)
    assert ask(single, strategies=["assert"]).draft.strategies == ["assert"]
    ended = make_conversation(status="ended")
    with pytest.raises(FeedbackInputError, match="ended"):
        ask(ended)


@pytest.mark.django_db
def test_drafts_are_cleaned_as_sent_messages_are_and_strategies_kept_in_catalogue_order(no_llm):
    conversation = make_conversation()
    with pytest.raises(FeedbackInputError, match="not text"):
        ask(conversation, text="Please\x00 pay.")
    feedback = ask(conversation, text="  Please pay.\r\n ", strategies=["Assert", "describe"])
    assert feedback.draft.text == "Please pay."
    assert feedback.draft.strategies == ["describe", "assert"]


@pytest.mark.django_db
def test_feedback_requests_are_rate_limited_per_learner(no_llm, settings):
    settings.IMBUE = {**settings.IMBUE, "feedback_per_minute": 2}
    conversation = make_conversation()
    ask(conversation)
    ask(conversation)
    with pytest.raises(FeedbackInputError, match="very fast"):
        ask(conversation)
    assert Draft.objects.count() == 2
    ratelimit.reset(f"feedback:{conversation.learner_id}")
    ask(conversation)


@pytest.mark.django_db
def test_a_draft_suggesting_risk_pauses_the_practice_and_reaches_no_model(
    fake_llm, django_capture_on_commit_callbacks
):
    conversation = make_conversation()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        feedback = ask(conversation, text="Honestly I want to kill myself, I can't do this.")
    assert feedback.status == "withheld" and feedback.fallback_reason == services.SAFETY_REASON
    assert feedback.offline_result == {} and callbacks == []
    assert fake_llm.requests() == []
    conversation.refresh_from_db()
    assert conversation.status == "paused"
    event = AdverseEvent.objects.get()
    assert (event.source, event.conversation_id) == ("draft", conversation.pk)
    assert Draft.objects.get().text.startswith("Honestly")


@pytest.mark.django_db
def test_a_spent_token_budget_answers_offline_without_the_worker(
    fake_llm, django_capture_on_commit_callbacks
):
    conversation = make_conversation(token_budget=100)
    LLMCall.objects.create(
        purpose="partner", prompt_name="p", prompt_version="1", prompt_hash="h",
        outcome="ok", tokens_in=90, tokens_out=20, conversation_id=conversation.pk,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        feedback = ask(conversation)
    assert callbacks == []
    assert feedback.status == "done" and feedback.engine == "offline"
    assert feedback.fallback_reason == services.BUDGET_REASON
    assert fake_llm.requests() == []


# --------------------------------------------------------------------------- the worker's part


def queued(fake_llm, django_capture_on_commit_callbacks) -> FeedbackRequest:
    with django_capture_on_commit_callbacks(execute=False):
        return ask(make_conversation(), strategies=["describe", "express", "assert"])


@pytest.mark.django_db
def test_the_model_rates_a_request_in_one_call_and_a_second_run_changes_nothing(
    fake_llm, django_capture_on_commit_callbacks
):
    feedback = queued(fake_llm, django_capture_on_commit_callbacks)
    services.rate_request(request_id=feedback.pk)
    feedback.refresh_from_db()
    assert feedback.status == "done"
    assert feedback.engine == "llm", feedback.fallback_reason
    assert feedback.fallback_reason == ""
    assert set(feedback.result["skills"]) == {
        "describe", "express", "assert", "mindful", "confident",
    }  # fmt: skip
    assert feedback.model_ms > 0
    assert LLMCall.objects.get(pk=feedback.llm_call_id).draft_id == feedback.draft_id
    assert len(fake_llm.requests()) == 1
    first = FeedbackRequest.objects.filter(pk=feedback.pk).values().get()

    services.rate_request(request_id=feedback.pk)
    assert FeedbackRequest.objects.filter(pk=feedback.pk).values().get() == first
    assert len(fake_llm.requests()) == 1


@pytest.mark.django_db
def test_a_retryable_model_failure_is_raised_for_a_retry_then_falls_back_offline(
    fake_llm, django_capture_on_commit_callbacks
):
    feedback = queued(fake_llm, django_capture_on_commit_callbacks)
    fake_llm.faults(rate=1.0, kinds=["500"])
    with pytest.raises(Retryable):
        services.rate_request(request_id=feedback.pk, final_attempt=False)
    feedback.refresh_from_db()
    assert feedback.status == "queued"
    services.rate_request(request_id=feedback.pk, final_attempt=True)
    feedback.refresh_from_db()
    assert feedback.status == "done"
    assert feedback.engine == "offline"
    assert "HTTP 500" in feedback.fallback_reason
    assert feedback.result == feedback.offline_result
    assert feedback.llm_call_id is not None


@pytest.mark.django_db
def test_unusable_model_output_falls_back_offline_without_retrying(
    fake_llm, django_capture_on_commit_callbacks
):
    feedback = queued(fake_llm, django_capture_on_commit_callbacks)
    fake_llm.faults(rate=1.0, kinds=["schema_violation"])
    services.rate_request(request_id=feedback.pk, final_attempt=False)
    feedback.refresh_from_db()
    assert feedback.status == "done" and feedback.engine == "offline"
    assert feedback.fallback_reason.startswith("malformed")


@pytest.mark.django_db
def test_a_worker_without_a_model_answers_with_the_offline_rating(
    fake_llm, django_capture_on_commit_callbacks, settings
):
    feedback = queued(fake_llm, django_capture_on_commit_callbacks)
    settings.LLM = {**settings.LLM, "base_url": None}
    services.rate_request(request_id=feedback.pk, final_attempt=False)
    feedback.refresh_from_db()
    assert feedback.engine == "offline"
    assert feedback.fallback_reason == services.NO_MODEL_REASON
    assert fake_llm.requests() == []


# --------------------------------------------------------------------------- delivery


@pytest.mark.django_db
def test_viewing_records_request_to_display_latency_once_and_only_for_the_owner(no_llm):
    feedback = ask(make_conversation())
    other = make_conversation()
    assert not services.mark_viewed(conversation_id=other.pk, request_id=feedback.pk)
    assert services.mark_viewed(
        conversation_id=feedback.draft.conversation_id, request_id=feedback.pk
    )
    feedback.refresh_from_db()
    first = feedback.viewed_at
    assert feedback.latency_ms == pytest.approx(
        (feedback.viewed_at - feedback.requested_at).total_seconds() * 1000
    )
    assert not services.mark_viewed(
        conversation_id=feedback.draft.conversation_id, request_id=feedback.pk
    )
    feedback.refresh_from_db()
    assert feedback.viewed_at == first


@pytest.mark.django_db
def test_a_viewed_report_reads_two_timestamps_not_the_ratings(no_llm):
    # Every panel shown is reported: its read must not fetch (and decode) the ratings' JSON.
    feedback = ask(make_conversation())
    assert feedback.result and feedback.offline_result
    with CaptureQueriesContext(connection) as queries:
        assert services.mark_viewed(
            conversation_id=feedback.draft.conversation_id, request_id=feedback.pk
        )
    assert len(queries) == 2  # the read, the update
    read = queries[0]["sql"]
    assert read.startswith("SELECT") and "viewed_at" in read
    assert "result" not in read and '"text"' not in read


@pytest.mark.django_db
def test_a_late_answer_to_an_older_draft_is_not_delivered_over_a_newer_one(no_llm):
    conversation = make_conversation()
    older = ask(conversation)
    assert services.deliverable_request(conversation_id=conversation.pk, request_id=older.pk)
    newer = ask(conversation, text=DRAFT + " Thanks.")
    assert (
        services.deliverable_request(conversation_id=conversation.pk, request_id=older.pk) is None
    )
    assert services.latest_request(conversation) == newer
    assert (
        services.deliverable_request(conversation_id=make_conversation().pk, request_id=newer.pk)
        is None
    )
    add_turn(conversation)
    assert services.latest_request(conversation) is None


@pytest.mark.django_db
def test_delivery_is_recorded_once(no_llm):
    feedback = ask(make_conversation())
    services.mark_delivered(request_id=feedback.pk)
    feedback.refresh_from_db()
    first = feedback.delivered_at
    assert first is not None
    services.mark_delivered(request_id=feedback.pk)
    feedback.refresh_from_db()
    assert feedback.delivered_at == first


# --------------------------------------------------------------------------- mastery


def test_message_mastery_counts_chosen_strategies_and_both_states():
    message = Message(
        role="learner",
        strategies=["describe"],
        ratings={
            "describe": "strong", "express": "none", "assert": "none", "reinforce": "none",
            "negotiate": "none", "mindful": "yes", "confident": "no",
        },
    )  # fmt: skip
    assert services.message_mastery(message) == pytest.approx((2 + 2 + 0) / 3)
    assert services.message_mastery(Message(role="partner", ratings=message.ratings)) is None
    assert services.message_mastery(Message(role="learner", ratings={})) is None


@pytest.mark.django_db
def test_conversation_mastery_is_the_mean_over_rated_messages_and_per_skill():
    conversation = make_conversation()
    levels = {"describe": "weak", "assert": "strong", "mindful": "yes", "confident": "yes"}
    Message.objects.create(
        conversation=conversation, seq=1, role="learner", text="a",
        strategies=["describe"], ratings=levels,
    )  # fmt: skip
    Message.objects.create(conversation=conversation, seq=2, role="partner", text="b")
    Message.objects.create(
        conversation=conversation, seq=3, role="learner", text="c",
        strategies=["assert"], ratings={**levels, "mindful": "no"},
    )  # fmt: skip
    result = services.conversation_mastery(conversation)
    assert result.messages == 2
    assert result.overall == pytest.approx(((1 + 2 + 2) / 3 + (2 + 0 + 2) / 3) / 2)
    assert result.per_skill == {"describe": 1, "assert": 2, "mindful": 1, "confident": 2}
    assert services.conversation_mastery(make_conversation()).overall is None


@pytest.mark.django_db
def test_rate_messages_with_model_upgrades_each_sent_learner_message_once(fake_llm):
    conversation = make_conversation()
    offline = {k: "none" for k in ("describe", "express", "assert", "reinforce", "negotiate")}
    offline.update(mindful="yes", confident="yes")
    Message.objects.create(
        conversation=conversation, seq=1, role="learner", text=DRAFT,
        strategies=["describe", "assert"], ratings=offline, rating_engine="offline",
    )  # fmt: skip
    Message.objects.create(conversation=conversation, seq=2, role="partner", text="Not now.")
    assert services.rate_messages_with_model(conversation) == 1
    message = conversation.messages.get(seq=1)
    assert message.rating_engine == "llm"
    assert message.ratings["reinforce"] == "none"  # not chosen: the offline level remains
    assert message.mastery == pytest.approx(services.message_mastery(message))
    assert services.rate_messages_with_model(conversation) == 0
    assert len(fake_llm.requests()) == 1
