"""A study sets its own limits for its participants' chats: messages and feedback requests per
minute, the longest message, and the model-token budget of a chat. Blank keeps the product's
defaults; a participant's limits never apply to anyone else."""

from __future__ import annotations

import pytest
from django.conf import settings

from feedback.services import FeedbackInputError, request_feedback
from imbue import ratelimit
from simulations import services as chat_services
from simulations.models import Conversation, Learner, Message, Situation
from study import services
from study.models import Study
from tests.study.conftest import chat_of

pytestmark = pytest.mark.django_db

TEXT = "Please do the washing up tonight, as we agreed on Sunday."


@pytest.fixture(autouse=True)
def product_limits(settings) -> None:
    settings.IMBUE = {**settings.IMBUE, "messages_per_minute": 12, "feedback_per_minute": 20}


def fresh(learner_id: int) -> None:
    # Learner ids repeat across runs while Redis keeps the last minute's hits.
    ratelimit.reset(f"messages:{learner_id}")
    ratelimit.reset(f"feedback:{learner_id}")


def reply_arrived(conversation: Conversation) -> None:
    """The partner's reply is written (here, without a model)."""
    Message.objects.filter(
        conversation=conversation, role=Message.Role.PARTNER, state=Message.State.PENDING
    ).update(state=Message.State.COMPLETE, text="Fine.")


def training_chat(enrolled, study: Study, **limits: object) -> Conversation:
    Study.objects.filter(pk=study.pk).update(**limits)
    participant = enrolled("train_s1")
    services.open_chat(participant=participant, step="train_s1")
    conversation = chat_of(participant, "train_s1").conversation
    fresh(conversation.learner_id)
    return conversation


def free_practice() -> Conversation:
    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        situation="My flatmate leaves the dishes for me every night.",
        goal="Share the washing up.",
        category="social",
        difficulty=4,
    )
    fresh(learner.pk)
    return chat_services.start_conversation(learner=learner, situation=situation)


def send(conversation: Conversation) -> Message:
    message = chat_services.record_learner_message(
        conversation=conversation, text=TEXT, strategies=["assert"]
    )
    reply_arrived(conversation)
    return message


def test_a_studys_message_rate_limit_applies_to_its_participants_only(enrolled, study) -> None:
    conversation = training_chat(enrolled, study, messages_per_minute=1)
    assert conversation.messages_per_minute == 1  # carried by the chat from its opening
    send(conversation)
    with pytest.raises(chat_services.ConversationError) as refused:
        send(conversation)
    assert "sending messages very fast" in refused.value.user_message
    assert Message.objects.filter(conversation=conversation, role="learner").count() == 1
    # Someone practising outside the study keeps the product's limit.
    practice = free_practice()
    send(practice)
    send(practice)


def test_a_study_can_switch_the_message_rate_limit_off(enrolled, study, settings) -> None:
    settings.IMBUE = {**settings.IMBUE, "messages_per_minute": 1}
    conversation = training_chat(enrolled, study, messages_per_minute=0)
    send(conversation)
    send(conversation)  # the product's limit (1) would refuse this one
    practice = free_practice()
    send(practice)
    with pytest.raises(chat_services.ConversationError):
        send(practice)


def test_a_studys_feedback_rate_limit_applies_to_its_participants(enrolled, study) -> None:
    conversation = training_chat(enrolled, study, feedback_per_minute=1)
    request_feedback(conversation=conversation, text=TEXT, strategies=["assert"])
    with pytest.raises(FeedbackInputError, match="asking for feedback very fast"):
        request_feedback(conversation=conversation, text=TEXT, strategies=["assert"])
    practice = free_practice()
    request_feedback(conversation=practice, text=TEXT, strategies=["assert"])
    request_feedback(conversation=practice, text=TEXT, strategies=["assert"])


def test_a_studys_message_length_and_token_budget_reach_its_chats(enrolled, study) -> None:
    conversation = training_chat(
        enrolled, study, max_message_chars=60, conversation_token_budget=5000
    )
    assert (conversation.max_message_chars, conversation.token_budget) == (60, 5000)
    with pytest.raises(chat_services.ConversationError) as refused:
        chat_services.record_learner_message(
            conversation=conversation, text=TEXT + " " + TEXT, strategies=["assert"]
        )
    assert "60" in refused.value.user_message
    send(conversation)  # 57 characters: within the study's limit


def test_blank_study_limits_keep_the_products_defaults(enrolled, study) -> None:
    conversation = training_chat(enrolled, study)
    assert conversation.max_message_chars == settings.IMBUE.get("max_message_chars", 2000)
    assert conversation.token_budget == settings.IMBUE["conversation_token_budget"]
    assert (conversation.messages_per_minute, conversation.feedback_per_minute) == (None, None)
