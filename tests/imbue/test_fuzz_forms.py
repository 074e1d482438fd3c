"""Every learner-facing form, fuzzed (hypothesis) with random, oversized, binary, HTML/script,
template and spreadsheet-formula input: no server error, nothing executed on any page that shows
the text again (own pages, admin), and nothing stored that should not be.

Run with -s to see the figures: inputs tried per form and server errors (must be 0).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback.models import Draft
from imbue import ratelimit
from simulations.models import Conversation, EmotionCheckin, Learner, Message, Situation

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_llm")]

# Raw attack strings: none may ever appear unescaped in a page.
ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "<iframe src=javascript:alert(1)></iframe>",
    "</textarea><script>alert(2)</script>",
    "'><a href=javascript:alert(3)>x</a>",
]
PAYLOADS = [
    *ATTACKS,
    '=HYPERLINK("http://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "{{ 7|add:'7' }}{% debug %}",
    "${7*7} #{7*7} <%= 7*7 %>",
    "'; DROP TABLE simulations_situation; --",
    "../../../../etc/passwd",
    "\u202eevil\u202c \ufeff \u200b",
    "a\x00b",
    "\x1b[31mred\x1b[0m\x07\x08",
    "😀" * 300,
    "W" * 5000,
    "My boss, John Smith, 12 Elm Street, john@example.org, +44 7700 900123",
]

any_text = st.one_of(
    st.text(max_size=300),
    st.text(min_size=500, max_size=3000),
    st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
    st.sampled_from(PAYLOADS),
    st.tuples(st.sampled_from(PAYLOADS), st.text(max_size=80)).map("".join),
)
# Text that passes the form's own checks around a payload, so that it is stored and shown again.
storable = st.tuples(st.text(max_size=40), st.sampled_from(PAYLOADS), st.text(max_size=40)).map(
    lambda parts: f"My roommate never cleans up after parties {parts[0]} {parts[1]} {parts[2]}"
)
field_value = st.one_of(any_text, st.sampled_from(["", "1", "5", "9", "10", "-1", "work", "x"]))

TRIED: Counter[str] = Counter()
SERVER_ERRORS: list[tuple[str, dict]] = []
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def _post(client: Client, route: str, data: dict, form: str) -> str:
    response = client.post(route, data)
    TRIED[form] += 1
    if response.status_code >= 500:
        SERVER_ERRORS.append((form, data))
    assert response.status_code < 500, (route, data, response.status_code)
    body = response.content.decode("utf-8", "replace")
    _assert_nothing_executes(body)
    return body


class _ActiveContent(HTMLParser):
    """Collects what a browser would run: scripts, event-handler attributes, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and not any(
            name == "src" and (value or "").startswith("/static/") for name, value in attrs
        ):
            self.found.append(f"<script {attrs}>")
        self.found += [f"<{tag} {name}=...>" for name in names if name.startswith("on")]
        for name, value in attrs:
            if name in {"href", "src", "action", "formaction"} and (
                value or ""
            ).strip().lower().startswith(("javascript:", "data:text/html")):
                self.found.append(f"<{tag} {name}={value}>")
        if tag in {"iframe", "object", "embed", "base"}:
            self.found.append(f"<{tag}>")


def _assert_nothing_executes(body: str) -> None:
    for attack in ATTACKS:
        assert attack not in body, attack
    parser = _ActiveContent()
    parser.feed(body)
    assert parser.found == [], parser.found


def _assert_stored_rows_are_clean() -> None:
    for situation in Situation.objects.exclude(learner=None):
        assert "\x00" not in situation.situation + situation.goal
        assert 15 <= len(situation.situation) <= 600 and 5 <= len(situation.goal) <= 300
        assert situation.category in {"family", "social", "work", "other"}
        assert 1 <= situation.difficulty <= 9
    for message in Message.objects.filter(role=Message.Role.LEARNER):
        assert message.text and "\x00" not in message.text
        assert len(message.text) <= message.conversation.max_message_chars
    for draft in Draft.objects.all():
        assert "\x00" not in draft.text and len(draft.text) <= 2000
    for checkin in EmotionCheckin.objects.all():
        assert 0 <= checkin.intensity <= 10


@pytest.fixture
def learner_client() -> Client:
    client = Client()
    client.get("/practice/")  # the browser's learner
    return client


def _conversation(client: Client) -> Conversation:
    learner = Learner.objects.get(pk=client.session["imbue_learner_id"])
    situation = Situation.objects.create(
        learner=learner,
        situation="My roommate leaves the dishes every night.",
        goal="Agree a rota.",
        category="social",
        difficulty=5,
    )
    return Conversation.objects.create(learner=learner, situation=situation, max_messages=200)


# --- the forms ----------------------------------------------------------------------------------


