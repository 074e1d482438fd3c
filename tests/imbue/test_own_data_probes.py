"""Only your own data, route by route: every URL of imbue/urls.py and every websocket route is
listed here with how it is probed, and a new one without an entry fails
`test_every_route_and_socket_has_a_probe`. Another learner's id answers exactly what an id that
does not exist answers (404, or a refused handshake) and changes nothing; a participant reaches
only their own study record; researchers without a right on a study read nothing of it."""

from __future__ import annotations

import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from feedback.models import Draft, FeedbackRequest
from imbue.routing import websocket_urlpatterns
from simulations.learners import SESSION_KEY
from simulations.models import (
    Conversation,
    EmotionCheckin,
    Learner,
    Situation,
    SkillSuggestion,
)
from study import services as study_services
from study.models import Participant, StudyStaff, WithdrawalReceipt
from study.views import PARTICIPANTS_KEY
from tests.study.conftest import make_study, walk_to

# Each route (as Django spells it, admin's excepted) and where "only your own" is checked.
HERE = "this file"
ROUTES = {
    "": "public: shows no one's data",
    "healthz": "public answer; details need the token or staff (tests/imbue/test_health.py)",
    "practice/": f"the browser's own learner only ({HERE}: hub_and_progress)",
    "practice/situations/new/": "creates for the browser's own learner; takes no id",
    "practice/library/": "library situations only, no learner's own (hub_and_progress)",
    "practice/situations/<int:situation_id>/practise/": f"{HERE}: learner_routes",
    "practice/c/<int:conversation_id>/transcript.txt": f"{HERE}: learner_routes",
    "practice/progress/": f"{HERE}: hub_and_progress",
    "practice/resume/": "a code, limited per address and session (tests/simulations/test_pages.py)",
    "practice/c/<int:conversation_id>/": f"{HERE}: learner_routes",
    "practice/c/<int:conversation_id>/send/": f"{HERE}: learner_routes",
    "practice/c/<int:conversation_id>/retry/": f"{HERE}: learner_routes",
    "practice/c/<int:conversation_id>/end/": f"{HERE}: learner_routes",
    "practice/c/<int:conversation_id>/checkin/": f"{HERE}: learner_routes",
    "practice/c/<int:conversation_id>/suggest/": f"{HERE}: learner_routes",
    "feedback/c/<int:conversation_id>/request/": f"{HERE}: learner_routes",
    "s/<slug:slug>/": f"{HERE}: participant_routes",
    "s/<slug:slug>/start/": f"{HERE}: participant_routes",
    "s/<slug:slug>/resume/": "a code, limited (tests/study/test_views.py)",
    "s/<slug:slug>/step/<slug:key>/": f"{HERE}: participant_routes",
    "s/<slug:slug>/step/<slug:key>/status/": f"{HERE}: participant_routes",
    "s/<slug:slug>/withdraw/": f"{HERE}: participant_routes",
    "s/<slug:slug>/withdrawn/": f"{HERE}: participant_routes",
    "research/": f"{HERE}: research_routes; tests/study/test_permissions.py",
    "research/<slug:slug>/": f"{HERE}: research_routes",
    "research/<slug:slug>/fragment/<slug:name>/": "tests/study/test_permissions.py (each one)",
    "research/<slug:slug>/participants/": f"{HERE}: research_routes",
    "research/<slug:slug>/participants/<str:code>/": f"{HERE}: research_routes",
    "research/<slug:slug>/export/": f"{HERE}: research_routes",
}
SOCKETS = {
    "ws/ping/": "public: reads and shows nothing of anyone's (tests/imbue/test_roundtrip.py)",
    "ws/conversations/<int:conversation_id>/": f"{HERE}: sockets",
    "ws/conversations/<int:conversation_id>/feedback/": f"{HERE}: sockets",
}


def _walk(patterns: list, prefix: str = "") -> list[str]:
    found = []
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if route != "admin/":  # the admin: tests/study/test_permissions.py, test_security.py
                found += _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            found.append(route)
    return found


def test_every_route_and_socket_has_a_probe() -> None:
    assert sorted(set(_walk(get_resolver().url_patterns))) == sorted(ROUTES)
    assert sorted(str(entry.pattern) for entry in websocket_urlpatterns) == sorted(SOCKETS)


# --------------------------------------------------------------------------- learners


def learner_browser() -> Client:
    client = Client()
    client.get("/practice/")
    assert client.session.get(SESSION_KEY)
    return client


