"""Sessions in the database, as Django's own backend keeps them, read with a query compiled once.

Every request of a learner reads its session row (who the learner is); Django's backend builds and
compiles that query again each time. Here it is a `PreparedQuery` (imbue/prepared.py): the same
row, the same expiry rule, the same handling of a missing or expired session. Saving, creating
and deleting are Django's.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.contrib.sessions.backends import db
from django.contrib.sessions.models import Session
from django.core.exceptions import SuspiciousOperation
from django.utils import timezone

from imbue.prepared import PreparedQuery

_LIVE = PreparedQuery(
    lambda session_key, now: Session.objects.filter(session_key=session_key, expire_date__gt=now),
    session_key=str,
    now=datetime,
)


class SessionStore(db.SessionStore):
    def _get_session_from_db(self) -> Session | None:
        try:
            return _LIVE.get(session_key=self.session_key, now=timezone.now())
        except (Session.DoesNotExist, SuspiciousOperation) as e:
            if isinstance(e, SuspiciousOperation):
                logger = logging.getLogger(f"django.security.{e.__class__.__name__}")
                logger.warning(str(e))
            self._session_key = None
            return None
