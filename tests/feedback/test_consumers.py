"""Feedback over the real stack: Celery worker, Redis channel layer, fake model via the real SDK."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore

from feedback import services
from feedback.models import Draft, FeedbackRequest
from feedback.raters.offline import rate_offline
from feedback.tasks import rate_feedback_request
from imbue import ratelimit
from imbue.asgi import application
from simulations.learners import SESSION_KEY
from simulations.models import Conversation, Learner, Situation
from tests.conftest import wait_for


@pytest.fixture(autouse=True)
def _fresh_feedback_limits(settings) -> None:
    """Learner ids restart with every test database; their rate-limit windows must too."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}feedback:*"):
        client.delete(key)


DRAFT = "The rent was due on the 1st and it's the 9th. I feel anxious. Please pay by Friday."
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@database_sync_to_async
def make_conversation(learner: Learner | None = None, **switches: object) -> Conversation:
    learner = learner or Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        situation="My flatmate has paid the rent late three months running.",
        goal="Get my flatmate to pay their half on the 1st.",
    )
    return Conversation.objects.create(learner=learner, situation=situation, **switches)


@database_sync_to_async
def session_for(learner: Learner) -> str:
    session = SessionStore()
    session[SESSION_KEY] = learner.pk
    session.create()
    return session.session_key