@FUZZ
@given(
    situation=st.one_of(any_text, storable),
    goal=st.one_of(any_text, storable),
    category=field_value,
    difficulty=field_value,
    identifying=st.sampled_from(["", "keep", "remove", "other"]),
)
def test_fuzz_new_situation_form(
    learner_client: Client,
    situation: str,
    goal: str,
    category: str,
    difficulty: str,
    identifying: str,
) -> None:
    data = {"situation": situation, "goal": goal, "category": category, "difficulty": difficulty}
    if identifying:
        data["identifying"] = identifying
    _post(learner_client, "/practice/situations/new/", data, "situations/new")
    _assert_stored_rows_are_clean()


@FUZZ
@given(code=field_value)
def test_fuzz_resume_form(learner_client: Client, code: str) -> None:
    learners = Learner.objects.count()
    mine = learner_client.session["imbue_learner_id"]
    # Every example reaches the code's look-up, not the limit on wrong codes (imbue.ratelimit).
    ratelimit.forget_resume_failures(ip="127.0.0.1", session_key=learner_client.session.session_key)
    _post(learner_client, "/practice/resume/", {"code": code}, "resume")
    # A wrong code neither creates a learner nor switches this browser to someone else.
    assert Learner.objects.count() == learners
    assert learner_client.session["imbue_learner_id"] == mine


# The send view waits for the partner's reply written on another thread: real commits needed.
@pytest.mark.django_db(transaction=True)
@FUZZ
@given(
    text=st.one_of(any_text, storable),
    strategies=st.lists(st.one_of(st.sampled_from(["describe", "express", "assert"]), any_text)),
)
def test_fuzz_send_message_form(learner_client: Client, text: str, strategies: list[str]) -> None:
    conversation = _conversation(learner_client)
    _post(
        learner_client,
        f"/practice/c/{conversation.pk}/send/",
        {"text": text, "strategies": strategies},
        "send message",
    )
    _assert_stored_rows_are_clean()


@FUZZ
@given(
    text=st.one_of(any_text, storable),
    strategies=st.lists(st.one_of(st.sampled_from(["describe", "negotiate"]), any_text)),
    used_rewrite=field_value,
)
def test_fuzz_feedback_request_form(
    learner_client: Client, text: str, strategies: list[str], used_rewrite: str
) -> None:
    conversation = _conversation(learner_client)
    _post(
        learner_client,
        f"/feedback/c/{conversation.pk}/request/",
        {"text": text, "strategies": strategies, "used_rewrite": used_rewrite},
        "feedback request",
    )
    _assert_stored_rows_are_clean()


@FUZZ
@given(phase=field_value, intensity=field_value, emotion=field_value)
def test_fuzz_checkin_form(
    learner_client: Client, phase: str, intensity: str, emotion: str
) -> None:
    conversation = _conversation(learner_client)
    _post(
        learner_client,
        f"/practice/c/{conversation.pk}/checkin/",
        {"phase": phase, "intensity": intensity, "emotion": emotion},
        "check-in",
    )
    _assert_stored_rows_are_clean()


# --- websocket frames ----------------------------------------------------------------------------

json_value = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), any_text,
        st.sampled_from([1e400, -1e400, 2**70, -1]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)  # fmt: skip
action = st.sampled_from(["send", "retry", "end", "suggest", "checkin", "viewed", "", "x"])
frame = st.one_of(
    any_text,  # not JSON at all
    st.binary(max_size=200),  # a binary frame
    st.builds(
        lambda a, text, strategies, extra: json.dumps(
            {"action": a, "text": text, "strategies": strategies, **extra}
        ),
        action,
        st.one_of(any_text, storable),
        st.one_of(json_value, st.lists(st.sampled_from(["describe", "assert", "x"]))),
        st.dictionaries(
            st.sampled_from(["request_id", "phase", "intensity", "seq", "attempt"]), json_value
        ),
    ),
    # Escapes JSON allows but text cannot hold: a lone surrogate, NUL.
    st.sampled_from(
        [
            '{"action": "send", "text": "\\ud800 hi", "strategies": ["describe"]}',
            '{"action": "send", "text": "a\\u0000b", "strategies": ["describe"]}',
            '{"action": "viewed", "request_id": 1e400}',
            '{"action": "viewed", "request_id": NaN}',
            "[" * 5000 + "]" * 5000,
            "x" * 70_000,
        ]
    ),
)


async def _fuzz_socket(path: str, cookie: bytes, frames: list[str | bytes]) -> list[str]:
    from channels.testing import WebsocketCommunicator

    from imbue.asgi import application

    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)]
    socket = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await socket.connect(timeout=10)
    assert connected
    received: list[str] = []
    for item in frames:
        key = "bytes" if isinstance(item, bytes) else "text"
        await socket.send_input({"type": "websocket.receive", key: item})
    try:
        while not await socket.receive_nothing(timeout=0.5):
            output = await socket.receive_output(timeout=5)
            assert output["type"] != "websocket.close", ("the socket closed on junk", output)
            received.append(output.get("text", ""))
        await socket.disconnect()
    except Exception as error:  # the consumer crashed: a server error, reported with its frames
        shown = [f[:60] + "..." if len(f) > 60 else f for f in frames]
        raise SocketCrashed(f"{path} crashed on {shown!r}: {error!r}") from None
    return received


