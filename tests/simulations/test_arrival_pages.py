"""The pages of a learner's arrival (library, "Practise", the conversation page), made cheaper:
the library list rendered once for the library's rows (and rendered again whenever they change,
however they were changed), its forms' CSRF tokens per browser, and the queries each request
runs (bench/pages.py measures their CPU)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from unittest import mock

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import set_script_prefix

from imbue import ratelimit
from simulations import pages
from simulations.learners import SESSION_KEY
from simulations.models import Conversation, Learner, Situation

pytestmark = pytest.mark.django_db

LIBRARY = "/practice/library/"
TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture
def address() -> Iterator[str]:
    ip = f"2001:db8:{uuid.uuid4().hex[:4]}::7"
    yield ip
    ratelimit.reset(f"starts:ip:{ratelimit._address_key(ip)}")


def situation(title: str, **fields: object) -> Situation:
    values: dict[str, object] = {
        "slug": f"test-{uuid.uuid4().hex[:12]}",
        "situation": "My neighbour plays loud music after midnight on weekdays.",
        "goal": "Agree on quiet after eleven on weeknights.",
        "category": "social",
        "difficulty": 3,
    }
    values.update(fields)
    return Situation.objects.create(title=title, **values)


def library_page(client: Client) -> str:
    response = client.get(LIBRARY)
    assert response.status_code == 200
    return response.content.decode()


def test_the_library_shows_active_library_situations_grouped_with_a_form_each() -> None:
    learner = Learner.objects.create()
    work = situation("Ask for a day off", category="work", difficulty=2)
    family = situation("Dad's driving & <safety>", category="family", difficulty=7)
    situation("Switched off", is_active=False)
    situation("Someone's own", learner=learner)
    page = library_page(Client())
    assert "Ask for a day off" in page and "Dad&#x27;s driving &amp; &lt;safety&gt;" in page
    assert "Switched off" not in page and "Someone&#x27;s own" not in page
    assert page.index(">Family</h2>") < page.index(">Work</h2>")  # the categories' own order
    for item in (work, family):
        assert f'action="/practice/situations/{item.pk}/practise/"' in page
    assert "Goal: Agree on quiet after eleven on weeknights. · difficulty 7/9" in page


def test_an_empty_library_says_so() -> None:
    Situation.objects.filter(learner__isnull=True).delete()
    assert "The library is empty." in library_page(Client())


def test_every_form_carries_this_browsers_own_token_and_a_press_starts_the_conversation(
    address: str,
) -> None:
    item = situation("Ask for a day off")
    situation("Another one")
    first, second = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    page_1, page_2 = library_page(first), library_page(second)
    tokens_1, tokens_2 = set(TOKEN.findall(page_1)), set(TOKEN.findall(page_2))
    assert len(tokens_1) == 1 and len(tokens_2) == 1 and tokens_1 != tokens_2
    assert pages._CSRF_SLOT not in page_1
    # The page's htmx header carries the same token as its forms.
    assert f'"X-CSRFToken": "{tokens_1.pop()}"' in page_1
    token_2 = tokens_2.pop()
    # A form without a token (or with a made-up one) is refused, the page's own goes through.
    url = f"/practice/situations/{item.pk}/practise/"
    assert second.post(url, REMOTE_ADDR=address).status_code == 403
    made_up = {"csrfmiddlewaretoken": "x" * 64}
    assert second.post(url, made_up, REMOTE_ADDR=address).status_code == 403
    response = second.post(url, {"csrfmiddlewaretoken": token_2}, REMOTE_ADDR=address)
    assert response.status_code == 302
    assert Conversation.objects.get(learner_id=second.session[SESSION_KEY]).situation == item


def test_the_list_is_rendered_once_while_the_library_stays_the_same() -> None:
    situation("Ask for a day off")
    library_page(Client())
    with mock.patch.object(pages, "render_to_string", wraps=pages.render_to_string) as render:
        for _ in range(3):
            library_page(Client())
    assert render.call_count == 0


@pytest.mark.parametrize(
    "change",
    [
        # The admin's form (save), a bulk action (update), a deletion, an addition, and the
        # library being loaded again: each shows on the very next request.
        "rename",
        "bulk_rename",
        "deactivate",
        "delete",
        "add",
        "recategorise",
    ],
)
def test_any_change_to_the_library_shows_on_the_next_request(change: str) -> None:
    kept = situation("Ask for a day off", category="work")
    changed = situation("Return the borrowed car", category="family")
    before = library_page(Client())
    assert before.index("Return the borrowed car") < before.index(">Work</h2>")
    if change == "rename":
        changed.title = "Return the car, full"
        changed.save()
    elif change == "bulk_rename":
        Situation.objects.filter(pk=changed.pk).update(goal="A brand new goal.")
    elif change == "deactivate":
        Situation.objects.filter(pk=changed.pk).update(is_active=False)
    elif change == "delete":
        changed.delete()
    elif change == "add":
        situation("A third situation", category="social")
    elif change == "recategorise":
        Situation.objects.filter(pk=changed.pk).update(category="work")
    after = library_page(Client())
    assert "Ask for a day off" in after and f"/situations/{kept.pk}/practise/" in after
    shown = {
        "rename": lambda: (
            "Return the car, full" in after and "Return the borrowed car" not in after
        ),
        "bulk_rename": lambda: "A brand new goal." in after,
        "deactivate": lambda: "Return the borrowed car" not in after,
        "delete": lambda: "Return the borrowed car" not in after,
        "add": lambda: "A third situation" in after,
        # Moved from the family section to the work one (the last of those on the page).
        "recategorise": lambda: after.index("Return the borrowed car") > after.index(">Work</h2>"),
    }
    assert shown[change]()


def test_the_list_follows_the_address_prefix_the_site_is_served_under() -> None:
    item = situation("Ask for a day off")
    assert f'action="/practice/situations/{item.pk}/practise/"' in library_page(Client())
    # What the server sets for a site served under /imbue/ (the test client sets none).
    set_script_prefix("/imbue/")
    try:
        page = library_page(Client())
    finally:
        set_script_prefix("/")
    assert f'action="/imbue/practice/situations/{item.pk}/practise/"' in page
    assert f'action="/practice/situations/{item.pk}/practise/"' in library_page(Client())


# --- the queries of each request ---------------------------------------------------------------


def statements(call) -> list[str]:  # type: ignore[no-untyped-def]
    with CaptureQueriesContext(connection) as captured:
        response = call()
    return response, [q["sql"] for q in captured.captured_queries]


def test_a_new_browsers_arrival_runs_few_queries_and_writes_its_session_once(
    address: str, no_llm: None
) -> None:
    item = situation("Ask for a day off")
    client = Client(REMOTE_ADDR=address)
    _, library = statements(lambda: client.get(LIBRARY))
    assert len(library) == 1  # the rows; no session, no learner
    response, practise = statements(
        lambda: client.post(f"/practice/situations/{item.pk}/practise/")
    )
    assert response.status_code == 302
    session_writes = [sql for sql in practise if "django_session" in sql]
    # One INSERT of the session, holding the learner: no empty row first, no key lookup, no
    # UPDATE after; and the learner is read no second time after being created.
    assert len(session_writes) == 1 and session_writes[0].startswith("INSERT")
    assert [sql for sql in practise if 'FROM "simulations_learner"' in sql] == []
    page, reads = statements(lambda: client.get(response["Location"]))
    assert page.status_code == 200
    assert len(reads) == 4  # session, conversation with situation, transcript, check-ins
    assert "Practise this conversation" in page.content.decode()


def test_the_conversation_page_is_only_its_learners(address: str, no_llm: None) -> None:
    item = situation("Ask for a day off")
    owner, other = Client(REMOTE_ADDR=address), Client(REMOTE_ADDR=address)
    location = owner.post(f"/practice/situations/{item.pk}/practise/")["Location"]
    assert owner.get(location).status_code == 200
    assert Client().get(location).status_code == 404  # no session at all
    other.get("/practice/")  # a learner of its own
    assert other.get(location).status_code == 404
    assert owner.get("/practice/c/999999999/").status_code == 404


def test_practise_takes_the_library_and_the_learners_own_only(address: str, no_llm: None) -> None:
    client = Client(REMOTE_ADDR=address)
    client.get("/practice/")
    mine = situation("My own", learner_id=client.session[SESSION_KEY])
    someone_else = situation("Theirs", learner=Learner.objects.create())
    off = situation("Switched off", is_active=False)
    codes = {
        s.title: client.post(f"/practice/situations/{s.pk}/practise/").status_code
        for s in (mine, someone_else, off)
    }
    assert codes == {"My own": 302, "Theirs": 404, "Switched off": 404}
