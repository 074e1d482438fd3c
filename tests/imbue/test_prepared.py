"""Queries compiled once (imbue/prepared.py): the same rows and objects as the queryset they are
written as, the SQL built once, each call on its own thread's connection, locks kept."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.db.models.sql.compiler import SQLCompiler, SQLUpdateCompiler
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from imbue import ratelimit
from imbue.models import LLMCall
from imbue.prepared import PreparedQuery, PreparedUpdate
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
def test_an_id_no_column_can_hold_finds_nothing_without_asking_the_database() -> None:
    from simulations.models import OWNED_WITH_SITUATION

    learner = Learner.objects.create()
    conversation = conversation_of(learner)
    Message.objects.create(conversation=conversation, seq=1, role="partner", text="Hi.")
    by_seq = PreparedQuery(
        lambda conversation_id, seq: Message.objects.filter(
            conversation_id=conversation_id, seq=seq
        ),
        conversation_id=int,
        seq=int,
    )  # seq is a small integer column
    assert OWNED_WITH_SITUATION.first(pk=conversation.pk, learner_id=learner.pk) == conversation
    for huge in (2**63, -(2**63) - 1, 10**30):
        with CaptureQueriesContext(connection) as queries:
            assert OWNED_WITH_SITUATION.first(pk=huge, learner_id=learner.pk) is None
            assert OWNED_WITH_SITUATION.all(pk=conversation.pk, learner_id=huge) == []
            with pytest.raises(Conversation.DoesNotExist):
                OWNED_WITH_SITUATION.get(pk=huge, learner_id=learner.pk)
        assert len(queries) == 0
    assert by_seq.all(conversation_id=conversation.pk, seq=1)[0].text == "Hi."
    assert by_seq.all(conversation_id=conversation.pk, seq=2**40) == []  # past the column's type


@pytest.mark.django_db
def test_the_conversation_page_of_an_impossible_id_is_a_plain_404(client) -> None:
    client.get("/practice/library/")
    for number in ("9" * 20, "9223372036854775808"):
        assert client.get(f"/practice/c/{number}/").status_code == 404


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
    before = PreparedQuery(lambda when: Message.objects.filter(created_at__lt=when), when=datetime)
    assert before.all(when=datetime.now(UTC)) == []
    with pytest.raises(TypeError):  # naive: the ORM would guess its zone
        before.all(when=datetime(2026, 1, 1))


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


# --------------------------------------------------------------------------- updates

STORED = PreparedUpdate(
    lambda pk, attempts: Message.objects.filter(pk=pk, attempts=attempts, state="streaming"),
    pk=int,
    attempts=int,
    changes={
        "text": str, "agreed": bool, "completed_at": datetime, "llm_call_id": int,
        "resistance": float,
    },
    fixed={"state": "complete", "error": ""},
)  # fmt: skip


def streaming_reply(conversation: Conversation, seq: int, attempts: int = 1) -> Message:
    return Message.objects.create(
        conversation=conversation, seq=seq, role="partner", state="streaming", attempts=attempts,
        error="before",
    )  # fmt: skip


@pytest.mark.django_db
def test_an_update_changes_what_the_querysets_update_changes() -> None:
    learner = Learner.objects.create()
    conversation = conversation_of(learner)
    ours, theirs = streaming_reply(conversation, 2), streaming_reply(conversation, 4)
    prepared_twin, orm_twin = streaming_reply(conversation, 6), streaming_reply(conversation, 8)
    when = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
    tricky = "It's 'fine'; DROP TABLE x; -- \u00e9t\u00e9 %s %(x)s"
    changes = {
        "text": tricky, "agreed": True, "completed_at": when, "llm_call_id": None,
        "resistance": 0.25,
    }  # fmt: skip
    assert STORED.update(changes, pk=ours.pk, attempts=1) == 1
    assert STORED.update(changes, pk=ours.pk, attempts=1) == 0  # no longer streaming
    assert STORED.update(changes, pk=theirs.pk, attempts=2) == 0  # another attempt's
    # The same changes the ORM's way, to compare every column.
    STORED.update({**changes, "llm_call_id": 42}, pk=prepared_twin.pk, attempts=1)
    Message.objects.filter(pk=orm_twin.pk, attempts=1, state="streaming").update(
        **{**changes, "llm_call_id": 42}, state="complete", error=""
    )
    ours.refresh_from_db()
    theirs.refresh_from_db()
    assert (ours.text, ours.agreed, ours.completed_at, ours.llm_call_id, ours.resistance) == (
        tricky, True, when, None, 0.25,
    )  # fmt: skip
    assert (ours.state, ours.error) == ("complete", "")
    assert (theirs.state, theirs.text, theirs.error) == ("streaming", "", "before")

    def columns(message: Message) -> dict[str, object]:
        message.refresh_from_db()
        return {
            f.attname: getattr(message, f.attname)
            for f in Message._meta.concrete_fields
            if f.attname not in {"id", "seq", "created_at"}
        }

    assert columns(prepared_twin) == columns(orm_twin)
    # Each call its own values: False this time, and a later time.
    changes = {**changes, "agreed": False, "completed_at": when + timedelta(hours=1)}
    assert STORED.update(changes, pk=theirs.pk, attempts=1) == 1
    theirs.refresh_from_db()
    assert (theirs.agreed, theirs.completed_at) == (False, when + timedelta(hours=1))
    # A subclass of a value's type is passed as it is (a test clock's datetime, a choice).

    class Clock(datetime):
        pass

    later = Clock(2026, 12, 7, tzinfo=UTC)
    assert STORED.update({**changes, "completed_at": later}, pk=prepared_twin.pk, attempts=1) == 0
    reply = streaming_reply(conversation, 10)
    assert STORED.update({**changes, "completed_at": later}, pk=reply.pk, attempts=1) == 1
    reply.refresh_from_db()
    assert reply.completed_at == later


@pytest.mark.django_db
def test_an_updates_sql_is_built_once_however_many_calls() -> None:
    learner = Learner.objects.create()
    conversation = conversation_of(learner)
    replies = [streaming_reply(conversation, seq) for seq in (2, 4, 6)]
    update = PreparedUpdate(lambda pk: Message.objects.filter(pk=pk), pk=int, changes={"text": str})
    with (
        mock.patch.object(
            SQLUpdateCompiler, "as_sql", autospec=True, side_effect=SQLUpdateCompiler.as_sql
        ) as compiled,
        CaptureQueriesContext(connection) as queries,
    ):
        update.update({"text": "first"}, pk=replies[0].pk)
        on_first_use = compiled.call_count
        for reply in replies * 2:
            assert update.update({"text": f"reply {reply.seq}"}, pk=reply.pk) == 1
    assert 1 <= on_first_use == compiled.call_count <= 2
    assert len(queries) == 7 and all(q["sql"].startswith("UPDATE") for q in queries)
    assert sorted(Message.objects.values_list("text", flat=True)) == [
        "reply 2", "reply 4", "reply 6",
    ]  # fmt: skip


@pytest.mark.django_db
def test_an_update_refuses_what_the_orm_would_change_or_read_otherwise() -> None:
    learner = Learner.objects.create()
    reply = streaming_reply(conversation_of(learner), 2)
    good = {
        "text": "x", "agreed": False, "completed_at": datetime.now(UTC), "llm_call_id": 1,
        "resistance": 0.5,
    }  # fmt: skip
    for bad in (
        {"completed_at": datetime(2026, 1, 1)},  # naive: the ORM would guess its zone
        {"text": None},  # not a nullable field
        {"llm_call_id": True},  # a bool is not an id
        {"resistance": "0.5"},
    ):
        with pytest.raises(TypeError):
            STORED.update({**good, **bad}, pk=reply.pk, attempts=1)
    with pytest.raises(TypeError):
        STORED.update({"text": "x"}, pk=reply.pk, attempts=1)  # a change left out
    with pytest.raises(TypeError):
        STORED.update(good, pk=None, attempts=1)  # the ORM would have matched NULL
    with pytest.raises(ValueError, match="unchanged"):  # JSON: adapted on the way
        PreparedUpdate(
            lambda pk: Message.objects.filter(pk=pk), pk=int, changes={"ratings": str}
        ).update({"ratings": "{}"}, pk=reply.pk)
    with pytest.raises(TypeError):
        PreparedUpdate(lambda when: Message.objects.filter(created_at=when), when=float, changes={})
    reply.refresh_from_db()
    assert (reply.state, reply.text) == ("streaming", "")  # nothing was changed by any of it


@pytest.mark.django_db(transaction=True)  # (a test's own transaction would hide it)
def test_an_update_in_a_transaction_is_undone_with_it() -> None:
    learner = Learner.objects.create()
    reply = streaming_reply(conversation_of(learner), 2)
    update = PreparedUpdate(lambda pk: Message.objects.filter(pk=pk), pk=int, changes={"text": str})
    with pytest.raises(RuntimeError), transaction.atomic():
        assert update.update({"text": "undone"}, pk=reply.pk) == 1
        raise RuntimeError
    reply.refresh_from_db()
    assert reply.text == ""
    with transaction.atomic():
        update.update({"text": "kept"}, pk=reply.pk)
    reply.refresh_from_db()
    assert reply.text == "kept"
