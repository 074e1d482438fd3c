"""Django's PostgreSQL backend, with a pool that checks a connection without a round trip.

psycopg's own check (`ConnectionPool.check_connection`, what Django installs with
`CONN_HEALTH_CHECKS`) sends an empty query each time a connection leaves the pool: one more round
trip before the first query of every request, socket event and task, on the path to the
partner's first word. A connection resting in the pool has nothing to read, so `check_connection`
looks first: PostgreSQL tells a connection it is ending it (a restart, `pg_terminate_backend`, an
idle timeout) with an error message before closing it, and a crash closes the socket; either
makes the socket readable, and only then is the full check run (it fails, so the pool replaces
the connection). What neither check sees quickly is a connection whose network silently went
away (a half-open socket): the full check too would wait for TCP to give up.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.db.backends.postgresql import base
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg_pool import ConnectionPool


def check_connection(conn: psycopg.Connection[Any]) -> None:
    """Return quietly if `conn` looks usable, else raise (the pool then discards it)."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    pgconn = conn.pgconn
    if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
        raise psycopg.OperationalError("the connection is not idle")
    readable, _, _ = select.select([pgconn.socket], [], [], 0)
    if readable:
        # Something came while it rested: most likely PostgreSQL's goodbye. Ask properly.
        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> ConnectionPool | None:
        created = self.alias not in self._connection_pools
        pool = super().pool
        if created and pool is not None and self.settings_dict["CONN_HEALTH_CHECKS"]:
            # Django passes psycopg's check; the pool is not open yet, so none has run.
            # (psycopg_pool 3.3 keeps it as `_check`; tests/imbue/test_postgres.py fails if not.)
            pool._check = check_connection
        return pool
