"""What a chat socket believes the page shows: re-rendering one reply in place must not move it past
a message the page has not been sent yet (that message would then never reach this tab)."""

from __future__ import annotations

from typing import Any

import pytest

from simulations import services
from simulations.consumers import (
    ConversationConsumer,
    render_message,
    render_new_messages,
    render_view,
)
from simulations.models import Message
from tests.simulations.test_services import STRONG, reply_to, start

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_rate_limit(settings: Any) -> None:
    settings.IMBUE = {**settings.IMBUE, "messages_per_minute": 0}


def socket_for(conversation: Any) -> ConversationConsumer:
    consumer = ConversationConsumer()
    consumer.conversation_id, consumer.learner_id = conversation.pk, conversation.learner_id
    consumer.last_seq, consumer.streams, consumer.complete = 0, {}, set()
    return consumer


def test_a_reply_rendered_again_does_not_skip_a_message_stored_meanwhile(no_llm: None) -> None:
    conversation = start()
    strategies, text = STRONG[0]
    services.record_learner_message(conversation=conversation, text=text, strategies=strategies)
    reply = reply_to(conversation)
    socket = socket_for(conversation)
    socket._track(render_view(conversation.pk, conversation.learner_id))
    shown = socket.last_seq
    assert shown == reply.seq

    # The learner sends again from another tab; this tab has not had its "message.created" yet,
    # but re-renders the earlier reply first (a late "partner.finished", say).
    strategies, text = STRONG[1]
    services.record_learner_message(conversation=conversation, text=text, strategies=strategies)
    socket._track(render_message(conversation.pk, conversation.learner_id, reply.pk))
    assert socket.last_seq == shown

    _, fresh, _ = render_new_messages(conversation.pk, conversation.learner_id, socket.last_seq)
    learner_seqs = [m.seq for m in fresh if m.role == Message.Role.LEARNER]
    assert learner_seqs == [shown + 1]
