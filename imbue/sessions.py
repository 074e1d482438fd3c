"""Sessions in the database, as Django's own backend keeps them, with fewer round trips.

Every request of a learner reads its session row (who the learner is); Django's backend builds and
compiles that query again each time. Here it is a `PreparedQuery` (imbue/prepared.py): the same
row, the same expiry rule, the same handling of a missing or expired session.

A new browser's first session (every arriving learner's "Practise" press) cost Django's backend
three statements and two transactions: `cycle_key` (the guard against session fixation) created
an empty row at once (a SELECT to check that the new key is free, then an INSERT in a
transaction) and the end of the request wrote the data into it (an UPDATE in another). Here:
- `cycle_key` of a session that has no row (no key, or one that was missing or expired) creates
  none: there is no key to fixate, and the session gets a new key when it is saved;
- a new key is not looked up first: the INSERT refuses a key that exists (the primary key), and
  Django's `create` then draws another, as it does after a lost race;
- that INSERT, when the connection is in autocommit, is sent on its own (one statement cannot be
  half done); inside a transaction Django's savepoint stays.
Updating and deleting are Django's.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError
from django.contrib.sessions.models import Session
from django.db import IntegrityError, connections, router
from django.utils import timezone
from django.utils.crypto import get_random_string

from imbue.prepared import PreparedQuery

_LIVE = PreparedQuery(
    lambda session_key, now: Session.objects.filter(session_key=session_key, expire_date__gt=now),
    session_key=str,
    now=datetime,
)


class SessionStore(db.SessionStore):
    def _get_session_from_db(self) -> Session | None:
        # (Django's own also catches SuspiciousOperation, which this read cannot raise.)
        found = _LIVE.first(session_key=self.session_key, now=timezone.now())
        if found is None:
            self._session_key = None  # missing or expired: a new key when next saved
        return found

    def cycle_key(self) -> None:
        data = self._session  # loaded first: a key whose row is gone is dropped here
        if self.session_key is not None:
            super().cycle_key()
            return
        self._session_cache = data
        self.modified = True  # saved (under a new key) at the end of the request

    def _get_new_session_key(self) -> str:
        return get_random_string(32, VALID_KEY_CHARS)  # a taken one fails the INSERT: see above

    def save(self, must_create: bool = False) -> None:
        using = router.db_for_write(Session)
        if not must_create or self.session_key is None or not connections[using].get_autocommit():
            super().save(must_create=must_create)
            return
        obj = self.create_model_instance(self._get_session(no_load=True))
        try:
            obj.save(force_insert=True, using=using)
        except IntegrityError as error:
            raise CreateError from error
