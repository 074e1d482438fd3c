"""The conversation socket against a model server that behaves as real ones do: a reasoning
model that thinks aloud in its content, a key or model that is wrong.

Over the real stack (the ASGI application, the Redis channel layer, the fake model server), with
the helpers of test_consumers.py.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from simulations.models import Message
from tests.simulations.test_consumers import (  # noqa: F401 (autouse fixtures)
    failed,
    fresh_channel_layer,
    no_rate_limit,
    open_view,
    reply_of,
    send_and_wait,
    start,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_a_reasoning_models_thinking_never_reaches_the_learner(fake_llm) -> None:
    fake_llm.configure(reasoning="think", tokens_per_s=200)
    conversation = await start()
    view = await open_view(conversation)
    reply = await send_and_wait(view, conversation, "Please text me by ten when you are late.")
    assert reply.text and view.texts[reply.pk] == reply.text
    for seen in [reply.text, *view.frames]:
        assert "think" not in seen and "draft" not in seen
    await view.communicator.disconnect()


@database_sync_to_async
def home_page() -> str:
    return Client().get("/").content.decode()


@pytest.mark.parametrize("status", ["401", "404"])
async def test_a_wrong_key_or_model_keeps_the_message_says_so_and_can_be_tried_again(
    fake_llm, status: str
) -> None:
    conversation = await start()
    view = await open_view(conversation)
    fake_llm.faults([status])  # not retried: one answer is enough to know
    await view.send(action="send", text="Please text me by ten.", strategies=["assert"])
    await view.until(lambda f: 'id="message-sent"' in f)
    reply = await reply_of(conversation, 1)
    frame = await view.until(lambda f: failed(f, reply.pk))
    assert "not set up correctly" in frame and "Your message is saved" in frame
    assert "Try again" in frame
    learner = await Message.objects.aget(conversation=conversation, seq=1)
    assert learner.text == "Please text me by ten."
    assert "is not set up correctly" in await home_page()  # every page says so, until...
    await view.send(action="retry")  # ...the set-up is put right and a reply gets through
    await view.until(lambda f: f'id="msg-{reply.pk}" class="msg msg-partner msg-complete"' in f)
    assert "is not set up correctly" not in await home_page()
    await view.communicator.disconnect()