@pytest.fixture
def owner(no_llm: None) -> tuple[Client, Conversation, Situation]:
    """A learner with a situation of their own, a conversation on it with a message sent, a
    check-in and a feedback request."""
    client = learner_browser()
    created = client.post(
        "/practice/situations/new/",
        {
            "situation": "My cousin keeps borrowing my bike without asking first.",
            "goal": "He asks me the day before.",
            "category": "family",
            "difficulty": "5",
        },
    )
    assert created.status_code == 302, created.content.decode()[-3000:]
    conversation = Conversation.objects.get(learner_id=client.session[SESSION_KEY])
    checkin = f"/practice/c/{conversation.pk}/checkin/"
    assert client.post(checkin, {"phase": "before", "intensity": "4"}).status_code == 302
    sent = client.post(
        f"/practice/c/{conversation.pk}/send/",
        {"text": "OWNERS-OWN-WORDS about the bike.", "strategies": "describe"},
    )
    assert sent.status_code == 302, re.findall(r'role="alert"[^<]*<[^<]*', sent.content.decode())
    asked = client.post(
        f"/feedback/c/{conversation.pk}/request/",
        {"text": "OWNERS-DRAFT ask.", "strategies": "assert"},
    )
    assert asked.status_code == 200
    return client, conversation, conversation.situation


def snapshot(conversation: Conversation) -> dict[str, object]:
    conversation.refresh_from_db()
    return {
        "status": conversation.status,
        "messages": list(conversation.messages.values_list("pk", "text", "state")),
        "checkins": EmotionCheckin.objects.filter(conversation=conversation).count(),
        "drafts": Draft.objects.filter(conversation=conversation).count(),
        "feedback": FeedbackRequest.objects.filter(draft__conversation=conversation).count(),
        "suggestions": SkillSuggestion.objects.filter(conversation=conversation).count(),
        "on_situation": Conversation.objects.filter(situation=conversation.situation).count(),
    }


LEARNER_PROBES = [
    ("get", "/practice/c/{c}/", {}),
    ("head", "/practice/c/{c}/", {}),
    ("get", "/practice/c/{c}/transcript.txt", {}),
    ("post", "/practice/c/{c}/send/", {"text": "INTRUDER words", "send_key": "k1"}),
    ("post", "/practice/c/{c}/retry/", {}),
    ("post", "/practice/c/{c}/end/", {}),
    ("post", "/practice/c/{c}/checkin/", {"phase": "after", "intensity": "9"}),
    ("post", "/practice/c/{c}/suggest/", {}),
    ("post", "/feedback/c/{c}/request/", {"text": "INTRUDER draft", "strategies": "describe"}),
    ("post", "/practice/situations/{s}/practise/", {}),
]


@pytest.mark.django_db(transaction=True)  # the send waits for its reply on another thread
@pytest.mark.parametrize("who", ["another learner", "a browser with no learner"])
def test_learner_routes_answer_another_learners_ids_as_missing_ones(owner, who: str) -> None:
    _, conversation, situation = owner
    before = snapshot(conversation)
    intruder = learner_browser() if who == "another learner" else Client()
    missing = Conversation.objects.order_by("-pk").first().pk + 1000
    for method, template, data in LEARNER_PROBES:
        theirs = template.format(c=conversation.pk, s=situation.pk)
        response = getattr(intruder, method)(theirs, data)
        assert response.status_code == 404, (who, method, theirs)
        body = response.content.decode()
        assert "OWNERS-OWN-WORDS" not in body and "OWNERS-DRAFT" not in body
        assert situation.situation not in body
        nowhere = getattr(intruder, method)(template.format(c=missing, s=situation.pk + 1000), data)
        assert (nowhere.status_code, nowhere.content) == (response.status_code, response.content)
    assert snapshot(conversation) == before


@pytest.mark.django_db(transaction=True)
def test_hub_and_progress_show_only_the_browsers_own(owner) -> None:
    client, conversation, situation = owner
    mine = client.get("/practice/").content.decode()
    assert situation.situation in mine and f"/practice/c/{conversation.pk}/" in mine
    other = learner_browser()
    for page in ("/practice/", "/practice/progress/", "/practice/library/"):
        body = other.get(page).content.decode()
        assert situation.situation not in body and f"/c/{conversation.pk}/" not in body, page
        learner = Learner.objects.get(pk=client.session[SESSION_KEY])
        assert learner.resume_code not in body, page


# --------------------------------------------------------------------------- participants


def participant_browser(participant: Participant) -> Client:
    client = Client()
    session = client.session
    session[PARTICIPANTS_KEY] = {str(participant.study_id): participant.pk}
    session[SESSION_KEY] = participant.learner_id
    session.save()
    return client


