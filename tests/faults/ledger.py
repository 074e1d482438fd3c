"""The fault suite's books: what was injected, what the learner sent and asked, what was kept.

Every fault test writes here as it goes (an injection, a learner message sent, a feedback request
made, how long the learner waited for things to be whole again), then reconciles its own entries
against the database before pytest-django empties it. The session's totals give the one-line
summary printed at the end of the run and written to `test-artifacts/faults-ledger.json`.

What counts as lost:
- a learner message: the learner pressed Send (at least once) and the message is not in the
  database exactly once at the end (missing counts as lost, a second copy as duplicated);
- a feedback request: the server accepted it (the learner saw the quick offline panel), and it is
  not done in the database, or its final panel never reached the learner's page.
A request the server refused with a clear error (503 page, a message in the panel) is not made;
the learner still holds their draft and knows to ask again, and nothing of it may be stored.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SentMessage:
    """One learner message as the learner sent it (possibly several presses of Send)."""

    tag: str
    conversation_id: int
    presses: int = 0
    known_bug: bool = False  # sent in a test of a known bug (strict xfail)
    acked: bool = False  # the learner knows it is stored
    # How: "confirmed" (the page's message-sent) or "transcript" (seen there after a lost socket)
    known_by: str = ""
    stored: int | None = None  # copies in the database at reconciliation


@dataclass
class AskedFeedback:
    """One feedback request the server accepted."""

    request_id: int
    conversation_id: int
    tag: str
    asked_at: float
    shown_at: float | None = None  # the final panel reached the page
    engine: str = ""
    done: bool | None = None  # done in the database at reconciliation
    # Stored by the server although the learner was shown an error instead of the panel.
    orphan: bool = False
    known_bug: bool = False  # asked in a test of a known bug (strict xfail)


@dataclass
class Ledger:
    """Counts for the whole fault run (one instance, `LEDGER`)."""

    injections: Counter = field(default_factory=Counter)
    messages: dict[str, SentMessage] = field(default_factory=dict)
    feedback: dict[int, AskedFeedback] = field(default_factory=dict)
    refused: Counter = field(default_factory=Counter)
    recoveries: list[tuple[str, float]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    stalls: list[str] = field(default_factory=list)  # the learner had to reload the page
    finals: dict[int, tuple[str, float]] = field(default_factory=dict)  # panels seen: engine, at
    started: float = field(default_factory=time.monotonic)

    # -- while a test runs

    def injected(self, kind: str, count: int = 1) -> None:
        """Record `count` injections of fault `kind`."""
        self.injections[kind] += count

    def recovered(self, kind: str, seconds: float) -> None:
        """How long the learner waited, after fault `kind`, until everything was whole again."""
        self.recoveries.append((kind, round(seconds, 3)))

    def sent(self, tag: str, conversation_id: int) -> SentMessage:
        """The learner pressed Send on the message carrying `tag` (again, if known)."""
        entry = self.messages.setdefault(tag, SentMessage(tag, conversation_id))
        entry.presses += 1
        return entry

    def asked(self, request_id: int, conversation_id: int, tag: str) -> AskedFeedback:
        """The server accepted feedback request `request_id`."""
        entry = AskedFeedback(request_id, conversation_id, tag, time.time())
        self.feedback[request_id] = entry
        return entry

    def panel_shown(self, request_id: int, engine: str, at: float) -> None:
        """A page showed the final panel of `request_id` (the first time counts)."""
        self.finals.setdefault(request_id, (engine, at))
        entry = self.feedback.get(request_id)
        if entry is not None and entry.shown_at is None:
            entry.shown_at, entry.engine = at, engine

    def stalled(self, why: str) -> None:
        """Nothing moved on the page and the learner reloaded it (a stall, not a loss)."""
        self.stalls.append(why)

    def refuse(self, what: str) -> None:
        """A request was refused with a clear message (nothing made, nothing lost)."""
        self.refused[what] += 1

    def note(self, finding: str) -> None:
        """Something the suite saw that is not a loss but should be fixed or known."""
        if finding not in self.findings:
            self.findings.append(finding)

    # -- reconciliation against the database (per test, before the database is emptied)

    def reconcile_messages(
        self, stored_by_tag: dict[str, int], tags: list[str], *, known_bug: bool = False
    ) -> list[str]:
        """Set stored counts for `tags`; return a problem line per lost or duplicated message."""
        problems = []
        for tag in tags:
            entry = self.messages[tag]
            entry.stored = stored_by_tag.get(tag, 0)
            entry.known_bug = known_bug
            if entry.stored == 0:
                problems.append(f"lost learner message {tag} (acked={entry.acked})")
            elif entry.stored > 1:
                problems.append(f"learner message {tag} stored {entry.stored} times")
        return problems

    def reconcile_feedback(
        self,
        done_by_id: dict[int, bool],
        ids: list[int],
        orphans: dict[int, tuple[int, str]],
        *,
        known_bug: bool = False,
    ) -> list[str]:
        """Set done flags for `ids` and for `orphans` (stored requests the learner never got a
        panel for: id -> conversation, tag); return a problem line per unanswered request."""
        problems = []
        for request_id, (conversation_id, tag) in orphans.items():
            entry = AskedFeedback(request_id, conversation_id, tag, time.time(), orphan=True)
            self.feedback[request_id] = entry
            if request_id in self.finals:
                entry.engine, entry.shown_at = self.finals[request_id]
        for request_id in [*ids, *orphans]:
            entry = self.feedback[request_id]
            entry.known_bug = known_bug
            entry.done = done_by_id.get(request_id, False)
            if not entry.done:
                problems.append(f"feedback request {request_id} ({entry.tag}) never done")
            elif entry.shown_at is None:
                problems.append(f"feedback request {request_id} ({entry.tag}) never shown")
        return problems

    # -- the totals

    def lost_messages(self, *, known_bug: bool = False) -> int:
        """Learner messages not stored exactly once (in the known-bug tests, or in the others)."""
        return sum(
            1
            for m in self.messages.values()
            if m.stored is not None and m.stored != 1 and m.known_bug == known_bug
        )

    def lost_feedback(self, *, known_bug: bool = False) -> int:
        """Feedback requests made and not answered on the page."""
        return sum(
            1
            for f in self.feedback.values()
            if f.done is not None and not (f.done and f.shown_at) and f.known_bug == known_bug
        )

    @property
    def unreconciled(self) -> int:
        return sum(m.stored is None for m in self.messages.values()) + sum(
            f.done is None for f in self.feedback.values()
        )

    def slowest(self) -> tuple[str, float]:
        return max(self.recoveries, key=lambda r: r[1], default=("none", 0.0))

    def summary(self) -> str:
        """The one line the run ends with."""
        kind, seconds = self.slowest()
        stored = sum(1 for m in self.messages.values() if m.stored == 1)
        answered = sum(1 for f in self.feedback.values() if f.done and f.shown_at)
        known = self.lost_messages(known_bug=True) + self.lost_feedback(known_bug=True)
        return (
            f"faults: {sum(self.injections.values())} injections, "
            f"learner messages {stored}/{len(self.messages)} stored "
            f"(lost {self.lost_messages()}), feedback {answered}/{len(self.feedback)} answered "
            f"(lost {self.lost_feedback()}), {known} lost in known-bug (xfail) tests, "
            f"{len(self.stalls)} stalls needing a reload, slowest recovery {seconds:.1f}s ({kind})"
        )

    def to_dict(self) -> dict[str, Any]:
        kind, seconds = self.slowest()
        return {
            "summary": self.summary(),
            "injections": dict(sorted(self.injections.items())),
            "injections_total": sum(self.injections.values()),
            "messages_sent": len(self.messages),
            "messages_lost": self.lost_messages(),
            "messages_lost_in_known_bug_tests": self.lost_messages(known_bug=True),
            "send_presses": sum(m.presses for m in self.messages.values()),
            "messages_known_by": dict(Counter(m.known_by for m in self.messages.values())),
            "feedback_made": len(self.feedback),
            "feedback_lost": self.lost_feedback(),
            "feedback_lost_in_known_bug_tests": self.lost_feedback(known_bug=True),
            "feedback_engines": dict(Counter(f.engine for f in self.feedback.values())),
            "refused_with_clear_error": dict(self.refused),
            "unreconciled": self.unreconciled,
            "slowest_recovery": {"kind": kind, "seconds": seconds},
            "recoveries_by_kind": _by_kind(self.recoveries),
            "findings": self.findings,
            "stalls_needing_a_reload": self.stalls,
            "wall_s": round(time.monotonic() - self.started, 1),
            "lost_detail": [asdict(m) for m in self.messages.values() if m.stored not in (1,)]
            + [asdict(f) for f in self.feedback.values() if not (f.done and f.shown_at)],
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _by_kind(recoveries: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    kinds: dict[str, list[float]] = {}
    for kind, seconds in recoveries:
        kinds.setdefault(kind, []).append(seconds)
    return {
        kind: {
            "n": len(values),
            "max_s": max(values),
            "mean_s": round(sum(values) / len(values), 2),
        }
        for kind, values in sorted(kinds.items())
    }


LEDGER = Ledger()
