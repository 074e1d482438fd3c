"""Free-practice pages: continuing on another device with a resume code, and its limit on
wrong codes (imbue.ratelimit, counted per client address and per browser session)."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator

import pytest
from django.test import Client

from imbue import ratelimit
from simulations.learners import SESSION_KEY
from simulations.models import Conversation, Learner, Situation

pytestmark = pytest.mark.django_db

RESUME = "/practice/resume/"


@pytest.fixture
def address() -> Iterator[str]:
    """A client address of this test's own (the limiter's counts outlive a test in Redis)."""
    ip = f"2001:db8::{uuid.uuid4().hex[:4]}"
    yield ip
    ratelimit.forget_resume_failures(ip=ip, session_key=None)
    ratelimit.forget_new_rows(ip=ip)  # its browsers' new learners (one /64 for every test)


@pytest.fixture
def low_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "RESUME_FAILURES_PER_ADDRESS", 4)
    monkeypatch.setattr(ratelimit, "RESUME_FAILURES_PER_SESSION", 2)


def browser(ip: str, *, with_session: bool = True) -> Client:
    client = Client(REMOTE_ADDR=ip)
    if with_session:
        client.get("/practice/")  # a learner of its own: the browser has a session
    return client


def test_a_right_code_continues_as_that_learner(address: str) -> None:
    learner = Learner.objects.create()
    client = browser(address)
    response = client.post(RESUME, {"code": learner.resume_code.lower()})
    assert response.status_code == 302 and response["Location"] == "/practice/"
    assert client.session[SESSION_KEY] == learner.pk


def test_wrong_codes_from_one_browser_are_limited_with_a_429_that_keeps_what_was_typed(
    address: str, low_limits: None
) -> None:
    learner = Learner.objects.create()
    client = browser(address)
    mine = client.session[SESSION_KEY]
    for _ in range(2):
        assert client.post(RESUME, {"code": "WRONG2345"}).status_code == 400
    # Now even the right code waits: guessing on would otherwise go on until one matches.
    response = client.post(RESUME, {"code": f"{learner.resume_code} "})
    page = html.unescape(response.content.decode())
    assert response.status_code == 429
    assert 840 <= int(response["Retry-After"]) <= 900
    assert "Please wait before trying again" in page
    assert "too many codes that did not match" in page and "please wait 15 minutes" in page
    assert f'value="{learner.resume_code} "' in page  # what was typed, kept
    assert f'action="{RESUME}"' in page and 'name="csrfmiddlewaretoken"' in page
    assert client.session[SESSION_KEY] == mine  # not switched to anyone
    # Another browser at another address is not held up.
    other = browser(f"{address}1")
    assert other.post(RESUME, {"code": learner.resume_code}).status_code == 302
    ratelimit.forget_resume_failures(ip=f"{address}1", session_key=None)


def test_wrong_codes_from_one_address_are_limited_across_browsers(
    address: str, low_limits: None
) -> None:
    # No session (a script dropping its cookies): the address alone counts.
    for _ in range(4):
        assert (
            browser(address, with_session=False).post(RESUME, {"code": "NOPE"}).status_code == 400
        )
    assert browser(address, with_session=False).post(RESUME, {"code": "NOPE"}).status_code == 429
    assert browser(address).post(RESUME, {"code": "NOPE"}).status_code == 429


def test_right_codes_and_empty_forms_are_never_counted(address: str, low_limits: None) -> None:
    learners = [Learner.objects.create() for _ in range(6)]
    client = browser(address)
    for learner in learners:  # a classroom behind one address, each continuing
        assert client.post(RESUME, {"code": learner.resume_code}).status_code == 302
    for _ in range(3):
        assert client.post(RESUME, {"code": "  "}).status_code == 400
    assert client.post(RESUME, {"code": "NOPE"}).status_code == 400  # the first that counts


def test_the_limit_lets_codes_through_when_redis_is_away(
    address: str, low_limits: None, settings
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # the chat needs Redis anyway: no lock-out
    learner = Learner.objects.create()
    client = browser(address)
    for _ in range(3):
        assert client.post(RESUME, {"code": "NOPE"}).status_code == 400
    assert client.post(RESUME, {"code": learner.resume_code}).status_code == 302


def test_the_429_page_escapes_what_was_typed(address: str, low_limits: None) -> None:
    client = browser(address)
    for _ in range(2):
        client.post(RESUME, {"code": "NOPE"})
    response = client.post(RESUME, {"code": '"><script>alert(1)</script>'})
    assert response.status_code == 429
    assert "<script>alert" not in response.content.decode()
    assert re.search(r'value="&quot;&gt;&lt;script&gt;', response.content.decode())


# --- conversation starts: limited per browser and per client address (imbue.ratelimit.try_start)


@pytest.fixture
def few_starts(settings) -> None:
    settings.IMBUE = {**settings.IMBUE, "starts_per_hour": 2, "starts_per_hour_per_address": 3}


@pytest.fixture
def start_address() -> Iterator[str]:
    """A client address in a /64 of this test's own (IPv6 subscribers are counted by /64)."""
    ip = f"2001:db8:{uuid.uuid4().hex[:4]}::1"
    yield ip
    ratelimit.reset(f"starts:ip:{ratelimit._address_key(ip)}")
    ratelimit.forget_new_rows(ip=ip)


