"""What opening a page's sockets costs: the session read from the cookie in the event loop, and
the database reached in as few thread hops as the work needs.

During a burst of arrivals each hop waits its turn on its socket's database thread behind the
other sockets' work (imbue/asgi.py `DatabaseThreads`), so a hop that does nothing the page needs
is a wait every arriving learner pays. These tests count the hops and fail if one comes back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import DatabaseSyncToAsync, database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore

from feedback.models import Draft, FeedbackRequest
from imbue.asgi import application
from imbue.sockets import SocketSession
from simulations import services
from simulations.learners import SESSION_KEY
from simulations.models import Conversation, Learner, Message, Situation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> None:
    channel_layers.backends.clear()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions run on a database thread, in order."""
    seen: list[str] = []
    original = DatabaseSyncToAsync.thread_handler

    def counted(self: DatabaseSyncToAsync, loop: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(self.func, "__name__", repr(self.func)))
        return original(self, loop, *args, **kwargs)

    monkeypatch.setattr(DatabaseSyncToAsync, "thread_handler", counted)
    return seen


@database_sync_to_async
def conversation_with(*roles_and_states: tuple[str, str]) -> tuple[Conversation, str]:
    """A conversation whose transcript has these (role, state) messages, and its owner's
    session key."""
    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        situation="My flatmate has paid the rent late three months running.",
        goal="Get my flatmate to pay their half on the 1st.",
    )
    conversation = Conversation.objects.create(learner=learner, situation=situation)
    for seq, (role, state) in enumerate(roles_and_states, start=1):
        Message.objects.create(
            conversation=conversation, seq=seq, role=role, state=state, text=f"words {seq}"
        )
    session = SessionStore()
    session[SESSION_KEY] = learner.pk
    session.create()
    return conversation, session.session_key


