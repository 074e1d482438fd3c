"""Sessions (imbue/sessions.py): Django's database sessions, read with a query compiled once."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore as DjangoStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.models.sql.compiler import SQLCompiler
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from imbue import sessions


def test_the_product_uses_it() -> None:
    assert settings.SESSION_ENGINE == "imbue.sessions"


@pytest.mark.django_db
def test_a_live_session_reads_as_djangos_own_store_reads_it() -> None:
    saved = DjangoStore()
    saved["learner_id"] = 42
    saved["note"] = "It's 'fine' %s"
    saved.save()
    ours = sessions.SessionStore(saved.session_key)
    with CaptureQueriesContext(connection) as queries:
        assert ours["learner_id"] == 42 and ours["note"] == "It's 'fine' %s"
    assert len(queries) == 1
    assert dict(ours.items()) == dict(DjangoStore(saved.session_key).items())
    assert ours.session_key == saved.session_key


@pytest.mark.django_db
def test_an_expired_or_unknown_session_is_empty_and_gets_a_new_key_when_saved() -> None:
    expired = DjangoStore()
    expired["learner_id"] = 7
    expired.save()
    Session.objects.filter(pk=expired.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    for key in (expired.session_key, "no-such-session-key-at-all"):
        ours = sessions.SessionStore(key)
        assert ours.get("learner_id") is None
        assert ours.session_key is None  # as Django's store: the key is dropped
        ours["learner_id"] = 8
        ours.save()
        assert ours.session_key not in {None, key}
        assert DjangoStore(ours.session_key)["learner_id"] == 8


@pytest.mark.django_db
def test_the_read_is_compiled_once_however_many_requests() -> None:
    keys = []
    for n in range(3):
        store = DjangoStore()
        store["n"] = n
        store.save()
        keys.append(store.session_key)
    sessions.SessionStore(keys[0]).load()  # compiled here (if no test did it before)
    with mock.patch.object(
        SQLCompiler, "as_sql", autospec=True, side_effect=SQLCompiler.as_sql
    ) as compiled:
        assert [sessions.SessionStore(k)["n"] for k in keys * 2] == [0, 1, 2, 0, 1, 2]
    assert compiled.call_count == 0


@pytest.mark.django_db
def test_a_learners_pages_know_the_browser_by_its_session() -> None:
    from simulations.learners import SESSION_KEY
    from simulations.models import Learner, Situation
    from simulations.services import start_conversation

    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner, situation="My flatmate never does the dishes.", goal="A rota."
    )
    conversation = start_conversation(learner=learner, situation=situation)
    owner = Client()
    session = owner.session  # made by the configured engine: ours
    assert isinstance(session, sessions.SessionStore)
    session[SESSION_KEY] = learner.pk
    session.save()
    page = f"/practice/c/{conversation.pk}/"
    assert owner.get(page).status_code == 200
    assert Client().get(page).status_code == 404


# --- a new browser's first session: one INSERT ---------------------------------------------------


@pytest.mark.django_db(transaction=True)  # autocommit, as a request's session is saved
def test_cycling_a_new_session_writes_nothing_until_saved_then_one_insert() -> None:
    store = sessions.SessionStore()
    with CaptureQueriesContext(connection) as queries:
        store.cycle_key()
        store["learner_id"] = 5
    assert queries.captured_queries == [] and store.session_key is None
    with CaptureQueriesContext(connection) as queries:
        store.save()
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]
    assert DjangoStore(store.session_key)["learner_id"] == 5


@pytest.mark.django_db
def test_cycling_a_saved_session_still_moves_it_to_a_new_key_and_drops_the_old() -> None:
    store = sessions.SessionStore()
    store["note"] = "kept"
    store.save()
    old = store.session_key
    reopened = sessions.SessionStore(old)
    reopened.cycle_key()  # a learner attached to a browser that had a session (fixation guard)
    reopened["learner_id"] = 9
    reopened.save()
    assert reopened.session_key not in {None, old}
    assert not Session.objects.filter(pk=old).exists()
    assert dict(DjangoStore(reopened.session_key).items()) == {"note": "kept", "learner_id": 9}


@pytest.mark.django_db
def test_cycling_an_expired_session_makes_a_new_key_and_keeps_no_stale_row() -> None:
    expired = DjangoStore()
    expired["learner_id"] = 3
    expired.save()
    Session.objects.filter(pk=expired.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    store = sessions.SessionStore(expired.session_key)
    store.cycle_key()
    store["learner_id"] = 4
    store.save()
    assert store.session_key not in {None, expired.session_key}
    assert DjangoStore(store.session_key)["learner_id"] == 4


@pytest.mark.django_db
def test_a_new_key_that_is_taken_is_drawn_again_and_the_other_session_is_untouched() -> None:
    taken = DjangoStore()
    taken["who"] = "someone else"
    taken.save()
    fresh = "f" * 32
    store = sessions.SessionStore()
    store["who"] = "me"
    with mock.patch.object(sessions, "get_random_string", side_effect=[taken.session_key, fresh]):
        store.save()
    assert store.session_key == fresh
    assert DjangoStore(taken.session_key)["who"] == "someone else"
    assert DjangoStore(fresh)["who"] == "me"


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_a_taken_key_does_not_break_the_transaction() -> None:
    from django.db import transaction

    taken = DjangoStore()
    taken.save()
    store = sessions.SessionStore()
    store["who"] = "me"
    with transaction.atomic():
        with mock.patch.object(
            sessions, "get_random_string", side_effect=[taken.session_key, "g" * 32]
        ):
            store.save()
        assert Session.objects.filter(pk="g" * 32).exists()  # the transaction goes on
    assert DjangoStore("g" * 32)["who"] == "me"