class SocketCrashed(AssertionError):
    pass


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(frames=st.lists(frame, min_size=1, max_size=6))
async def test_fuzz_websocket_frames(
    learner_client: Client, frames: list[str | bytes], caplog: pytest.LogCaptureFixture
) -> None:
    from asgiref.sync import sync_to_async

    conversation = await sync_to_async(_conversation)(learner_client)
    session_key = await sync_to_async(lambda: learner_client.session.session_key)()
    cookie = f"sessionid={session_key}".encode()
    caplog.clear()
    chat = f"/ws/conversations/{conversation.pk}/"
    for path in (chat, chat + "feedback/"):
        sent = frames
        try:
            received = await _fuzz_socket(path, cookie, sent)
        except SocketCrashed as crash:
            SERVER_ERRORS.append(("websocket", {"crash": str(crash)}))
            raise
        TRIED["websocket frames"] += len(sent)
        for html in received:
            _assert_nothing_executes(html)
    errors = [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]
    if errors:
        SERVER_ERRORS.append(("websocket", {"frames": frames, "log": errors[0].getMessage()}))
    assert errors == [], [r.getMessage() for r in errors]
    await sync_to_async(_assert_stored_rows_are_clean)()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("socket", "frame"),
    [
        ("chat", "[" * 5000 + "]" * 5000),
        ("feedback", '{"action": "viewed", "request_id": 1e400}'),
    ],
)
async def test_sockets_survive_the_known_crashing_frames(
    learner_client: Client, socket: str, frame: str
) -> None:
    from asgiref.sync import sync_to_async

    conversation = await sync_to_async(_conversation)(learner_client)
    session_key = await sync_to_async(lambda: learner_client.session.session_key)()
    path = f"/ws/conversations/{conversation.pk}/" + ("feedback/" if socket == "feedback" else "")
    await _fuzz_socket(path, f"sessionid={session_key}".encode(), [frame])


# --- where the stored text is shown again ---------------------------------------------------------


def _pages_showing_stored_text(learner: Client, staff: Client) -> Iterator[tuple[str, str]]:
    yield "hub", learner.get("/practice/").content.decode()
    for conversation in Conversation.objects.all()[:20]:
        url = f"/practice/c/{conversation.pk}/"
        yield url, learner.get(url).content.decode()
        transcript = learner.get(f"/practice/c/{conversation.pk}/transcript.txt")
        # Plain text with nosniff: a browser never renders it as HTML.
        assert transcript["Content-Type"].startswith("text/plain")
        assert transcript["X-Content-Type-Options"] == "nosniff"
    for model in ("simulations/situation", "simulations/message", "feedback/draft"):
        yield model, staff.get(f"/admin/{model}/").content.decode()
        yield f"{model} search", staff.get(f"/admin/{model}/", {"q": "<script>"}).content.decode()
    for situation in Situation.objects.exclude(learner=None)[:20]:
        url = f"/admin/simulations/situation/{situation.pk}/change/"
        yield url, staff.get(url).content.decode()


# The send view waits for the partner's reply written on another thread: real commits needed.
@pytest.mark.django_db(transaction=True)
def test_stored_attack_strings_are_escaped_on_every_page_that_shows_them(
    learner_client: Client,
) -> None:
    conversation = _conversation(learner_client)
    for attack in ATTACKS:
        situation_text = f"My roommate never cleans up after parties {attack}"
        learner_client.post(
            "/practice/situations/new/",
            {
                "situation": situation_text,
                "goal": f"Agree a rota {attack}",
                "category": "social",
                "difficulty": "5",
                "identifying": "keep",
            },
        )
        learner_client.post(
            f"/practice/c/{conversation.pk}/send/",
            {"text": f"You never clean up {attack}", "strategies": ["describe"]},
        )
        learner_client.post(
            f"/feedback/c/{conversation.pk}/request/",
            {"text": f"I need you to help {attack}", "strategies": ["assert"]},
        )
    stored = Situation.objects.filter(situation__contains="<script>alert(1)</script>")
    assert stored.exists(), "the payload should be stored as text, and shown escaped"
    assert Message.objects.filter(text__contains="<img src=x onerror=alert(1)>").exists()
    staff = Client()
    staff.force_login(User.objects.create_superuser("admin", "a@example.org", "pw-123456789"))
    pages = dict(_pages_showing_stored_text(learner_client, staff))
    for name, body in pages.items():
        for attack in ATTACKS:
            assert attack not in body, (name, attack)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in body for body in pages.values())
    TRIED["stored and re-shown"] += len(pages)


@pytest.mark.django_db(transaction=True)
def test_zz_report_fuzz_figures() -> None:
    # Last in file order among the transactional tests, which pytest-django runs last.
    print(f"\nfuzz inputs tried per form: {dict(TRIED)}; total {sum(TRIED.values())}")
    print(f"server errors: {len(SERVER_ERRORS)}")
    assert SERVER_ERRORS == []
