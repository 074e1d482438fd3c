"""simulations.services: starting, sending, the partner's reply, check-ins, suggestions.

Replies are written through the same async path the socket uses (`generate_partner_reply`), so
these tests use committed data (`transaction=True`).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from imbue import ratelimit
from imbue.models import AdverseEvent, LLMCall
from simulations import services
from simulations.models import Conversation, EmotionCheckin, Learner, Message, Situation

pytestmark = pytest.mark.django_db(transaction=True)

STRONG = [
    (
        ["describe", "express", "assert"],
        "You have come home after midnight on 4 of the last 7 nights without texting. I feel "
        "worried when I don't know where you are. Please text me by 10 pm if you'll be late.",
    ),
    (
        ["assert", "reinforce", "negotiate"],
        "I'd like a text by 10 pm on nights you'll be late. Then I can stop calling you, and "
        "you get to stay out without me checking in. What if we try it for two weeks?",
    ),
    (
        ["express", "assert", "negotiate"],
        "I hear that you feel checked on. I feel anxious when midnight comes and there's no "
        "word. Please send one text by 10 pm. How about we try it for two weeks?",
    ),
]
ATTACK = (["assert"], "You always do this, you are so selfish. Just text me, idiot!")


@pytest.fixture(autouse=True)
def no_rate_limit(settings) -> None:
    # Learner ids repeat across runs while Redis keeps the last minute's hits.
    settings.IMBUE = {**settings.IMBUE, "messages_per_minute": 0}


def make_situation(learner: Learner | None = None, difficulty: int = 5) -> Situation:
    return Situation.objects.create(
        learner=learner,
        situation="My teenage son came home after midnight four times this week without texting.",
        goal="Get him to text me by 10 pm when he will be late.",
        category="family",
        difficulty=difficulty,
    )


def start(**options: object) -> Conversation:
    learner = Learner.objects.create()
    return services.start_conversation(
        learner=learner, situation=make_situation(learner), options=options or None
    )


def reply_to(conversation: Conversation) -> Message:
    """Write the pending reply the way the socket does, and return it."""
    pending = conversation.messages.filter(role=Message.Role.PARTNER).order_by("-seq").first()
    async_to_sync(services.generate_partner_reply)(message_id=pending.pk)
    pending.refresh_from_db()
    return pending


def test_start_without_a_model_uses_defaults_and_the_offline_brief(no_llm: None, settings) -> None:
    settings.IMBUE = {**settings.IMBUE, "max_messages": 7, "max_message_chars": 500}
    conversation = start()
    assert conversation.partner_engine == Conversation.Engine.OFFLINE
    assert conversation.partner_brief["source"] == "offline"
    assert conversation.partner_brief["relationship"] == "the learner's child, a teenager"
    assert conversation.max_messages == 7 and conversation.max_message_chars == 500
    assert conversation.resistance_start == pytest.approx(0.25 + 0.075 * 5)
    assert not LLMCall.objects.exists()


def test_start_with_a_model_writes_the_brief_through_the_persona_purpose(fake_llm) -> None:
    conversation = start()
    assert conversation.partner_engine == Conversation.Engine.LLM
    brief = conversation.partner_brief
    assert brief["source"] == "llm" and brief["objections"]
    call = LLMCall.objects.get(pk=brief["llm_call_id"])
    assert call.purpose == "persona" and call.conversation_id == conversation.pk
    assert [r["purpose"] for r in fake_llm.requests()] == ["persona"]


def test_a_failing_persona_call_falls_back_to_the_offline_brief_and_says_why(fake_llm) -> None:
    fake_llm.faults(["500", "500", "500"])
    conversation = start()
    brief = conversation.partner_brief
    assert brief["source"] == "offline"
    assert "500" in brief["fallback_reason"]
    assert brief["relationship"]
    # The partner itself still uses the model: the failure may pass.
    assert conversation.partner_engine == Conversation.Engine.LLM


def test_options_set_the_switches_and_unknown_options_are_refused(no_llm: None) -> None:
    conversation = start(
        max_messages=3,
        strategy_mode="single",
        feedback_enabled=False,
        adaptive_enabled=False,
    )
    assert conversation.max_messages == 3
    assert conversation.strategy_mode == "single"
    assert not conversation.feedback_enabled
    assert conversation.resistance_start is None
    with pytest.raises(ValueError):
        start(colour="blue")
    assert start(resistance_start=0.5).resistance_start == 0.5


def test_an_embedding_page_is_remembered_only_as_a_path_on_this_site(no_llm: None) -> None:
    learner = Learner.objects.create()
    conversation = services.start_conversation(
        learner=learner,
        situation=make_situation(learner),
        kind=Conversation.Kind.EVALUATION,
        return_url="/s/trial/step/eval_s1_pre/#study-continue",
        return_label="Continue to the next step",
        support_text="Call the study team on 0000.",
    )
    conversation.refresh_from_db()
    assert conversation.return_url == "/s/trial/step/eval_s1_pre/#study-continue"
    assert conversation.return_label == "Continue to the next step"
    assert conversation.support_text == "Call the study team on 0000."
    context = services.chat_context(conversation)
    assert context["next_url"] == conversation.return_url
    assert context["next_label"] == "Continue to the next step"
    for unsafe in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)", "s/x/"):
        with pytest.raises(ValueError):
            services.start_conversation(
                learner=learner, situation=make_situation(learner), return_url=unsafe
            )


def test_a_conversation_that_may_not_be_ended_early_refuses_the_learners_end(
    no_llm: None,
) -> None:
    conversation = start(end_enabled=False)
    assert not conversation.end_enabled
    with pytest.raises(services.ConversationError, match="ends when they agree"):
        services.end_conversation(conversation=conversation)
    conversation.refresh_from_db()
    assert conversation.is_open and conversation.ended_at is None
    # Its natural ends still close it.
    conversation = start(end_enabled=False, max_messages=1)
    services.record_learner_message(conversation=conversation, text="Please.", strategies="assert")
    reply_to(conversation)
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.LIMIT


def test_a_sent_message_is_stored_rated_and_the_reply_queued(no_llm: None) -> None:
    conversation = start()
    strategies, text = STRONG[0]
    message = services.record_learner_message(
        conversation=conversation, text=f"  {text}\r\n", strategies=strategies
    )
    message.refresh_from_db()
    assert message.seq == 1 and message.text == text
    assert message.strategies == strategies
    assert set(message.ratings) == {
        "describe", "express", "assert", "reinforce", "negotiate", "mindful", "confident"
    }  # fmt: skip
    assert message.rating_engine == "offline"
    assert 0 <= message.mastery <= 2
    assert message.resistance < conversation.resistance_start
    assert message.resistance_reasons
    reply = conversation.messages.get(seq=2)
    assert reply.role == Message.Role.PARTNER and reply.state == Message.State.PENDING


@pytest.mark.parametrize(
    ("switches", "text", "strategies", "problem"),
    [
        ({}, "", ["assert"], "Write a message first"),
        ({}, "x" * 201, ["assert"], "the limit is 200"),
        ({}, "Please text me.", [], "at least one skill"),
        ({}, "Please text me.", ["shout"], "from the list"),
        ({"strategy_mode": "single"}, "Please text me.", ["assert", "express"], "exactly one"),
    ],
)
def test_invalid_messages_are_refused_with_a_plain_reason(
    no_llm: None, switches: dict, text: str, strategies: list[str], problem: str
) -> None:
    conversation = start(max_message_chars=200, **switches)
    with pytest.raises(services.ConversationError) as caught:
        services.record_learner_message(conversation=conversation, text=text, strategies=strategies)
    assert problem in caught.value.user_message
    assert not conversation.messages.exists()


def test_no_message_while_a_reply_is_in_flight_or_failed_or_after_the_end(no_llm: None) -> None:
    conversation = start()
    services.record_learner_message(conversation=conversation, text="Hi.", strategies=["assert"])
    with pytest.raises(services.ConversationError, match="Wait for their reply"):
        services.record_learner_message(conversation=conversation, text="Hi?", strategies="assert")
    conversation.messages.filter(seq=2).update(state=Message.State.FAILED)
    with pytest.raises(services.ConversationError, match="Try again"):
        services.record_learner_message(conversation=conversation, text="Hi?", strategies="assert")
    services.end_conversation(conversation=conversation)
    with pytest.raises(services.ConversationError, match="ended"):
        services.record_learner_message(conversation=conversation, text="Hi?", strategies="assert")
    assert conversation.messages.filter(role="learner").count() == 1


def test_the_message_is_kept_when_the_rater_breaks(no_llm: None, monkeypatch) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("rater bug")

    monkeypatch.setattr(services, "rate_offline", broken)
    conversation = start()
    message = services.record_learner_message(
        conversation=conversation, text="Please text me by ten.", strategies=["assert"]
    )
    message.refresh_from_db()
    assert message.text == "Please text me by ten." and message.ratings == {}
    assert reply_to(conversation).state == Message.State.COMPLETE


def test_ratings_are_stored_as_plain_str_even_when_the_rater_returns_numpy(
    no_llm: None, monkeypatch
) -> None:
    levels = {skill: np.str_("weak") for skill in services.SKILLS}

    def numpy_rater(**kwargs: object) -> SimpleNamespace:
        return SimpleNamespace(levels=levels, engine=np.str_("offline"), mastery=np.float64(1.0))

    monkeypatch.setattr(services, "rate_offline", numpy_rater)
    conversation = start()
    message = services.record_learner_message(
        conversation=conversation, text="Please text me by ten.", strategies=["assert"]
    )
    assert {type(level) for level in message.ratings.values()} == {str}
    assert all(type(skill) is str for skill in message.ratings)
    assert type(message.rating_engine) is str and type(message.mastery) is float
    message.refresh_from_db()
    assert message.ratings == dict.fromkeys(services.SKILLS, "weak")


def test_messages_per_minute_are_limited(no_llm: None, settings) -> None:
    settings.IMBUE = {**settings.IMBUE, "messages_per_minute": 2}
    conversation = start()
    ratelimit.reset(f"messages:{conversation.learner_id}")
    for _ in range(2):
        services.record_learner_message(conversation=conversation, text="Hi.", strategies="assert")
        reply_to(conversation)
    with pytest.raises(services.ConversationError, match="very fast"):
        services.record_learner_message(conversation=conversation, text="Hi.", strategies="assert")


def test_offline_partner_answers_in_character_and_the_conversation_reaches_its_limit(
    no_llm: None,
) -> None:
    conversation = start(max_messages=2)
    for strategies, text in STRONG[:2]:
        services.record_learner_message(conversation=conversation, text=text, strategies=strategies)
        reply = reply_to(conversation)
        assert reply.state == Message.State.COMPLETE and reply.text
        assert "<<" not in reply.text and reply.attempts == 1
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.LIMIT
    assert conversation.ended_at is not None


def test_adaptive_resistance_falls_across_strong_messages_and_rises_after_an_attack(
    no_llm: None,
) -> None:
    conversation = start(resistance_start=0.9)
    levels = [conversation.resistance_start]
    for strategies, text in [*STRONG, ATTACK]:
        message = services.record_learner_message(
            conversation=conversation, text=text, strategies=strategies
        )
        message.refresh_from_db()
        levels.append(message.resistance)
        reply_to(conversation)
    stored = list(
        conversation.messages.filter(role="learner")
        .order_by("seq")
        .values_list("resistance", flat=True)
    )
    assert stored == levels[1:]
    assert levels[1] < levels[0] and levels[2] < levels[1] and levels[3] < levels[2]
    assert levels[4] > levels[3]
    reasons = (
        conversation.messages.filter(role="learner").order_by("-seq").first().resistance_reasons
    )
    assert any("attacked" in reason for reason in reasons)


def test_switched_off_resistance_stores_no_levels(no_llm: None) -> None:
    conversation = start(adaptive_enabled=False)
    message = services.record_learner_message(
        conversation=conversation, text=STRONG[0][1], strategies=STRONG[0][0]
    )
    message.refresh_from_db()
    assert message.resistance is None and message.resistance_reasons == []


def test_a_reply_is_written_once_even_if_asked_twice(fake_llm) -> None:
    conversation = start()
    services.record_learner_message(conversation=conversation, text="Please.", strategies="assert")
    first = reply_to(conversation)
    async_to_sync(services.generate_partner_reply)(message_id=first.pk)
    first.refresh_from_db()
    assert first.attempts == 1
    assert [r["purpose"] for r in fake_llm.requests()].count("partner") == 1


def test_a_reply_whose_stream_redis_stops_taking_is_stored_whole_once(
    fake_llm, monkeypatch, settings
) -> None:
    # Redis stops answering while the reply streams (a frozen server, a dead network path): the
    # stream stops there and the reply is still written, stored whole and not asked for again.
    import redis

    from imbue import redis_quiet

    settings.IMBUE = {**settings.IMBUE, "stream_flush_ms": 0}  # a push per piece
    pushed: list[str] = []
    push = services._push

    async def push_until_redis_stops(job, text: str, lost) -> None:
        if pushed:
            raise redis.TimeoutError("Timeout reading from socket")
        pushed.append(text)
        await push(job, text, lost)

    monkeypatch.setattr(services, "_push", push_until_redis_stops)
    noted: list[BaseException] = []
    note = redis_quiet.note
    monkeypatch.setattr(redis_quiet, "note", lambda error: noted.append(error) or note(error))
    fake_llm.configure(tokens_per_s=400)  # pieces one by one
    conversation = start()
    strategies, text = STRONG[0]
    services.record_learner_message(conversation=conversation, text=text, strategies=strategies)
    reply = reply_to(conversation)
    assert reply.state == Message.State.COMPLETE and reply.attempts == 1
    assert len(pushed) == 1 and reply.text.startswith(pushed[0].strip())
    assert len(reply.text) > len(pushed[0])
    assert [r["purpose"] for r in fake_llm.requests()].count("partner") == 1
    # The timeout was noted (the calls with a fallback took it) until the reply's announcement
    # reached Redis.
    assert noted and not redis_quiet.quiet()


def test_a_model_failure_keeps_the_learner_message_and_retry_writes_the_reply(fake_llm) -> None:
    conversation = start()
    fake_llm.faults(["503", "503", "503"])
    services.record_learner_message(conversation=conversation, text="Please.", strategies="assert")
    failed = reply_to(conversation)
    assert failed.state == Message.State.FAILED
    assert "try again" in failed.error.lower()
    assert conversation.messages.get(seq=1).text == "Please."
    services.retry_and_wait(conversation=conversation)
    failed.refresh_from_db()
    assert failed.state == Message.State.COMPLETE and failed.text and failed.attempts == 2
    assert failed.llm_call_id is not None


def test_a_spent_token_budget_hands_the_conversation_to_the_offline_partner(fake_llm) -> None:
    conversation = start(token_budget=1)  # the persona call alone spends it
    services.record_learner_message(conversation=conversation, text="Please.", strategies="assert")
    reply = reply_to(conversation)
    conversation.refresh_from_db()
    assert reply.state == Message.State.COMPLETE and reply.llm_call_id is None
    assert conversation.partner_engine == Conversation.Engine.OFFLINE
    assert "budget" in conversation.partner_brief["partner_fallback_reason"]
    assert "partner" not in [r["purpose"] for r in fake_llm.requests()]
    # What the page says matches what happened: the offline partner goes on answering.
    note = services.chat_context(conversation)["budget_note"]
    assert note == ratelimit.BUDGET_USED_UP and "offline partner answers" in note
    assert services.chat_context(start())["budget_note"] == ""


def test_the_agreement_marker_ends_the_conversation_and_is_never_stored(fake_llm) -> None:
    conversation = start()
    services.record_learner_message(
        conversation=conversation, text="Would you text me by ten? #agree", strategies="assert"
    )
    reply = reply_to(conversation)
    conversation.refresh_from_db()
    assert reply.agreed and "AGREE" not in reply.text
    assert conversation.status == Conversation.Status.AGREED and conversation.ended_at


def test_checkins_are_tied_to_the_last_message_and_validated(no_llm: None) -> None:
    conversation = start()
    before = services.record_checkin(conversation=conversation, phase="before", intensity="7")
    assert (before.after_seq, before.intensity) == (0, 7)
    with pytest.raises(services.ConversationError):
        services.record_checkin(conversation=conversation, phase="before", intensity=5)
    with pytest.raises(services.ConversationError):
        services.record_checkin(conversation=conversation, phase="after", intensity=5)
    for bad in ("11", "-1", "seven", "1_0", "+5", "\u0665", "5.0", True, 2**80, ""):
        with pytest.raises(services.ConversationError):
            services.record_checkin(conversation=conversation, phase="midway", intensity=bad)
    services.record_learner_message(conversation=conversation, text="Please.", strategies="assert")
    reply_to(conversation)
    midway = services.record_checkin(conversation=conversation, phase="midway", intensity=5)
    assert midway.after_seq == 2
    services.end_conversation(conversation=conversation)
    after = services.record_checkin(conversation=conversation, phase="after", intensity=3)
    assert after.after_seq == 2
    assert EmotionCheckin.objects.filter(conversation=conversation).count() == 3


def test_suggestion_is_describe_first_then_from_rules_without_a_model(no_llm: None) -> None:
    conversation = start()
    first = services.suggest_skill(conversation=conversation)
    assert (first.skill, first.engine) == ("describe", "rule")
    services.record_learner_message(
        conversation=conversation, text=STRONG[0][1], strategies=["describe"]
    )
    reply_to(conversation)
    later = services.suggest_skill(conversation=conversation)
    assert later.engine == "offline" and later.skill in services.STRATEGY_HINTS and later.reason


def test_suggestion_uses_the_model_after_the_first_message(fake_llm) -> None:
    conversation = start()
    services.record_learner_message(conversation=conversation, text="Please.", strategies="assert")
    reply_to(conversation)
    suggestion = services.suggest_skill(conversation=conversation)
    assert suggestion.engine == "llm" and suggestion.skill in services.STRATEGY_HINTS
    assert LLMCall.objects.filter(purpose="suggestion", conversation_id=conversation.pk).exists()


def test_suggestion_can_be_switched_off(no_llm: None) -> None:
    conversation = start(suggestion_enabled=False)
    with pytest.raises(services.ConversationError):
        services.suggest_skill(conversation=conversation)


@pytest.mark.asyncio
async def test_a_reply_lost_before_it_was_queued_is_written_on_the_next_connect(
    no_llm: None,
) -> None:
    conversation = await database_sync_to_async(start)()
    message = await database_sync_to_async(services.record_learner_message)(
        conversation=conversation, text="Please.", strategies="assert"
    )
    # As if the process died between storing the message and queuing the reply.
    await Message.objects.filter(conversation=conversation, seq=message.seq + 1).adelete()
    reply_id = await services.ensure_partner_reply(conversation_id=conversation.pk)
    await asyncio.wait_for(asyncio.gather(*services._running), 10)
    reply = await Message.objects.aget(pk=reply_id)
    assert reply.seq == message.seq + 1 and reply.state == Message.State.COMPLETE


def test_a_message_suggesting_risk_pauses_the_practice_and_never_reaches_the_model(
    fake_llm,
) -> None:
    conversation = start()
    services.record_learner_message(conversation=conversation, text="Please.", strategies="assert")
    reply_to(conversation)
    message = services.record_learner_message(
        conversation=conversation,
        text="Honestly I want to kill myself, I can't do this any more.",
        strategies=["express"],
    )
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.PAUSED
    assert Message.objects.get(pk=message.pk).text.startswith("Honestly")
    event = AdverseEvent.objects.get()
    assert (event.conversation_id, event.message_id) == (conversation.pk, message.pk)
    assert event.learner_id == conversation.learner_id and event.category == "self_harm"
    assert not conversation.messages.filter(seq__gt=message.seq).exists()
    assert async_to_sync(services.ensure_partner_reply)(conversation_id=conversation.pk) is None
    assert not conversation.messages.filter(seq__gt=message.seq).exists()
    partner_prompts = [r for r in fake_llm.requests() if r["purpose"] == "partner"]
    assert len(partner_prompts) == 1
    assert all("kill myself" not in str(r["body"]) for r in fake_llm.requests())
    context = services.chat_context(conversation)
    assert "988" in context["support_text"] and not context["can_send"]


def test_a_pause_shows_the_support_text_the_conversation_was_started_with(no_llm: None) -> None:
    learner = Learner.objects.create()
    conversation = services.start_conversation(
        learner=learner, situation=make_situation(learner), support_text="Call the study team."
    )
    assert services.chat_context(conversation)["support_text"] == ""
    services.record_learner_message(
        conversation=conversation, text="I want to kill myself.", strategies=["express"]
    )
    conversation.refresh_from_db()
    assert services.chat_context(conversation)["support_text"] == "Call the study team."


def test_role_play_anger_does_not_pause_the_practice(no_llm: None) -> None:
    conversation = start()
    services.record_learner_message(
        conversation=conversation,
        text="This job is killing me and you keep dumping your shifts on me!",
        strategies=["express"],
    )
    conversation.refresh_from_db()
    assert conversation.is_open and not AdverseEvent.objects.exists()


def test_a_reply_queued_by_another_tab_meanwhile_does_not_unsave_the_message(
    no_llm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between storing the learner's message and queuing its reply, another tab (or web process)
    # finds the reply missing and queues it. The message is still stored and reported as such,
    # and there is one reply, not a duplicate-key error.
    conversation = start()
    rate = services.rate_offline

    def another_tab_first(**kwargs: object) -> object:
        services._reply_in_flight(conversation.pk)
        return rate(**kwargs)

    monkeypatch.setattr(services, "rate_offline", another_tab_first)
    strategies, text = STRONG[0]
    message = services.record_learner_message(
        conversation=conversation, text=text, strategies=strategies
    )
    assert Message.objects.get(pk=message.pk).text == text
    replies = Message.objects.filter(conversation=conversation, seq=message.seq + 1)
    assert [(m.role, m.state) for m in replies] == [(Message.Role.PARTNER, Message.State.PENDING)]
    assert Message.objects.get(pk=message.pk).ratings  # the rating is still stored


# --------------------------------------------------------------------------- a send sent again


def test_a_send_key_stores_a_message_once_and_returns_it_when_sent_again(no_llm: None) -> None:
    conversation = start()
    strategies, text = STRONG[0]
    key = services.new_send_key()
    first = services.record_learner_message(
        conversation=conversation, text=text, strategies=strategies, send_key=key
    )
    reply_to(conversation)
    again = services.record_learner_message(
        conversation=conversation, text=f"{text}\n", strategies=strategies, send_key=key
    )
    assert (again.pk, again.seq) == (first.pk, 1)
    assert conversation.messages.count() == 2
    # A key used before with other words (a page that missed its new key) loses nothing: the
    # message is stored, under a key made from that key and its words, which no page sends.
    other = services.record_learner_message(
        conversation=conversation, text=STRONG[1][1], strategies=STRONG[1][0], send_key=key
    )
    other.refresh_from_db()
    assert other.seq == 3 and other.send_key not in ("", key)
    assert services.clean_send_key(other.send_key) == ""
    first.refresh_from_db()
    assert first.send_key == key


def test_a_replayed_send_is_confirmed_even_once_the_chat_has_ended(no_llm: None) -> None:
    conversation = start(max_messages=1)
    key = services.new_send_key()
    services.record_learner_message(
        conversation=conversation, text="Please.", strategies="assert", send_key=key
    )
    reply_to(conversation)
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.LIMIT
    again = services.record_learner_message(
        conversation=conversation, text="Please.", strategies="assert", send_key=key
    )
    assert again.seq == 1 and not again.conversation.is_open
    with pytest.raises(services.ConversationError, match="ended"):
        services.record_learner_message(
            conversation=conversation, text="Please.", strategies="assert"
        )


def learner_texts(conversation: Conversation) -> list[str]:
    rows = conversation.messages.filter(role=Message.Role.LEARNER).order_by("seq")
    return list(rows.values_list("text", flat=True))


def test_a_message_stored_under_a_used_key_is_stored_once_when_its_send_comes_again(
    no_llm: None,
) -> None:
    # A page that missed its new key sends its next message under the old one: stored (other
    # words), and that send replayed, before or after its reply, is the same message again.
    conversation = start()
    key = services.new_send_key()
    services.record_learner_message(
        conversation=conversation, text="Please.", strategies="assert", send_key=key
    )
    reply_to(conversation)
    second = services.record_learner_message(
        conversation=conversation, text="Please text me.", strategies="assert", send_key=key
    )
    while_pending = services.record_learner_message(
        conversation=conversation, text="Please text me.", strategies="assert", send_key=key
    )
    reply_to(conversation)
    after_reply = services.record_learner_message(
        conversation=conversation, text="Please text me.", strategies="assert", send_key=key
    )
    assert while_pending.pk == after_reply.pk == second.pk
    assert learner_texts(conversation) == ["Please.", "Please text me."]
    assert conversation.messages.count() == 4
    # A third text under the same key is a message of its own, and its replay is found too.
    third = services.record_learner_message(
        conversation=conversation, text="Just one text.", strategies="assert", send_key=key
    )
    assert third.seq == 5
    again = services.record_learner_message(
        conversation=conversation, text="Just one text.", strategies="assert", send_key=key
    )
    assert again.pk == third.pk
    assert learner_texts(conversation) == ["Please.", "Please text me.", "Just one text."]


def test_a_stale_page_sending_its_words_again_after_later_messages_is_a_new_message(
    no_llm: None,
) -> None:
    # A page kept from before (the back button without JavaScript) holds the key of a message
    # sent since; the learner sends those same words again after other messages: it is stored.
    conversation = start()
    old_key = services.new_send_key()
    services.record_learner_message(
        conversation=conversation, text="Okay.", strategies="assert", send_key=old_key
    )
    reply_to(conversation)
    services.record_learner_message(
        conversation=conversation,
        text="Text me by ten.",
        strategies="assert",
        send_key=services.new_send_key(),
    )
    reply_to(conversation)
    stale = services.record_learner_message(
        conversation=conversation, text="Okay.", strategies="assert", send_key=old_key
    )
    assert stale.seq == 5
    # That stale page's form sent twice is stored once.
    again = services.record_learner_message(
        conversation=conversation, text="Okay.", strategies="assert", send_key=old_key
    )
    assert again.pk == stale.pk
    assert learner_texts(conversation) == ["Okay.", "Text me by ten.", "Okay."]
    assert conversation.messages.filter(role=Message.Role.PARTNER).count() == 3


@pytest.mark.parametrize("key", ["", "short", "x" * 65, "has spaces in it", None, 12345678])
def test_no_key_or_one_no_page_of_ours_makes_stores_every_send(no_llm: None, key) -> None:
    conversation = start()
    services.record_learner_message(
        conversation=conversation, text="Hi.", strategies="assert", send_key=key
    )
    reply_to(conversation)
    services.record_learner_message(
        conversation=conversation, text="Hi.", strategies="assert", send_key=key
    )
    assert conversation.messages.filter(role=Message.Role.LEARNER).count() == 2
    assert set(conversation.messages.values_list("send_key", flat=True)) == {""}


def test_the_database_refuses_a_send_key_twice_in_one_conversation(no_llm: None) -> None:
    from django.db import IntegrityError, transaction

    conversation, elsewhere = start(), start()
    row = {"role": Message.Role.LEARNER, "text": "Hi.", "send_key": "k" * 22}
    Message.objects.create(conversation=conversation, seq=1, **row)
    Message.objects.create(conversation=elsewhere, seq=1, **row)  # keys are per conversation
    for seq in (2, 3):  # no key: as many as sent
        Message.objects.create(conversation=conversation, seq=seq, role="learner", text="Hi.")
    with pytest.raises(IntegrityError, match="message_send_key_unique"), transaction.atomic():
        Message.objects.create(conversation=conversation, seq=4, **row)


def test_a_send_key_costs_a_message_no_query_more(no_llm: None) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def send(conversation: Conversation, key: str) -> int:
        with CaptureQueriesContext(connection) as queries:
            services.record_learner_message(
                conversation=conversation, text="Hi.", strategies="assert", send_key=key
            )
        return len(queries)

    send(start(), "")  # the prepared queries compile on first use
    assert send(start(), services.new_send_key()) == send(start(), "")
