"""Sessions in the database, as Django's own backend keeps them, read with a query compiled once.

Every request of a learner reads its session row (who the learner is); Django's backend builds and
compiles that query again each time. Here it is a `PreparedQuery` (imbue/prepared.py): the same
row, the same expiry rule, the same handling of a missing or expired session. Saving, creating
and deleting are Django's.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.sessions.backends import db
from django.contrib.sessions.models import Session
from django.utils import timezone

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
