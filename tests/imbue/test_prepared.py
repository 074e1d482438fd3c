"""Queries compiled once (imbue/prepared.py): the same rows and objects as the queryset they are
written as, the SQL built once, each call on its own thread's connection, locks kept."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.db.models.sql.compiler import SQLCompiler
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from imbue import ratelimit
from imbue.models import LLMCall
from imbue.prepared import PreparedQuery
from simulations.models import LOCKED_FOR_A_TURN, Conversation, Learner, Message, Situation


def conversation_of(learner: Learner, **fields: object) -> Conversation:
    situation = Situation.objects.create(
        learner=learner, situation="My flatmate never does the dishes.", goal="A rota."
    )
    return Conversation.objects.create(learner=learner, situation=situation, **fields)


def locked_the_orm_way(pk: int, learner_id: int) -> Conversation:
    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("situation")
        .annotate(tokens_spent=ratelimit.tokens_used_annotation())
        .get(pk=pk, learner_id=learner_id)
    )


@pytest.mark.django_db
def test_the_locking_read_gives_what_the_queryset_gives_with_no_query_more() -> None:
    learner = Learner.objects.create()
    conversation = conversation_of(learner, max_messages=7)
    other = conversation_of(learner)
    LLMCall.objects.create(purpose="partner", conversation_id=conversation.pk, tokens_in=120)
    LLMCall.objects.create(purpose="feedback", conversation_id=conversation.pk, tokens_out=30)
    with transaction.atomic():
        expected = locked_the_orm_way(conversation.pk, learner.pk)
        with CaptureQueriesContext(connection) as queries:
            found = LOCKED_FOR_A_TURN.get(pk=conversation.pk, learner_id=learner.pk)
            assert found.situation.goal == "A rota."  # read with the row
            assert found.tokens_spent == expected.tokens_spent == 150
        assert len(queries) == 1 and "FOR UPDATE OF" in queries[0]["sql"]
        assert found.pk == conversation.pk and found.max_messages == 7
        assert {
            f.attname: getattr(found, f.attname) for f in Conversation._meta.concrete_fields
        } == {f.attname: getattr(expected, f.attname) for f in Conversation._meta.concrete_fields}
        # Each call its own values: the other conversation, never anything spent.
        assert LOCKED_FOR_A_TURN.get(pk=other.pk, learner_id=learner.pk).tokens_spent == 0


@pytest.mark.django_db
def test_another_learners_id_finds_nothing() -> None:
    owner, stranger = Learner.objects.create(), Learner.objects.create()
    conversation = conversation_of(owner)
    with transaction.atomic(), pytest.raises(Conversation.DoesNotExist):
        LOCKED_FOR_A_TURN.get(pk=conversation.pk, learner_id=stranger.pk)


@pytest.mark.django_db
def test_the_sql_is_built_once_however_many_calls() -> None:
    learner = Learner.objects.create()
    conversations = [conversation_of(learner) for _ in range(3)]
    query = PreparedQuery(
        lambda pk, learner_id: Conversation.objects.select_related("situation").filter(
            pk=pk, learner_id=learner_id
        ),
        pk=int,
        learner_id=int,
    )
    with mock.patch.object(
        SQLCompiler, "as_sql", autospec=True, side_effect=SQLCompiler.as_sql
    ) as compiled:
        found = [query.get(pk=conversations[0].pk, learner_id=learner.pk).pk]
        on_first_use = compiled.call_count
        found += [query.get(pk=c.pk, learner_id=learner.pk).pk for c in conversations * 2]
    assert found == [c.pk for c in conversations[:1] + conversations * 2]
    assert 1 <= on_first_use == compiled.call_count <= 2


@pytest.mark.django_db
def test_values_and_text_arguments_arrive_as_values() -> None:
    learner = Learner.objects.create()
    conversation = conversation_of(learner)
    tricky = "It's 'fine'; DROP TABLE x; -- \u00e9t\u00e9 %s %(x)s"
    for seq, text in enumerate([tricky, "plain", tricky], start=1):
        Message.objects.create(conversation=conversation, seq=seq, role="learner", text=text)
    query = PreparedQuery(
        lambda conversation_id, text: (
            Message.objects.filter(conversation_id=conversation_id, text=text)
            .order_by("seq")
            .values_list("seq", "text")
        ),
        conversation_id=int,
        text=str,
    )
    assert query.all(conversation_id=conversation.pk, text=tricky) == [(1, tricky), (3, tricky)]
    assert query.all(conversation_id=conversation.pk, text="plain") == [(2, "plain")]
    assert query.first(conversation_id=conversation.pk, text="absent") is None
    with pytest.raises(TypeError):  # the ORM would have matched NULL; this SQL never would
        query.all(conversation_id=conversation.pk, text=None)
    assert Message.objects.count() == 3


def test_an_argument_the_orm_rewrites_is_refused_when_compiled(db: None) -> None:
    query = PreparedQuery(
        lambda text: Message.objects.filter(text__icontains=text), text=str
    )  # the SQL gets "%text%", not the value
    with pytest.raises(ValueError, match="unchanged"):
        query.all(text="dishes")
    with pytest.raises(TypeError):
        PreparedQuery(lambda when: Message.objects.filter(created_at=when), when=float).all(
            when=1.0
        )


@pytest.mark.django_db(transaction=True)  # (a test's own transaction would hide it)
def test_a_lock_outside_a_transaction_is_refused_as_django_refuses_it() -> None:
    learner = Learner.objects.create()
    conversation = conversation_of(learner)
    for _ in range(2):  # before it is compiled, and after
        with pytest.raises(TransactionManagementError):
            LOCKED_FOR_A_TURN.get(pk=conversation.pk, learner_id=learner.pk)
        with transaction.atomic():
            LOCKED_FOR_A_TURN.get(pk=conversation.pk, learner_id=learner.pk)


@pytest.fixture
def room_in_the_pool(transactional_db: None) -> Iterator[None]:
    """Two more connections in this process's pool: earlier tests' socket threads may still
    hold theirs, and this test needs one besides the main thread's."""
    pool = connection.pool
    if pool is None:  # DB_POOL=false: every thread opens its own
        yield
        return
    pool.resize(pool.min_size, pool.max_size + 2)
    try:
        yield
    finally:
        pool.resize(pool.min_size, pool.max_size - 2)


def test_each_thread_runs_it_on_its_own_connection_and_the_row_stays_locked(
    room_in_the_pool: None,
) -> None:
    learner = Learner.objects.create()
    conversation = conversation_of(learner)
    with ThreadPoolExecutor(1) as pool:
        with transaction.atomic():
            LOCKED_FOR_A_TURN.get(pk=conversation.pk, learner_id=learner.pk)  # compiled, locked
            # Run on the other thread's connection (Django refuses a connection of another
            # thread), it waits for the lock until its timeout.
            waited = pool.submit(read_in_thread, conversation.pk, learner.pk).result(timeout=30)
        assert isinstance(waited, OperationalError) and "lock" in str(waited)
        assert pool.submit(read_in_thread, conversation.pk, learner.pk).result(timeout=30) == 1


def read_in_thread(pk: int, learner_id: int) -> int | OperationalError:
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '300ms'")
            return len(LOCKED_FOR_A_TURN.all(pk=pk, learner_id=learner_id))
    except OperationalError as error:
        return error
    finally:
        connections.close_all()