async def socket(conversation_id: int, session_key: str | None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    return WebsocketCommunicator(
        application, f"/ws/conversations/{conversation_id}/feedback/", headers=headers
    )


async def open_socket(conversation: Conversation) -> WebsocketCommunicator:
    communicator = await socket(conversation.pk, await session_for(conversation.learner))
    connected, _ = await communicator.connect()
    assert connected
    return communicator


ask = database_sync_to_async(services.request_feedback)


@database_sync_to_async
def reload(feedback: FeedbackRequest) -> FeedbackRequest:
    return FeedbackRequest.objects.get(pk=feedback.pk)


async def eventually(feedback: FeedbackRequest, field: str, timeout: float = 5) -> FeedbackRequest:
    """The request once `field` is set (delivery is recorded just after the panel is sent)."""
    deadline = time.monotonic() + timeout
    current = await reload(feedback)
    while getattr(current, field) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        current = await reload(feedback)
    return current


async def wait_done(feedback: FeedbackRequest, timeout: float = 30) -> FeedbackRequest:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = await reload(feedback)
        if current.status == "done":
            return current
        await asyncio.sleep(0.05)
    raise TimeoutError(f"feedback request {feedback.pk} still {current.status}")


def feedback_calls(fake_llm) -> list[dict]:
    return [r for r in fake_llm.requests() if r.get("purpose") == "feedback"]


async def test_each_request_costs_one_model_call_and_reaches_the_owners_socket(
    celery_worker, fake_llm
):
    conversation = await make_conversation()
    owner = await open_socket(conversation)
    assert await owner.receive_nothing(timeout=0.2)  # nothing asked yet
    for revision in (1, 2, 3):
        feedback = await ask(
            conversation=conversation, text=f"{DRAFT} ({revision})", strategies=["assert"]
        )
        html = await owner.receive_from(timeout=30)
        assert f'data-request-id="{feedback.pk}"' in html
        assert 'data-state="final"' in html and "expert model" in html
        assert 'hx-swap-oob="true"' in html
        feedback = await eventually(feedback, "delivered_at")
        assert feedback.engine == "llm", feedback.fallback_reason
        assert feedback.delivered_at is not None
        assert len(feedback_calls(fake_llm)) == revision
    await owner.disconnect()


async def test_another_browser_cannot_connect_and_its_own_socket_hears_nothing(
    celery_worker, fake_llm
):
    mine = await make_conversation()
    theirs = await make_conversation()
    stranger_key = await session_for(theirs.learner)
    intruder = await socket(mine.pk, stranger_key)
    connected, _ = await intruder.connect()
    assert not connected
    anonymous = await socket(mine.pk, None)
    connected, _ = await anonymous.connect()
    assert not connected

    owner = await open_socket(mine)
    bystander = await open_socket(theirs)
    feedback = await ask(conversation=mine, text=DRAFT, strategies=["describe"])
    assert f'data-request-id="{feedback.pk}"' in await owner.receive_from(timeout=30)
    assert await bystander.receive_nothing(timeout=0.5)
    await owner.disconnect()
    await bystander.disconnect()


async def test_a_refreshed_page_gets_the_latest_panel_and_reports_when_it_was_seen(
    celery_worker, fake_llm
):
    conversation = await make_conversation()
    feedback = await ask(conversation=conversation, text=DRAFT, strategies=["express"])
    feedback = await wait_done(feedback)
    page = await open_socket(conversation)
    html = await page.receive_from(timeout=10)
    assert f'data-request-id="{feedback.pk}"' in html and 'data-state="final"' in html
    await page.send_to(text_data=json.dumps({"action": "viewed", "request_id": feedback.pk}))
    feedback = await eventually(feedback, "latency_ms")
    assert feedback.delivered_at is not None and feedback.viewed_at is not None
    assert feedback.latency_ms > 0
    await page.disconnect()


@database_sync_to_async
def queued_request(conversation: Conversation) -> FeedbackRequest:
    """A request the worker has not answered yet (made by hand: a shared worker may be running)."""
    draft = Draft.objects.create(
        conversation=conversation, turn=1, text=DRAFT, strategies=["negotiate"]
    )
    offline = rate_offline(text=DRAFT, chosen=["negotiate"]).to_dict()
    return FeedbackRequest.objects.create(draft=draft, offline_result=offline)


async def test_a_pending_request_is_shown_as_the_quick_check_on_reconnect():
    conversation = await make_conversation()
    feedback = await queued_request(conversation)
    page = await open_socket(conversation)
    html = await page.receive_from(timeout=10)
    assert f'data-request-id="{feedback.pk}"' in html
    assert 'data-state="queued"' in html and "Quick offline check" in html
    await page.disconnect()
    assert (await reload(feedback)).delivered_at is None


async def test_a_request_whose_task_was_lost_is_enqueued_again_when_the_page_opens(
    celery_worker, fake_llm
):
    conversation = await make_conversation()
    feedback = await queued_request(conversation)
    long_ago = feedback.requested_at - services.stale_after() - timedelta(seconds=1)
    await database_sync_to_async(FeedbackRequest.objects.filter(pk=feedback.pk).update)(
        requested_at=long_ago
    )
    page = await open_socket(conversation)
    assert 'data-state="queued"' in await page.receive_from(timeout=10)
    html = await page.receive_from(timeout=30)
    assert f'data-request-id="{feedback.pk}"' in html and 'data-state="final"' in html
    assert (await reload(feedback)).engine == "llm"
    await page.disconnect()


async def test_feedback_falls_back_offline_when_the_model_fails_every_attempt(
    celery_worker, fake_llm
):
    fake_llm.faults(rate=1.0, kinds=["500"])
    conversation = await make_conversation()
    page = await open_socket(conversation)
    feedback = await ask(conversation=conversation, text=DRAFT, strategies=["describe"])
    html = await page.receive_from(timeout=60)
    assert f'data-request-id="{feedback.pk}"' in html
    assert "offline rater" in html and "could not answer" in html
    feedback = await reload(feedback)
    assert feedback.engine == "offline" and "HTTP 500" in feedback.fallback_reason
    assert feedback.result == feedback.offline_result
    # Gateway retries inside each task attempt, Celery retries the task a bounded number of times.
    assert len(feedback_calls(fake_llm)) == 3 * 3
    await page.disconnect()


async def test_a_redelivered_task_changes_nothing_and_calls_no_model(
    celery_worker, fake_llm, artifacts_dir: Path
):
    conversation = await make_conversation()
    feedback = await wait_done(
        await ask(conversation=conversation, text=DRAFT, strategies=["reinforce"])
    )
    before = await database_sync_to_async(
        lambda: FeedbackRequest.objects.filter(pk=feedback.pk).values().get()
    )()
    # The same task again through the broker, as after a redelivery.
    task_id = f"redelivered-{uuid.uuid4()}"
    rate_feedback_request.apply_async(args=[feedback.pk], task_id=task_id)
    log = artifacts_dir / "celery-worker.log"
    wait_for(lambda: f"[{task_id}] succeeded" in log.read_text(errors="replace"), 20, "re-run")
    # And the body once more in this process.
    await database_sync_to_async(services.rate_request)(request_id=feedback.pk)
    after = await database_sync_to_async(
        lambda: FeedbackRequest.objects.filter(pk=feedback.pk).values().get()
    )()
    assert after == before
    assert len(feedback_calls(fake_llm)) == 1


async def test_a_no_feedback_arm_sends_nothing_and_calls_no_model(celery_worker, fake_llm):
    conversation = await make_conversation(feedback_enabled=False)
    page = await open_socket(conversation)
    feedback = await ask(conversation=conversation, text=DRAFT, strategies=["assert"])
    assert await page.receive_nothing(timeout=1.0)
    feedback = await reload(feedback)
    assert feedback.status == "withheld" and feedback.result == {}
    assert feedback_calls(fake_llm) == []
    await page.disconnect()


async def test_garbage_on_the_socket_is_ignored(fake_llm):
    conversation = await make_conversation()
    page = await open_socket(conversation)
    for frame in (" ", "not json", "[1, 2]", '"x"', '{"action": "viewed"}',
                  '{"action": "viewed", "request_id": 99999999999999999999999}',
                  '{"action": "viewed", "request_id": "1; drop table"}', "x" * 5000):  # fmt: skip
        await page.send_to(text_data=frame)
    assert await page.receive_nothing(timeout=0.3)
    await page.send_to(text_data=json.dumps({"action": "viewed", "request_id": 1}))
    assert await page.receive_nothing(timeout=0.3)
    await page.disconnect()


@database_sync_to_async
def answered_while_away(conversation: Conversation) -> FeedbackRequest:
    """A request of turn 1 answered by the worker while no page was connected; then the learner
    sent their turn-1 message (from another tab), so turn 2 is now being drafted."""
    from simulations.models import Message

    draft = Draft.objects.create(
        conversation=conversation, turn=1, text=DRAFT, strategies=["assert"]
    )
    offline = rate_offline(text=DRAFT, chosen=["assert"]).to_dict()
    feedback = FeedbackRequest.objects.create(
        draft=draft,
        offline_result=offline,
        result=offline,
        status=FeedbackRequest.Status.DONE,
        engine="offline",
    )
    Message.objects.create(conversation=conversation, seq=1, role="learner", text="Sent.")
    Message.objects.create(conversation=conversation, seq=2, role="partner", text="Fine.")
    assert (
        services.current_turn(conversation) == 2 and services.latest_request(conversation) is None
    )
    return feedback


async def test_an_answer_that_reached_no_page_is_shown_on_the_next_connection_once():
    conversation = await make_conversation()
    feedback = await answered_while_away(conversation)
    page = await open_socket(conversation)
    html = await page.receive_from(timeout=10)
    assert f'data-request-id="{feedback.pk}"' in html and 'data-state="final"' in html
    assert (await eventually(feedback, "delivered_at")).delivered_at is not None
    await page.disconnect()
    again = await open_socket(conversation)
    assert await again.receive_nothing(timeout=0.3)  # delivered: the moved-on turn stays clear
    await again.disconnect()


async def connected_and_shown(page: WebsocketCommunicator, feedback: FeedbackRequest) -> None:
    """Wait until the socket's connect has sent the panel and recorded it, then mark it undelivered
    again, so that what follows is the only way it can arrive."""
    assert f'data-request-id="{feedback.pk}"' in await page.receive_from(timeout=10)
    assert (await eventually(feedback, "delivered_at")).delivered_at is not None
    await database_sync_to_async(FeedbackRequest.objects.filter(pk=feedback.pk).update)(
        delivered_at=None
    )


def flaky(real, failures: int):
    """`real`, raising a lost-database error on its first `failures` calls."""
    from django.db import OperationalError

    calls = {"n": 0}

    async def call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise OperationalError("connection to server failed")
        return await real(*args, **kwargs)

    return call, calls


async def test_a_finished_panel_waits_out_a_short_database_outage(monkeypatch):
    from feedback import consumers

    conversation = await make_conversation()
    feedback = await answered_while_away(conversation)
    page = await open_socket(conversation)
    await connected_and_shown(page, feedback)
    monkeypatch.setattr(consumers, "OUTAGE_RETRY_SECONDS", (0.01, 0.01, 0.01))
    ready, calls = flaky(consumers._ready_panel, failures=2)
    monkeypatch.setattr(consumers, "_ready_panel", ready)
    await page.send_input({"type": "feedback.ready", "request_id": feedback.pk})
    html = await page.receive_from(timeout=10)
    assert f'data-request-id="{feedback.pk}"' in html and calls["n"] == 3
    await page.disconnect()


async def test_a_longer_outage_closes_the_socket_for_the_page_to_reconnect(monkeypatch):
    from feedback import consumers

    conversation = await make_conversation()
    feedback = await answered_while_away(conversation)
    page = await open_socket(conversation)
    await connected_and_shown(page, feedback)
    monkeypatch.setattr(consumers, "OUTAGE_RETRY_SECONDS", (0.01,))
    ready, calls = flaky(consumers._ready_panel, failures=99)
    monkeypatch.setattr(consumers, "_ready_panel", ready)
    await page.send_input({"type": "feedback.ready", "request_id": feedback.pk})
    closed = await page.receive_output(timeout=10)
    assert closed == {"type": "websocket.close", "code": consumers.TRY_AGAIN_LATER}
    assert calls["n"] == 2
    # When the database is back, the new socket is sent the panel (no page ever showed it).
    monkeypatch.undo()
    page = await open_socket(conversation)
    assert f'data-request-id="{feedback.pk}"' in await page.receive_from(timeout=10)
    await page.disconnect()


async def test_a_database_outage_on_connect_asks_the_page_to_try_again(monkeypatch):
    from feedback import consumers

    conversation = await make_conversation()
    await answered_while_away(conversation)
    latest, _ = flaky(consumers._latest_panel, failures=1)
    monkeypatch.setattr(consumers, "_latest_panel", latest)
    page = await socket(conversation.pk, await session_for(conversation.learner))
    connected, _ = await page.connect()
    assert connected  # accepted, then closed with "try again later"
    closed = await page.receive_output(timeout=10)
    assert closed == {"type": "websocket.close", "code": consumers.TRY_AGAIN_LATER}


async def test_a_viewed_report_naming_another_learners_request_changes_nothing():
    # Request ids are sequential: a socket may only time the panels of its own conversation.
    theirs = await make_conversation()
    their_request = await answered_while_away(theirs)
    mine = await make_conversation()
    page = await open_socket(mine)
    await page.send_to(text_data=json.dumps({"action": "viewed", "request_id": their_request.pk}))
    assert await page.receive_nothing(timeout=0.3)  # the same silence as for an unknown id
    await page.disconnect()
    assert (await reload(their_request)).viewed_at is None
    owner = await open_socket(theirs)
    await owner.receive_from(timeout=10)  # the undelivered answer, shown on connect
    await owner.send_to(text_data=json.dumps({"action": "viewed", "request_id": their_request.pk}))
    assert (await eventually(their_request, "viewed_at")).viewed_at is not None
    await owner.disconnect()


# ----------------------------------------------------------------- "Get feedback" over the socket


def request_frame(text: str = DRAFT, strategies: object = ("assert",), **fields: object) -> str:
    """What static/js/feedback.js sends for the button while the socket is open."""
    return json.dumps({"action": "request", "text": text, "strategies": list(strategies), **fields})


@database_sync_to_async
def drafts_of(conversation: Conversation) -> list[Draft]:
    return list(Draft.objects.filter(conversation=conversation).order_by("revision"))


async def test_the_button_over_the_socket_gets_the_quick_check_then_the_experts_panel(
    celery_worker, fake_llm
):
    conversation = await make_conversation()
    page = await open_socket(conversation)
    await page.send_to(text_data=request_frame(used_rewrite="1"))
    quick = await page.receive_from(timeout=10)
    # The button's answer comes first, swapped in by id (out of band), as the HTTP answer is.
    assert 'id="feedback-panel-body"' in quick and 'hx-swap-oob="true"' in quick
    request_id = int(re.search(r'data-request-id="(\d+)"', quick).group(1))
    if 'data-state="final"' not in quick:
        assert 'data-state="queued"' in quick and "Quick offline check" in quick
        final = await page.receive_from(timeout=30)
        assert f'data-request-id="{request_id}"' in final and 'data-state="final"' in final
    [draft] = await drafts_of(conversation)
    assert (draft.text, draft.strategies, draft.used_rewrite) == (DRAFT, ["assert"], True)
    feedback = await eventually(await reload(FeedbackRequest(pk=request_id)), "delivered_at")
    assert feedback.draft_id == draft.pk and feedback.engine == "llm"
    assert len(feedback_calls(fake_llm)) == 1
    await page.disconnect()


async def test_without_a_model_the_sockets_answer_is_the_final_panel_and_counts_as_delivered():
    conversation = await make_conversation()
    page = await open_socket(conversation)
    await page.send_to(text_data=request_frame(strategies=["describe", "assert"]))
    html = await page.receive_from(timeout=10)
    assert 'data-state="final"' in html and "offline rater" in html
    request_id = int(re.search(r'data-request-id="(\d+)"', html).group(1))
    feedback = await eventually(await reload(FeedbackRequest(pk=request_id)), "delivered_at")
    assert feedback.delivered_at is not None and feedback.engine == "offline"
    # The same socket goes on: the next revision is rated too.
    await page.send_to(text_data=request_frame(text=DRAFT + " Thanks."))
    assert 'data-state="final"' in await page.receive_from(timeout=10)
    assert [d.revision for d in await drafts_of(conversation)] == [1, 2]
    await page.disconnect()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (request_frame(text="   "), "write"),  # the service's own refusal, word for word below
        (request_frame(strategies=[]), "strateg"),
        (request_frame(text=["a", "list"]), "could not be read"),
        (request_frame(strategies=[{"key": "assert"}]), "could not be read"),
        (json.dumps({"action": "request", "text": "x" * 70_000}), "far too long"),
    ],
)
async def test_a_refused_request_over_the_socket_says_why_and_stores_nothing(frame, message):
    conversation = await make_conversation()
    page = await open_socket(conversation)
    await page.send_to(text_data=frame)
    html = await page.receive_from(timeout=10)
    assert 'data-state="error"' in html and 'role="alert"' in html
    assert 'hx-swap-oob="true"' in html and message in html.lower()
    assert await drafts_of(conversation) == []
    await page.disconnect()


