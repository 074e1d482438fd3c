"""A browser without a learner that opens a practice page gets one: a script dropping its cookies
could fill the learners table, so new learners are limited per client address
(imbue.ratelimit.try_new_learner), loopback exempt, with a plain 429 that stores nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.test import Client, RequestFactory

from imbue import ratelimit, redis_quiet
from imbue.views import too_many_requests
from simulations.learners import SESSION_KEY
from simulations.models import Conversation, Learner, Situation

pytestmark = pytest.mark.django_db

TYPED = {
    "situation": "My flatmate leaves wet towels on my bed & says <nothing> about it.",
    "goal": "Towels go on the rail, not on my bed.",
    "category": "social",
    "difficulty": "4",
}


@pytest.fixture
def few_learners(settings) -> None:
    settings.IMBUE = {**settings.IMBUE, "new_learners_per_hour_per_address": 3}


@pytest.fixture
def address() -> Iterator[str]:
    """An address in a /64 of this test's own (counts outlive a test in Redis)."""
    ip = f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}::7"
    yield ip
    ratelimit.forget_new_rows(ip=ip)
    ratelimit.reset(f"starts:ip:{ratelimit._address_key(ip)}")


def fresh(ip: str) -> Client:
    """A browser with no cookies, as a script that drops them would be each time."""
    return Client(REMOTE_ADDR=ip)


def test_fresh_browsers_from_one_address_are_refused_a_new_learner_past_the_limit(
    address: str, few_learners: None
) -> None:
    before = Learner.objects.count()
    assert [fresh(address).get("/practice/").status_code for _ in range(3)] == [200] * 3
    assert Learner.objects.count() == before + 3
    refused = fresh(address).get("/practice/")
    page = refused.content.decode()
    assert refused.status_code == 429
    assert 3000 < int(refused["Retry-After"]) <= 3600
    assert "A lot of new visitors have started from your internet connection" in page
    assert "Please wait 60 minutes, then try again." in page
    assert 'href="/practice/"' in page and "Try again" in page
    assert "Traceback" not in page and "TooManyNewLearners" not in page
    assert Learner.objects.count() == before + 3  # nothing stored for the refused one
    # The progress page creates a learner too: refused the same way.
    assert fresh(address).get("/practice/progress/").status_code == 429
    # Another subscriber's address is not held up, nor a client on the server's own machine.
    other = f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}::7"
    try:
        assert fresh(other).get("/practice/").status_code == 200
    finally:
        ratelimit.forget_new_rows(ip=other)
    assert [fresh("127.0.0.1").get("/practice/").status_code for _ in range(5)] == [200] * 5
    assert fresh("::1").get("/practice/").status_code == 200


def test_a_browser_that_is_already_a_learner_is_never_refused(
    address: str, few_learners: None
) -> None:
    mine = fresh(address)
    mine.get("/practice/")
    learner = mine.session[SESSION_KEY]
    for _ in range(2):
        fresh(address).get("/practice/")
    assert fresh(address).get("/practice/").status_code == 429
    for page in ("/practice/", "/practice/progress/", "/practice/library/"):
        assert mine.get(page).status_code == 200, page
    assert mine.session[SESSION_KEY] == learner
    # A learner who continues with their code is not a new learner either.
    code = Learner.objects.get(pk=learner).resume_code
    elsewhere = fresh(address)
    assert elsewhere.post("/practice/resume/", {"code": code}).status_code == 302
    assert elsewhere.get("/practice/").status_code == 200


def test_a_first_start_past_the_limit_keeps_what_was_typed_and_stores_nothing(
    address: str, few_learners: None, no_llm: None
) -> None:
    for _ in range(3):
        fresh(address).get("/practice/")
    learners, situations = Learner.objects.count(), Situation.objects.count()
    client = fresh(address)
    response = client.post("/practice/situations/new/", TYPED)
    page = response.content.decode()
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "A lot of new visitors have started from your internet connection" in page
    assert "&lt;nothing&gt;" in page and 'value="Towels go on the rail, not on my bed."' in page
    assert (Learner.objects.count(), Situation.objects.count()) == (learners, situations)
    library = Situation.objects.create(situation="A library situation.", goal="A goal.")
    refused = client.post(f"/practice/situations/{library.pk}/practise/")
    assert refused.status_code == 429 and not Conversation.objects.filter(situation=library)
    # A start refused for the learner does not use up the start limit: once new learners may
    # be made again, the same browser starts at once.
    ratelimit.forget_new_rows(ip=address)
    assert client.post(f"/practice/situations/{library.pk}/practise/").status_code == 302
    assert Learner.objects.count() == learners + 1


def test_a_start_counts_its_new_learner_once(address: str, few_learners: None, no_llm) -> None:
    library = Situation.objects.create(situation="A library situation.", goal="A goal.")
    for _ in range(3):  # each a new browser: one learner and one start each
        assert (
            fresh(address).post(f"/practice/situations/{library.pk}/practise/").status_code == 302
        )
    assert Conversation.objects.filter(situation=library).count() == 3
    assert fresh(address).get("/practice/").status_code == 429


def test_a_limit_of_zero_switches_it_off(address: str, settings) -> None:
    settings.IMBUE = {**settings.IMBUE, "new_learners_per_hour_per_address": 0}
    assert [fresh(address).get("/practice/").status_code for _ in range(5)] == [200] * 5


def test_redis_down_lets_new_learners_through(address: str, few_learners, settings) -> None:
    # A limit must never be why someone cannot practise: unchecked, the learner is made.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    try:
        assert all(ratelimit.try_new_learner(ip=address)[0].allowed for _ in range(5))
        assert all(ratelimit.try_enrol(ip=address)[0].allowed for _ in range(5))
    finally:
        redis_quiet.forget()


def test_a_refused_form_comes_back_with_every_field_it_sent() -> None:
    request = RequestFactory().post(
        "/practice/somewhere/?x=1",
        {**TYPED, "strategies": ["describe", "assert"], "csrfmiddlewaretoken": "t" * 32},
    )
    decision = ratelimit.Decision(False, 90, "Please wait 2 minutes.")
    response = too_many_requests(request, decision)
    page = response.content.decode()
    assert response.status_code == 429 and response["Retry-After"] == "90"
    assert 'action="/practice/somewhere/?x=1"' in page and 'method="post"' in page
    assert '<input type="hidden" name="strategies" value="describe">' in page
    assert '<input type="hidden" name="strategies" value="assert">' in page
    assert 'name="situation" value="My flatmate leaves wet towels on my bed &amp; says &lt;' in page
    assert page.count('name="csrfmiddlewaretoken"') == 1  # the page's own, not the old one