@pytest.mark.django_db
def test_participant_routes_reach_only_the_browsers_own_participant(no_llm: None) -> None:
    study = make_study()
    other_study = make_study(slug="other")
    first, _ = study_services.enroll(study=study)
    second, _ = study_services.enroll(study=study)
    first = walk_to(first, "eval_s1_pre")
    second = walk_to(second, "pre_s1")
    mine = participant_browser(second)
    page = mine.get(f"/s/{study.slug}/step/{first.step}/")  # the other's step: back to own
    assert page.status_code == 302 and page["Location"].endswith(f"/step/{second.step}/")
    own = mine.get(page["Location"]).content.decode()
    for secret in (first.resume_key, first.code, second.code):
        assert secret not in own  # the code is the pseudonym staff see: never on their pages
    # The chat status a participant polls is their own step's, or a refresh.
    polled = mine.get(f"/s/{study.slug}/step/{first.step}/status/")
    assert polled.status_code == 200 and polled.get("HX-Refresh") == "true"
    # The other participant's study chat is not theirs to open, by page or by socket.
    chat = study_services.open_chat(participant=first, step=first.step)
    assert mine.get(f"/practice/c/{chat.conversation_id}/").status_code == 404
    # Entry and start give this browser its own participant back, never another.
    assert mine.get(f"/s/{study.slug}/")["Location"].endswith(f"/step/{second.step}/")
    assert mine.post(f"/s/{study.slug}/start/")["Location"].endswith(f"/step/{second.step}/")
    # In another study this browser is no one: every page leads to that study's entry.
    for url in (
        f"/s/{other_study.slug}/step/consent/",
        f"/s/{other_study.slug}/withdraw/",
        f"/s/{other_study.slug}/withdrawn/",
    ):
        response = mine.get(url)
        assert response.status_code == 302 and response["Location"] == f"/s/{other_study.slug}/"
    assert mine.post(f"/s/{other_study.slug}/withdraw/").status_code == 302
    assert not WithdrawalReceipt.objects.exists()
    # Withdrawing removes this browser's participant only, and its receipt is this browser's.
    assert mine.post(f"/s/{study.slug}/withdraw/").status_code == 302
    assert Participant.objects.filter(pk=first.pk).exists()
    assert not Participant.objects.filter(pk=second.pk).exists()
    assert participant_browser(first).get(f"/s/{study.slug}/withdrawn/").status_code == 302
    assert mine.get(f"/s/{study.slug}/withdrawn/").status_code == 200


# --------------------------------------------------------------------------- researchers


@pytest.mark.django_db
def test_research_routes_show_nothing_of_a_study_without_a_right(no_llm: None) -> None:
    study = make_study()
    theirs = make_study(slug="theirs")
    participant, _ = study_services.enroll(study=study)
    elsewhere = User.objects.create_user("elsewhere", password="pw-for-tests-1", is_staff=True)
    StudyStaff.objects.create(
        study=theirs, user=elsewhere, can_view_data=True, can_export=True, can_edit_settings=True
    )
    viewer_only = User.objects.create_user("viewer", password="pw-for-tests-1", is_staff=True)
    StudyStaff.objects.create(study=study, user=viewer_only, can_view_data=True)
    base = f"/research/{study.slug}"
    for user, expected in ((elsewhere, 404), (viewer_only, None)):
        client = Client()
        client.force_login(user)
        index = client.get("/research/").content.decode()
        assert (study.name in index) == (user is viewer_only)
        for method, url, data in (
            ("get", f"{base}/", {}),
            ("get", f"{base}/participants/", {}),
            ("get", f"{base}/participants/{participant.code}/", {}),
            ("post", f"{base}/export/", {"what": "csv"}),
            ("post", f"{base}/export/", {"what": "json", "recruitment_ids": "1"}),
        ):
            response = getattr(client, method)(url, data)
            body = b"".join(response.streaming_content) if response.streaming else response.content
            if expected == 404:
                assert response.status_code == 404, (user.username, url)
                assert participant.code.encode() not in body
            elif "export" in url:  # may view, may not export
                assert response.status_code == 403, url
                assert not re.search(rb"PK\x03\x04", body)


# --------------------------------------------------------------------------- sockets


@database_sync_to_async
def _session_of(learner_id: int | None) -> str | None:
    if learner_id is None:
        return None
    session = SessionStore()
    session[SESSION_KEY] = learner_id
    session.create()
    return session.session_key


async def _connects(path: str, session_key: str | None) -> bool:
    from imbue.asgi import application

    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    socket = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await socket.connect(timeout=10)
    await socket.disconnect()
    return connected


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_sockets_refuse_another_learners_conversation(no_llm: None) -> None:
    from simulations import services

    @database_sync_to_async
    def setup() -> tuple[int, int, int]:
        owner, stranger = Learner.objects.create(), Learner.objects.create()
        situation = Situation.objects.create(
            learner=owner, situation="My boss moves my shifts.", goal="Two weeks' notice."
        )
        conversation = services.start_conversation(learner=owner, situation=situation)
        return conversation.pk, owner.pk, stranger.pk

    conversation_id, owner_id, stranger_id = await setup()
    for route in ("ws/conversations/{}/", "ws/conversations/{}/feedback/"):
        path = "/" + route.format(conversation_id)
        assert await _connects(path, await _session_of(owner_id)), path  # the probe works
        assert not await _connects(path, await _session_of(stranger_id)), path
        assert not await _connects(path, None), path
        missing = "/" + route.format(conversation_id + 1000)
        assert not await _connects(missing, await _session_of(owner_id)), missing
