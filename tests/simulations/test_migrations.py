"""simulations/0005 taken by hand, as README's upgrade notes tell a site with a big message table
(the index built CONCURRENTLY, the migration then recorded as done), ends with the schema the
migration itself makes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

README = Path(__file__).resolve().parents[2] / "README.md"
BEFORE = [("simulations", "0004_conversation_rate_limits")]
SEND_KEY = [("simulations", "0005_message_send_key")]


def migrate(targets: list[tuple[str, str]]) -> None:
    MigrationExecutor(connection).migrate(targets)  # a new one reads what is applied now


@pytest.fixture
def latest_after() -> Iterator[None]:
    """Leave the database at the latest migration, its schema as migrations make it (the README
    route keeps the column's default: taken back before 0005 and forward again)."""
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    yield
    migrate(BEFORE)
    migrate(latest)


def readme_statements() -> list[str]:
    """The SQL README gives for taking simulations/0005 by hand."""
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), re.S)
    block = next(b for b in blocks if "message_send_key_unique" in b)
    return [s.strip() for s in block.split(";") if s.strip()]


def schema() -> dict[str, object]:
    """The send key's column and index as PostgreSQL has them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type, character_maximum_length, is_nullable FROM "
            "information_schema.columns WHERE table_name = 'simulations_message' "
            "AND column_name = 'send_key'"
        )
        column = cursor.fetchone()
        cursor.execute(
            "SELECT pg_get_indexdef(i.indexrelid), i.indisunique, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'message_send_key_unique'"
        )
        index = cursor.fetchall()
    return {"column": column, "index": index}


def test_the_readme_route_for_0005_ends_with_the_migrations_schema(latest_after: None) -> None:
    migrate(SEND_KEY)
    by_migration = schema()
    assert by_migration["index"] and by_migration["column"]

    migrate(BEFORE)
    assert schema() == {"column": None, "index": []}
    statements = readme_statements()
    assert any("CONCURRENTLY" in s for s in statements)
    with connection.cursor() as cursor:  # autocommit: CONCURRENTLY refuses a transaction
        for statement in statements:
            cursor.execute(statement)
    call_command("migrate", "simulations", "0005", fake=True, verbosity=0)
    assert MigrationExecutor(connection).loader.applied_migrations.keys() >= set(SEND_KEY)
    assert schema() == by_migration
    call_command("migrate", verbosity=0)

    # The index does its work: one key once per conversation, as many messages without a key.
    from simulations.models import Conversation, Learner, Message, Situation

    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner, situation="My boss.", goal="Notice.", category="work", difficulty=3
    )
    conversation = Conversation.objects.create(learner=learner, situation=situation)
    row = {"conversation": conversation, "role": Message.Role.LEARNER, "text": "Hi."}
    Message.objects.create(seq=1, **row)
    Message.objects.create(seq=2, **row)
    Message.objects.create(seq=3, send_key="k" * 22, **row)
    with pytest.raises(IntegrityError, match="message_send_key_unique"), transaction.atomic():
        Message.objects.create(seq=4, send_key="k" * 22, **row)