async def until(done: Any, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within the time")


def page_socket(path: str, session_key: str | None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if session_key is not None:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


LEARNER, PARTNER = Message.Role.LEARNER, Message.Role.PARTNER
COMPLETE, PENDING = Message.State.COMPLETE, Message.State.PENDING


async def test_a_settled_conversation_s_socket_opens_in_two_hops(hops: list[str]) -> None:
    conversation, key = await conversation_with((PARTNER, COMPLETE), (LEARNER, COMPLETE),
                                                (PARTNER, COMPLETE))  # fmt: skip
    hops.clear()  # the set-up's own
    socket = page_socket(f"/ws/conversations/{conversation.pk}/", key)
    connected, _ = await socket.connect(timeout=10)
    assert connected
    frame = await socket.receive_from(timeout=10)
    assert 'id="transcript"' in frame and "words 3" in frame
    # The ownership check (reading the session on the way) and the transcript: no hop to make
    # the session store, none to resolve a user, none to look for a reply to write.
    await asyncio.sleep(0.2)  # what connect does after its frame has had time to run
    assert hops == ["aowned_conversation", "render_view"]
    await socket.disconnect()


async def test_a_reply_still_to_write_is_made_sure_of_on_connect(hops: list[str]) -> None:
    conversation, key = await conversation_with((PARTNER, COMPLETE), (LEARNER, COMPLETE))
    hops.clear()  # the set-up's own
    socket = page_socket(f"/ws/conversations/{conversation.pk}/", key)
    connected, _ = await socket.connect(timeout=10)
    assert connected
    await socket.receive_from(timeout=10)
    await until(lambda: len(hops) >= 3)
    # A learner's message with no reply after it (rows from before both were stored
    # together): the reply is queued under the conversation's lock.
    assert hops[:3] == ["aowned_conversation", "render_view", "_reply_in_flight"]
    for _ in range(500):
        reply = await Message.objects.filter(conversation=conversation, seq=3).afirst()
        if reply is not None:
            break
        await asyncio.sleep(0.02)
    assert reply is not None and reply.role == PARTNER
    await socket.disconnect()


async def test_a_reply_in_flight_is_made_sure_of_on_connect(
    hops: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []

    def start(*, message_id: int, claimed: object = None) -> None:
        started.append(message_id)

    monkeypatch.setattr(services, "start_partner_reply", start)
    conversation, key = await conversation_with((PARTNER, COMPLETE), (LEARNER, COMPLETE),
                                                (PARTNER, PENDING))  # fmt: skip
    hops.clear()  # the set-up's own
    socket = page_socket(f"/ws/conversations/{conversation.pk}/", key)
    connected, _ = await socket.connect(timeout=10)
    assert connected
    await socket.receive_from(timeout=10)
    await until(lambda: started)
    assert hops == ["aowned_conversation", "render_view", "_reply_in_flight"]
    pending = await Message.objects.aget(conversation=conversation, seq=3)
    assert started == [pending.pk]
    await socket.disconnect()


async def test_a_new_page_s_feedback_socket_opens_in_two_hops(hops: list[str]) -> None:
    conversation, key = await conversation_with((PARTNER, COMPLETE))
    hops.clear()
    socket = page_socket(f"/ws/conversations/{conversation.pk}/feedback/", key)
    connected, _ = await socket.connect(timeout=10)
    assert connected
    assert await socket.receive_nothing(timeout=0.3)
    assert hops == ["aowned_conversation", "_latest_panel"]
    await socket.disconnect()


@database_sync_to_async
def feedback_on(conversation: Conversation, turn: int, status: str, **fields: Any) -> int:
    revision = Draft.objects.filter(conversation=conversation, turn=turn).count() + 1
    draft = Draft.objects.create(
        conversation=conversation, turn=turn, revision=revision, text=f"draft {turn}"
    )
    return FeedbackRequest.objects.create(draft=draft, status=status, **fields).pk


async def test_the_feedback_socket_sends_the_current_turn_s_panel_or_an_unseen_answer(
    hops: list[str],
) -> None:
    from django.utils import timezone

    # Turn 2 is being drafted: its newest shown request is the panel, withheld ones never.
    conversation, key = await conversation_with((PARTNER, COMPLETE), (LEARNER, COMPLETE),
                                                (PARTNER, COMPLETE))  # fmt: skip
    await feedback_on(conversation, 1, FeedbackRequest.Status.DONE, delivered_at=timezone.now())
    current = await feedback_on(conversation, 2, FeedbackRequest.Status.QUEUED)
    await feedback_on(conversation, 2, FeedbackRequest.Status.WITHHELD)
    hops.clear()
    socket = page_socket(f"/ws/conversations/{conversation.pk}/feedback/", key)
    assert (await socket.connect(timeout=10))[0]
    frame = await socket.receive_from(timeout=10)
    assert f'data-request-id="{current}"' in frame
    await socket.disconnect()
    # The newest shown request and the turn being drafted, on one hop.
    assert hops == ["aowned_conversation", "_latest_panel"]

    # A finished answer of an earlier turn that reached no browser is still shown...
    conversation, key = await conversation_with((PARTNER, COMPLETE), (LEARNER, COMPLETE),
                                                (PARTNER, COMPLETE))  # fmt: skip
    unseen = await feedback_on(conversation, 1, FeedbackRequest.Status.DONE)
    socket = page_socket(f"/ws/conversations/{conversation.pk}/feedback/", key)
    assert (await socket.connect(timeout=10))[0]
    frame = await socket.receive_from(timeout=10)
    assert f'data-request-id="{unseen}"' in frame
    await socket.disconnect()
    shown = await FeedbackRequest.objects.aget(pk=unseen)
    assert shown.delivered_at is not None

    # ...but one already delivered is not shown again once the turn has moved on.
    conversation, key = await conversation_with((PARTNER, COMPLETE), (LEARNER, COMPLETE),
                                                (PARTNER, COMPLETE))  # fmt: skip
    await feedback_on(conversation, 1, FeedbackRequest.Status.DONE, delivered_at=timezone.now())
    socket = page_socket(f"/ws/conversations/{conversation.pk}/feedback/", key)
    assert (await socket.connect(timeout=10))[0]
    assert await socket.receive_nothing(timeout=0.3)
    await socket.disconnect()


async def test_no_session_cookie_or_another_learner_s_is_refused() -> None:
    conversation, _ = await conversation_with((PARTNER, COMPLETE))
    _, someone_else = await conversation_with((PARTNER, COMPLETE))
    for key in (None, "not-a-session", someone_else):
        for path in ("", "feedback/"):
            socket = page_socket(f"/ws/conversations/{conversation.pk}/{path}", key)
            connected, _ = await socket.connect(timeout=10)
            assert not connected, (key, path)
    # An id no row can have is refused as plainly (not a database error).
    _, own = await conversation_with((PARTNER, COMPLETE))
    for number in ("0", "9" * 20):
        for path in ("", "feedback/"):
            socket = page_socket(f"/ws/conversations/{number}/{path}", own)
            connected, _ = await socket.connect(timeout=10)
            assert not connected, (number, path)


async def test_the_session_cookie_s_configured_name_is_the_one_read(settings) -> None:
    settings.SESSION_COOKIE_NAME = "__Host-imbue_session"
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["session"])

    middleware = SocketSession(inner)
    headers = [(b"cookie", b"sessionid=wrongkey123; __Host-imbue_session=rightkey123")]
    await middleware({"type": "websocket", "headers": headers}, None, None)
    await middleware({"type": "websocket", "headers": []}, None, None)
    assert seen[0].session_key == "rightkey123"
    assert seen[1].session_key is None
