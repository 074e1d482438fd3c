"""The pool's connection check (imbue/postgres): no round trip for a healthy connection, and a
connection PostgreSQL ended while it rested in the pool is replaced, not handed out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from imbue.postgres.base import check_connection


def conninfo() -> str:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v})


@pytest.fixture
def pool(db: None) -> Iterator[ConnectionPool]:
    with ConnectionPool(
        conninfo(), min_size=1, max_size=1, check=check_connection, kwargs={"autocommit": True}
    ) as found:
        found.wait()
        yield found


def backend_pid(conn: psycopg.Connection[Any]) -> int:
    return conn.info.backend_pid


def queries_sent(pool: ConnectionPool) -> int:
    """How many queries taking a connection from `pool` sends (the check's own)."""
    with mock.patch.object(
        psycopg.Connection, "execute", autospec=True, side_effect=psycopg.Connection.execute
    ) as execute:
        conn = pool.getconn()
        pool.putconn(conn)
    return execute.call_count


def test_a_healthy_connection_leaves_the_pool_without_a_query(pool: ConnectionPool) -> None:
    assert queries_sent(pool) == 0
    # psycopg's own check, for contrast: one query each time.
    with ConnectionPool(
        conninfo(),
        min_size=1,
        max_size=1,
        check=ConnectionPool.check_connection,
        kwargs={"autocommit": True},
    ) as plain:
        plain.wait()
        assert queries_sent(plain) == 1


def test_a_connection_postgresql_ended_is_replaced_not_handed_out(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        ended = backend_pid(conn)
    with psycopg.connect(conninfo(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [ended])
    time.sleep(0.2)  # PostgreSQL's goodbye reaches the resting connection's socket
    with pool.connection() as conn:
        assert backend_pid(conn) != ended
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_connection_in_a_transaction_or_closed_fails_the_check(pool: ConnectionPool) -> None:
    with psycopg.connect(conninfo()) as conn:
        conn.execute("SELECT 1")  # not autocommit: a transaction is open
        with pytest.raises(psycopg.OperationalError):
            check_connection(conn)
        conn.rollback()
        check_connection(conn)
        conn.close()
        with pytest.raises(psycopg.OperationalError):
            check_connection(conn)


@pytest.mark.django_db(transaction=True)
def test_django_pool_uses_this_check() -> None:
    """Through Django: a connection taken from its pool again sends no check query."""
    connection.ensure_connection()
    connection.close()  # back to the pool
    with mock.patch.object(
        psycopg.Connection, "execute", autospec=True, side_effect=psycopg.Connection.execute
    ) as execute:
        connection.ensure_connection()
    connection.close()
    assert connection.pool is not None and execute.call_count == 0