def library_situation() -> Situation:
    return Situation.objects.create(
        situation="My neighbour plays loud music after midnight on weekdays.",
        goal="Agree on quiet after eleven on weeknights.",
        category="social",
        difficulty=3,
    )


def practise(client: Client, situation: Situation):  # type: ignore[no-untyped-def]
    return client.post(f"/practice/situations/{situation.pk}/practise/")


def test_one_browser_starting_too_many_conversations_gets_a_429_that_tries_again(
    start_address: str, few_starts: None, no_llm: None
) -> None:
    situation = library_situation()
    client = browser(start_address)
    learner = client.session[SESSION_KEY]
    assert [practise(client, situation).status_code for _ in range(2)] == [302, 302]
    response = practise(client, situation)
    page = response.content.decode()
    assert response.status_code == 429 and 3500 <= int(response["Retry-After"]) <= 3600
    assert "That is a lot of new conversations in a short time. Please wait 60 minutes" in page
    assert f'action="/practice/situations/{situation.pk}/practise/"' in page
    assert Conversation.objects.filter(learner_id=learner).count() == 2
    # Another browser at the same start_address still may (until the start_address's own limit).
    assert practise(browser(start_address), situation).status_code == 302


def test_fresh_browsers_from_one_address_are_limited_and_create_no_learner(
    start_address: str, few_starts: None, no_llm: None
) -> None:
    situation = library_situation()
    # No cookies kept: each request is a new browser, as a script that drops them would be.
    codes = [practise(Client(REMOTE_ADDR=start_address), situation).status_code for _ in range(3)]
    assert codes == [302, 302, 302]
    learners = Learner.objects.count()
    assert practise(Client(REMOTE_ADDR=start_address), situation).status_code == 429
    assert Learner.objects.count() == learners


def test_clients_on_the_servers_own_machine_are_not_limited_per_address(
    few_starts: None, no_llm: None
) -> None:
    situation = library_situation()
    codes = [practise(Client(REMOTE_ADDR="127.0.0.1"), situation).status_code for _ in range(5)]
    assert codes == [302] * 5


def test_a_situation_written_past_the_limit_comes_back_with_everything_typed(
    start_address: str, few_starts: None, no_llm: None
) -> None:
    client = browser(start_address)
    situation = library_situation()
    practise(client, situation), practise(client, situation)
    typed = {
        "situation": "My sister borrows my car & returns it with an empty tank <every> time.",
        "goal": "She fills it up again before giving it back.",
        "category": "family",
        "difficulty": "6",
    }
    situations = Situation.objects.count()
    response = client.post("/practice/situations/new/", typed)
    page = response.content.decode()
    assert response.status_code == 429 and response["Retry-After"]
    assert "That is a lot of new conversations" in page and "Nothing was saved yet" in page
    assert (
        ">My sister borrows my car &amp; returns it with an empty tank &lt;every&gt; time.</"
        in (page)
    )
    assert 'value="She fills it up again before giving it back."' in page
    assert re.search(r'value="family"[^>]*\s+checked', page)
    assert re.search(r'value="6"[^>]*\s+checked', page)
    assert Situation.objects.count() == situations