@pytest.mark.parametrize(
    ("used", "kept"), [([1], False), ({"a": 1}, False), (True, True), ("on", True)]
)
async def test_the_rewrite_flag_in_any_shape_is_read_without_breaking_the_socket(used, kept):
    conversation = await make_conversation()
    page = await open_socket(conversation)
    await page.send_to(text_data=request_frame(used_rewrite=used))
    html = await page.receive_from(timeout=10)
    assert 'data-request-id="' in html  # rated: the panel, not an error
    assert [d.used_rewrite for d in await drafts_of(conversation)] == [kept]
    await page.disconnect()


async def test_a_request_on_a_conversation_deleted_meanwhile_says_it_no_longer_exists():
    from simulations.services import CONVERSATION_GONE

    conversation = await make_conversation()
    page = await open_socket(conversation)
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).delete)()
    await page.send_to(text_data=request_frame())
    html = await page.receive_from(timeout=10)
    assert 'data-state="error"' in html
    assert "This conversation no longer exists" in html
    assert CONVERSATION_GONE.startswith("This conversation no longer exists")
    await page.disconnect()


async def test_a_request_that_fails_unexpectedly_says_so_and_the_socket_stays(monkeypatch):
    from feedback import consumers

    conversation = await make_conversation()
    page = await open_socket(conversation)

    @database_sync_to_async
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    real = consumers._ask
    monkeypatch.setattr(consumers, "_ask", broken)
    await page.send_to(text_data=request_frame())
    html = await page.receive_from(timeout=10)
    assert 'data-state="error"' in html and "went wrong on our side" in html
    monkeypatch.setattr(consumers, "_ask", real)
    await page.send_to(text_data=request_frame())
    assert 'data-state="final"' in await page.receive_from(timeout=10)
    await page.disconnect()


async def test_a_database_outage_during_a_request_says_so_and_the_socket_stays(monkeypatch):
    from feedback import consumers

    conversation = await make_conversation()
    page = await open_socket(conversation)
    asked, calls = flaky(consumers._ask, failures=1)
    monkeypatch.setattr(consumers, "_ask", asked)
    await page.send_to(text_data=request_frame())
    html = await page.receive_from(timeout=10)
    assert 'data-state="error"' in html and "reach our database" in html
    assert "still in the box" in html
    # Asked again once the database is back: rated, on the same socket.
    await page.send_to(text_data=request_frame())
    assert 'data-state="final"' in await page.receive_from(timeout=10)
    assert calls["n"] == 2 and len(await drafts_of(conversation)) == 1
    await page.disconnect()


@database_sync_to_async
def home_page() -> str:
    from django.test import Client

    return Client().get("/").content.decode()


async def test_a_feedback_model_failing_only_in_the_worker_shows_on_the_pages_until_it_answers(
    celery_worker, fake_llm
):
    from imbue import llm

    fake_llm.faults(["401"])  # the worker's feedback call: this process never meets it
    conversation = await make_conversation()
    asked = await ask(conversation=conversation, text=DRAFT, strategies=["assert"])
    failed = await wait_done(asked)
    assert failed.engine == "offline" and "misconfigured" in failed.fallback_reason
    assert "is not set up correctly" in await home_page()
    answered = await wait_done(
        await ask(conversation=conversation, text=DRAFT + " Thanks.", strategies=["assert"])
    )
    assert answered.engine == "llm"
    llm._shared_read_at -= llm.SHARED_READ_S  # the pages read the shared status again
    assert "is not set up correctly" not in await home_page()
