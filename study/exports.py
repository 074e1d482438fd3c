"""A study's data, out: three CSV files, one nested JSON record, and the codebook of them all.

- ``long.csv``: one row per answer (participant x situation x time point x survey item).
- ``wide.csv``: one row per participant: their path, every answer, and each chat's summary.
- ``messages.csv``: one row per draft, per sent message and per skill suggestion shown, in
  transcript order, with ratings, chosen strategies, resistance, whether feedback was computed,
  delivered and viewed, the skill suggested, and the model call behind each row (model, prompt
  version, latency, retries).
- ``study.json``: the full nested record (design, survey items, every participant's situations,
  steps, answers, chats with messages, drafts, feedback, check-ins, suggestions and model calls).
- ``codebook.csv``: a row about each file it ships with, then every column of those files: its
  type, allowed values and meaning. The bundles ("csv", "json") describe their own files;
  ``bonus.csv`` (the payment list) is a download of its own, described by a codebook.csv
  downloaded on its own, which covers every file offered.

Pseudonymous by default: participants are known by their study code; recruitment ids (Prolific
ids, labels) appear only when ``Options.include_recruitment_ids`` is set; otherwise a participant's
own ids typed into a text read ``[redacted]`` there (their resume keys always do). Everything
is produced row by row from generators: participants are read in batches of ``BATCH`` by key,
answers through a server-side cursor (``.iterator(chunk_size=...)``), and the bytes leave in
chunks of about ``CHUNK``, so memory stays flat however large the study. Text cells are defused
(``defuse``) so a spreadsheet never runs a participant's words as a formula; JSON keeps text as
written. Empty cells (JSON null) mean missing or not applicable; false and 0 are values.

This module also reads the rows that ``study.analysis`` needs (``survey_observations``,
``skill_ratings``), so the dashboard and the exports describe the same data.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Case, OuterRef, Q, Subquery, When
from django.utils import timezone

from feedback.models import Draft, FeedbackRequest
from feedback.skills import LEVELS, SKILL_KEYS, STRATEGIES, rated_skills, score
from imbue import audit
from imbue.models import AuditEntry, LLMCall
from imbue.security import csv_safe
from simulations.models import EmotionCheckin, Message, SkillSuggestion
from study import analysis, flow
from study.codebook import (
    BONUS,
    CODEBOOK,
    FORMAT_VERSION,
    FORMATS,
    JSON_FILE,
    LONG,
    MESSAGES,
    OFFERED,
    PSEUDONYMOUS,
    RECRUITMENT_FIELDS,
    REDACT_MIN_LENGTH,
    REDACTED,
    WIDE,
    Options,
    about,
    codebook,
    columns,
    survey_items,
)
from study.models import (
    ConsentVersion,
    Participant,
    ParticipantSituation,
    Slot,
    StepVisit,
    Study,
    StudyChat,
    SurveyAnswer,
    SurveyItem,
    Time,
    WithdrawalReceipt,
)

BATCH = 100  # participants read (with all their rows) at a time
CHUNK = 64 * 1024  # bytes handed on at a time
ANSWER_CURSOR_ROWS = 2000


# --------------------------------------------------------------------------- cells and chunks


def cell(value: Any) -> Any:
    """A value as written to a CSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, str):
        # Line breaks as "\n" only: the writer quotes a field holding its line terminator, not
        # a lone carriage return (a model's reply may hold one), which readers take as the end
        # of the row, shifting every later column.
        return defuse(value.replace("\r\n", "\n").replace("\r", "\n"))
    return value


# A cell starting with one of these is run (or, with |, handed to DDE) by some spreadsheet; and
# one starting with an apostrophe gets one more, so that taking one off always gives the text.
_RUN_START = ("\t", "\r", "\n", "|", "'")
# Text that is one plain number: a spreadsheet reads it as that number and runs nothing.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def defuse(text: str) -> str:
    """Text for a CSV cell, after OWASP's advice on CSV injection: a text whose first non-blank
    character starts a formula (= + - @, or their full-width forms), or which starts with a tab,
    a line break or |, gets one leading apostrophe; so does a text that starts with one, so that
    removing one leading apostrophe from an escaped cell always gives the text as written.
    Spreadsheets skip leading blanks before a formula, so " =1+1" runs as well as "=1+1". Plain
    numbers ("-3") are left as they are."""
    if text.startswith(_RUN_START):
        return "'" + text
    stripped = text.lstrip()
    if csv_safe(stripped) != stripped and not _PLAIN_NUMBER.fullmatch(stripped):
        return "'" + text
    return text


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat()


def csv_chunks(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """UTF-8 CSV bytes in chunks of about CHUNK, header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(value) for value in row])
        if buffer.tell() >= CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


class _Sink:
    """A write-only file for zipfile that hands its bytes on instead of keeping them."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data


def zip_chunks(entries: Iterable[tuple[str, Iterable[bytes]]]) -> Iterator[bytes]:
    """A zip archive of (name, chunks) entries, streamed: nothing is held but the current chunk."""
    sink = _Sink()
    stamp = timezone.now().timetuple()[:6]
    # Unseekable output: zipfile writes each entry's sizes after its data (a data descriptor).
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for name, chunks in entries:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as entry:
                for chunk in chunks:
                    entry.write(chunk)
                    if sink.size >= CHUNK:
                        yield sink.take()
            yield sink.take()
    yield sink.take()


# --------------------------------------------------------------------------- reading the study


# Keys that continue a participant's session: never written, only read to redact them from texts.
SECRET_FIELDS = ("resume_key", "learner__resume_code")


def _participant_batches(study: Study, only: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Participants in key order, BATCH at a time (keyset pages: no offset, no long cursor)."""
    size = BATCH
    last = 0
    people = Participant.objects.filter(study=study)
    if only is not None:
        people = people.filter(pk=only)
    fields = (
        "pk", "code", *RECRUITMENT_FIELDS, *SECRET_FIELDS, "source", "stratum", "step", "status",
        "consent_version", "consented_at", "started_at", "finished_at", "arm__key",
        "allocation__position", "allocation__stratum", "allocation__method",
        "allocation__assigned_at",
    )  # fmt: skip
    while True:
        batch = list(people.filter(pk__gt=last).order_by("pk").values(*fields)[:size])
        if not batch:
            return
        yield batch
        last = batch[-1]["pk"]


def _group(rows: Iterable[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row[key]].append(row)
    return grouped


@dataclass
class _Batch:
    """Everything about one batch of participants that the files need, grouped for lookup."""

    participants: list[dict[str, Any]]
    situations: dict[Any, list[dict[str, Any]]]
    answers: dict[Any, list[dict[str, Any]]]
    visits: dict[Any, list[dict[str, Any]]]
    chats: dict[Any, list[dict[str, Any]]]
    messages: dict[Any, list[dict[str, Any]]]
    drafts: dict[Any, list[dict[str, Any]]]
    feedback: dict[Any, list[dict[str, Any]]]
    checkins: dict[Any, list[dict[str, Any]]]
    suggestions: dict[Any, list[dict[str, Any]]]
    calls: dict[int, dict[str, Any]]
    calls_by_chat: dict[Any, list[dict[str, Any]]]

    def release(self) -> None:
        """Drop every row (the batch has been written)."""
        for name in self.__dataclass_fields__:
            setattr(self, name, [] if name == "participants" else {})


_STEP_ORDER = {step.key: index for index, step in enumerate(flow.STEPS)}

MESSAGE_FIELDS = (
    "pk", "conversation_id", "seq", "role", "state", "text", "strategies", "ratings",
    "rating_engine", "mastery", "resistance", "resistance_reasons", "agreed", "error",
    "attempts", "llm_call_id", "created_at", "completed_at",
)  # fmt: skip
DRAFT_FIELDS = (
    "pk", "conversation_id", "turn", "revision", "text", "strategies", "used_rewrite",
    "sent_message_id", "created_at",
)  # fmt: skip
FEEDBACK_FIELDS = (
    "pk", "draft_id", "status", "engine", "fallback_reason", "result", "offline_result",
    "llm_call_id", "requested_at", "computed_at", "delivered_at", "viewed_at", "latency_ms",
    "model_ms",
)  # fmt: skip
SUGGESTION_FIELDS = (
    "pk", "conversation_id", "turn", "after_seq", "skill", "reason", "engine", "model",
    "llm_call_id", "created_at",
)  # fmt: skip
CALL_FIELDS = (
    "pk", "purpose", "model", "provider", "prompt_name", "prompt_version", "prompt_hash",
    "params", "response_format", "stream", "tokens_in", "tokens_out", "ttft_ms", "total_ms",
    "attempts", "outcome", "finish_reason", "error", "conversation_id", "message_id",
    "draft_id", "created_at",
)  # fmt: skip


def _load(participants: list[dict[str, Any]], *, answers: bool, texts: bool, calls: bool) -> _Batch:
    ids = [p["pk"] for p in participants]
    situations = ParticipantSituation.objects.filter(participant_id__in=ids).values(
        "participant_id", "slot", "situation__category", "situation__difficulty",
        "situation__situation", "situation__goal",
    )  # fmt: skip
    chats = list(
        StudyChat.objects.filter(participant_id__in=ids).values(
            "participant_id",
            "step",
            "kind",
            "slot",
            "conversation_id",
            "conversation__status",
            "conversation__partner_engine",
            "conversation__partner_brief",
            "conversation__resistance_start",
            "conversation__max_messages",
            "conversation__strategy_mode",
            "conversation__feedback_enabled",
            "conversation__suggestion_enabled",
            "conversation__worksheet_enabled",
            "conversation__adaptive_enabled",
            "conversation__created_at",
            "conversation__ended_at",
        )
    )
    for chat in chats:
        chat["order"] = _STEP_ORDER.get(chat["step"], len(_STEP_ORDER))
    chats.sort(key=lambda c: (c["participant_id"], c["order"]))
    conversation_ids = [c["conversation_id"] for c in chats]
    message_fields = MESSAGE_FIELDS if texts else tuple(f for f in MESSAGE_FIELDS if f != "text")
    draft_fields = DRAFT_FIELDS if texts else tuple(f for f in DRAFT_FIELDS if f != "text")
    # Every query below goes by an indexed key list of this batch: a join or an OR of
    # subqueries here makes PostgreSQL scan the whole table once per batch (quadratic in all).
    message_rows = list(
        Message.objects.filter(conversation_id__in=conversation_ids)
        .order_by("conversation_id", "seq")
        .values(*message_fields)
    )
    draft_rows = list(
        Draft.objects.filter(conversation_id__in=conversation_ids)
        .order_by("conversation_id", "turn", "revision")
        .values(*draft_fields)
    )
    draft_ids = [d["pk"] for d in draft_rows]
    suggestion_rows = (
        list(
            SkillSuggestion.objects.filter(conversation_id__in=conversation_ids)
            .order_by("conversation_id", "created_at", "pk")
            .values(*SUGGESTION_FIELDS)
        )
        if texts
        else []
    )
    feedback_rows = list(
        FeedbackRequest.objects.filter(draft_id__in=draft_ids)
        .order_by("pk")
        .values(*FEEDBACK_FIELDS)
    )
    call_rows: list[dict[str, Any]] = []
    if calls:
        found: dict[int, dict[str, Any]] = {}
        for query in (
            LLMCall.objects.filter(conversation_id__in=conversation_ids),
            LLMCall.objects.filter(draft_id__in=draft_ids),
        ):
            found.update((row["pk"], row) for row in query.values(*CALL_FIELDS))
        named = {m["llm_call_id"] for m in message_rows} | {f["llm_call_id"] for f in feedback_rows}
        named |= {s["llm_call_id"] for s in suggestion_rows}
        named |= {
            c["conversation__partner_brief"].get("llm_call_id")
            for c in chats
            if isinstance(c["conversation__partner_brief"], dict)
        }
        missing = [pk for pk in named if isinstance(pk, int) and pk not in found]
        found.update(
            (row["pk"], row) for row in LLMCall.objects.filter(pk__in=missing).values(*CALL_FIELDS)
        )
        call_rows = sorted(found.values(), key=lambda row: row["pk"])
    # A call belongs to the chat it names, or to the chat of the message or draft it served.
    chat_of_draft = {d["pk"]: d["conversation_id"] for d in draft_rows}
    chat_of_message = {m["pk"]: m["conversation_id"] for m in message_rows}
    chat_of_call: dict[Any, Any] = {
        f["llm_call_id"]: chat_of_draft.get(f["draft_id"]) for f in feedback_rows
    }
    chat_of_call.update({m["llm_call_id"]: m["conversation_id"] for m in message_rows})
    chat_of_call.update({s["llm_call_id"]: s["conversation_id"] for s in suggestion_rows})
    for c in chats:
        brief = c["conversation__partner_brief"]
        chat_of_call[brief.get("llm_call_id") if isinstance(brief, dict) else None] = c[
            "conversation_id"
        ]
    for call in call_rows:
        call["_chat"] = (
            call["conversation_id"]
            or chat_of_call.get(call["pk"])
            or chat_of_draft.get(call["draft_id"])
            or chat_of_message.get(call["message_id"])
        )
    return _Batch(
        participants=participants,
        situations=_group(situations, "participant_id"),
        answers=_group(
            SurveyAnswer.objects.filter(participant_id__in=ids)
            .order_by("participant_id", "slot", "time", "item__order", "item_key")
            .values(
                "participant_id", "slot", "time", "item_key", "item_version", "value", "answered_at"
            ),
            "participant_id",
        )
        if answers
        else {},
        visits=_group(
            StepVisit.objects.filter(participant_id__in=ids)
            .order_by("participant_id", "entered_at", "pk")
            .values("participant_id", "step", "entered_at", "completed_at"),
            "participant_id",
        )
        if answers
        else {},
        chats=_group(chats, "participant_id"),
        messages=_group(message_rows, "conversation_id"),
        drafts=_group(draft_rows, "conversation_id"),
        feedback=_group(feedback_rows, "draft_id"),
        checkins=_group(
            EmotionCheckin.objects.filter(conversation_id__in=conversation_ids)
            .order_by("conversation_id", "created_at", "pk")
            .values("conversation_id", "phase", "after_seq", "intensity", "emotion", "created_at"),
            "conversation_id",
        )
        if texts
        else {},
        suggestions=_group(suggestion_rows, "conversation_id"),
        calls={c["pk"]: c for c in call_rows},
        calls_by_chat=_group(call_rows, "_chat"),
    )


def _batches(study: Study, only: int | None = None, **what: bool) -> Iterator[_Batch]:
    for participants in _participant_batches(study, only=only):
        batch = _load(participants, **what)
        yield batch
        # The consumer still holds this batch while asking for the next; empty it first, or two
        # batches would be alive at once and the peak would double from the second batch on.
        batch.release()


_JSON_STRING = DjangoJSONEncoder(ensure_ascii=False).encode


# Keys of study.json (and the participant page) whose values are codes from a fixed vocabulary
# (or ids, hashes, versions), never free text: redaction leaves them as they are.
CODED_KEYS = frozenset(
    {
        "participant", "source", "arm", "stratum", "status", "step", "consent_version", "method",
        "category", "item", "item_version", "time", "kind", "partner_engine",
        "partner_brief_source", "strategy_mode", "role", "state", "strategies", "ratings",
        "rating_engine", "engine", "skill", "model", "purpose", "provider", "prompt_name",
        "prompt_version", "prompt_hash", "response_format", "outcome", "finish_reason", "level",
        "chosen",
    }
)  # fmt: skip


class Redaction:
    """A participant's own identifiers, to be taken out of their free texts (see `redaction`).

    Nearly no text holds one, so each is first looked for with a plain substring test on the
    case-folded text (many times quicker than the regular expression), and only a text that
    may hold one is searched for whole words."""

    def __init__(self, ids: Sequence[str]) -> None:
        ids = sorted(ids, key=len, reverse=True)  # the longest first, where one holds another
        alternatives = "|".join(re.escape(i) for i in ids)
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        self._folded = [i.casefold() for i in ids]
        # As a JSON encoder writes them: in an encoded record wherever a text holds one.
        self._encoded = [_JSON_STRING(i)[1:-1].casefold() for i in ids]

    def text(self, value: Any) -> Any:
        """A text with every whole-word occurrence of the ids (any case) replaced."""
        if isinstance(value, str) and len(value) >= REDACT_MIN_LENGTH:
            folded = value.casefold()
            if any(i in folded for i in self._folded):
                return self._pattern.sub(REDACTED, value)
        return value

    def everywhere(self, value: Any, key: str | None = None) -> Any:
        """A JSON value with every string inside it (objects and lists walked) redacted, except
        under the keys of coded fields (CODED_KEYS): a label that happens to spell a code
        ("family", "partner") must not turn the category or the role into [redacted]."""
        if key in CODED_KEYS:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.everywhere(item, k) for k, item in value.items()}
        if isinstance(value, list):
            return [self.everywhere(item, key) for item in value]
        return value

    def may_be_in(self, encoded: str) -> bool:
        """Whether an id may occur in a JSON text (one pass; never a false "no")."""
        folded = encoded.casefold()
        return any(i in folded for i in self._encoded)


def redaction(participant: dict[str, Any], options: Options) -> Redaction:
    """What a participant's free texts lose: their resume keys (never exported), and their
    recruitment ids unless the export includes them; each becomes REDACTED (whole words, any
    case). Ids shorter than REDACT_MIN_LENGTH stay: "sam" or "12" would match ordinary words.
    Their study code stays too: it is in every row already (old participants' resume key is
    their code)."""
    fields = SECRET_FIELDS
    if not options.include_recruitment_ids:
        fields += RECRUITMENT_FIELDS
    code = participant["code"].casefold()
    found = {str(participant[field] or "").strip() for field in fields}
    return Redaction([i for i in found if len(i) >= REDACT_MIN_LENGTH and i.casefold() != code])


def _ids(participant: dict[str, Any], options: Options) -> list[Any]:
    head = [participant["code"]]
    if options.include_recruitment_ids:
        head += [participant[field] for field in RECRUITMENT_FIELDS]
    return [*head, participant["arm__key"]]


# --------------------------------------------------------------------------- long.csv


def long_rows(study: Study, options: Options = PSEUDONYMOUS) -> Iterator[list[Any]]:
    """One row per stored answer, in participant, situation, time (pre first) and item order."""
    difficulty = ParticipantSituation.objects.filter(
        participant_id=OuterRef("participant_id"), slot=OuterRef("slot")
    ).values("situation__difficulty")[:1]
    recruitment = [f"participant__{f}" for f in RECRUITMENT_FIELDS]
    rows = (
        SurveyAnswer.objects.filter(participant__study=study)
        .annotate(
            difficulty=Subquery(difficulty),
            time_order=Case(*(When(time=t, then=i) for i, t in enumerate(Time.values))),
        )
        .order_by("participant_id", "slot", "time_order", "item__order", "item_key")
        .values_list(
            "participant__code",
            *(recruitment if options.include_recruitment_ids else []),
            "participant__arm__key",
            "participant__status",
            "slot",
            "difficulty",
            "time",
            "item_key",
            "item_version",
            "item__construct",
            "item__reverse_scored",
            "value",
            "answered_at",
        )
    )
    for row in rows.iterator(chunk_size=ANSWER_CURSOR_ROWS):
        yield list(row)


# --------------------------------------------------------------------------- wide.csv


def _skill_means(messages: Sequence[dict[str, Any]]) -> tuple[float | None, dict[str, float]]:
    """Chat mastery (mean over messages of each message's mean) and the mean per skill."""
    per_message: list[float] = []
    points: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        if m["role"] != Message.Role.LEARNER or not m["ratings"]:
            continue
        scores = _scores(m["ratings"], m["strategies"])
        if not scores:
            continue
        per_message.append(sum(scores.values()) / len(scores))
        for skill, value in scores.items():
            points[skill].append(value)
    overall = sum(per_message) / len(per_message) if per_message else None
    return overall, {k: sum(v) / len(v) for k, v in points.items()}


def _scores(ratings: dict[str, str], strategies: Sequence[str]) -> dict[str, int]:
    """0-2 score per rated skill of one message (chosen strategies, mindful, confident)."""
    try:
        rated = rated_skills(strategies)
    except ValueError:
        return {}
    out = {}
    for skill in rated:
        level = ratings.get(skill) if isinstance(ratings, dict) else None
        if level in LEVELS[skill]:
            out[skill] = score(skill, level)
    return out


def wide_rows(study: Study, options: Options = PSEUDONYMOUS) -> Iterator[list[Any]]:
    """One row per participant, in the order of `columns(study, WIDE)`."""
    items = [item.key for item in survey_items(study)]
    chat_steps = flow.chat_steps()
    for batch in _batches(study, answers=True, texts=False, calls=False):
        for p in batch.participants:
            situations = {s["slot"]: s for s in batch.situations.get(p["pk"], [])}
            answers = {
                (a["slot"], a["time"], a["item_key"]): a["value"]
                for a in batch.answers.get(p["pk"], [])
            }
            started, finished = p["started_at"], p["finished_at"]
            minutes = (finished - started).total_seconds() / 60 if started and finished else None
            row = [
                *_ids(p, options),
                p["source"],
                p["stratum"],
                p["allocation__position"],
                p["status"],
                p["step"],
                p["consent_version"],
                started,
                p["consented_at"],
                p["allocation__assigned_at"],
                finished,
                minutes,
            ]
            for slot in Slot.values:
                s = situations.get(slot, {})
                row += [s.get("situation__category"), s.get("situation__difficulty")]
            for slot in Slot.values:
                for time in Time.values:
                    row += [answers.get((slot, time, key)) for key in items]
            chats = {c["step"]: c for c in batch.chats.get(p["pk"], [])}
            for step in chat_steps:
                chat = chats.get(step.key)
                if chat is None:
                    row += [None] * (5 + len(SKILL_KEYS))
                    continue
                conversation = chat["conversation_id"]
                messages = batch.messages.get(conversation, [])
                drafts = batch.drafts.get(conversation, [])
                requests = [f for d in drafts for f in batch.feedback.get(d["pk"], [])]
                viewed = (
                    sum(f["viewed_at"] is not None for f in requests)
                    if _feedback_applies(requests, bool(chat["conversation__feedback_enabled"]))
                    else None
                )
                overall, per_skill = _skill_means(messages)
                row += [
                    chat["conversation__status"],
                    sum(m["role"] == Message.Role.LEARNER for m in messages),
                    len(drafts),
                    viewed,
                    overall,
                    *(per_skill.get(skill) for skill in SKILL_KEYS),
                ]
            yield row


# --------------------------------------------------------------------------- messages.csv


def _call_cells(call: dict[str, Any] | None) -> list[Any]:
    if call is None:
        return [None] * 12
    return [
        call["pk"],
        call["purpose"],
        call["model"],
        call["prompt_name"],
        call["prompt_version"],
        call["outcome"],
        call["attempts"],
        max(0, (call["attempts"] or 1) - 1),
        call["ttft_ms"],
        call["total_ms"],
        call["tokens_in"],
        call["tokens_out"],
    ]


def _rating_cells(levels: dict[str, Any], chosen: Any) -> list[Any]:
    """The rated skills' levels: the strategies chosen for this text and the states. A rater
    may also have levels for the others (the offline rater rates all seven); they are not the
    learner's attempt at them, so they stay empty, as the codebook says."""
    rated = set(rated_skills([s for s in (chosen or []) if s in STRATEGIES]))
    return [levels.get(skill) if skill in rated else None for skill in SKILL_KEYS]


def _feedback_levels(result: Any) -> dict[str, Any]:
    skills = result.get("skills", {}) if isinstance(result, dict) else {}
    return {k: v.get("level") for k, v in skills.items() if isinstance(v, dict)}


def message_rows(study: Study, options: Options = PSEUDONYMOUS) -> Iterator[list[Any]]:
    """One row per draft and per sent message: each turn's drafts, then the message, then the
    partner's reply, chat by chat in path order."""
    for batch in _batches(study, answers=False, texts=True, calls=True):
        for p in batch.participants:
            ids = _ids(p, options)
            redact = redaction(p, options).text
            for chat in batch.chats.get(p["pk"], []):
                yield from _chat_rows(batch, ids, chat, redact)


def _feedback_applies(requests: Sequence[dict[str, Any]], offered: bool) -> bool:
    """Whether feedback was on offer for these requests: in a chat with feedback on, or (for
    any chat) a request that was not withheld. A request withheld because feedback is off is
    not applicable; one withheld for safety in a chat with feedback on is (and did not happen)."""
    return offered or any(f["status"] != FeedbackRequest.Status.WITHHELD for f in requests)


def _chat_rows(
    batch: _Batch, ids: list[Any], chat: dict[str, Any], redact: Callable[[Any], Any]
) -> Iterator[list[Any]]:
    conversation = chat["conversation_id"]
    head = [*ids, chat["step"], chat["kind"], chat["slot"], conversation]
    offered = bool(chat["conversation__feedback_enabled"])
    drafts_by_turn = _group(batch.drafts.get(conversation, []), "turn")
    ordered: list[tuple[tuple[int, int, int], list[Any]]] = []
    turn = 0
    for m in batch.messages.get(conversation, []):
        is_learner = m["role"] == Message.Role.LEARNER
        if is_learner:
            turn += 1
        requests = [
            f for d in drafts_by_turn.get(turn, []) for f in batch.feedback.get(d["pk"], [])
        ]
        reasons = m["resistance_reasons"]
        applies = is_learner and _feedback_applies(requests, offered)
        row = [
            *head,
            "message",
            turn or None,
            None,
            m["seq"],
            m["role"],
            m["state"],
            redact(m["text"]),
            ";".join(m["strategies"] or []),
            None,
            None,
            None,
            *_rating_cells(
                m["ratings"] if is_learner and isinstance(m["ratings"], dict) else {},
                m["strategies"],
            ),
            m["mastery"],
            m["rating_engine"] or None,
            m["resistance"],
            redact("; ".join(str(r) for r in reasons))
            if isinstance(reasons, list) and reasons
            else None,
            m["agreed"] if not is_learner else None,
            None,
            None,
            None,
            any(f["computed_at"] for f in requests) if applies else None,
            any(f["delivered_at"] for f in requests) if applies else None,
            any(f["viewed_at"] for f in requests) if applies else None,
            *[None] * 6,
            *_call_cells(batch.calls.get(m["llm_call_id"])),
            redact(m["error"]) or None,
            m["created_at"],
        ]
        ordered.append(((turn, 1 if is_learner else 2, m["seq"], 0, 0), row))
    for d in batch.drafts.get(conversation, []):
        index = drafts_by_turn[d["turn"]].index(d)
        requests = batch.feedback.get(d["pk"], [])
        f = requests[-1] if requests else None
        result = f["result"] if f else {}
        flags: list[bool | None] = (
            [f[moment] is not None for moment in ("computed_at", "delivered_at", "viewed_at")]
            if f is not None and _feedback_applies([f], offered)
            else [None, None, None]
        )
        row = [
            *head,
            "draft",
            d["turn"],
            d["revision"],
            None,
            Message.Role.LEARNER,
            None,
            redact(d["text"]),
            ";".join(d["strategies"] or []),
            d["used_rewrite"],
            None,
            None,
            *_rating_cells(_feedback_levels(result), d["strategies"]),
            result.get("mastery") if isinstance(result, dict) else None,
            (f["engine"] or None) if f else None,
            None,
            None,
            None,
            f["status"] if f else None,
            (f["engine"] or None) if f else None,
            (f["fallback_reason"] or None) if f else None,
            *flags,
            f["requested_at"] if f else None,
            f["computed_at"] if f else None,
            f["delivered_at"] if f else None,
            f["viewed_at"] if f else None,
            f["latency_ms"] if f else None,
            f["model_ms"] if f else None,
            *_call_cells(batch.calls.get(f["llm_call_id"]) if f else None),
            None,
            d["created_at"],
        ]
        ordered.append(((d["turn"], 0, index, 1, 0), row))
    for s in batch.suggestions.get(conversation, []):
        # Among its turn's drafts by time: after those saved before it was asked.
        before = sum(
            1 for d in drafts_by_turn.get(s["turn"], []) if d["created_at"] <= s["created_at"]
        )
        row = [
            *head,
            "suggestion",
            s["turn"],
            None,
            None,
            None,
            None,
            redact(s["reason"]),
            None,
            None,
            s["skill"],
            s["engine"],
            *[None] * (len(SKILL_KEYS) + 17),
            *_call_cells(batch.calls.get(s["llm_call_id"])),
            None,
            s["created_at"],
        ]
        ordered.append(((s["turn"], 0, before, 0, s["pk"]), row))
    ordered.sort(key=lambda pair: pair[0])
    for _, row in ordered:
        yield row


# --------------------------------------------------------------------------- study.json


def _study_record(study: Study, options: Options) -> dict[str, Any]:
    return {
        "format": "imbue-study-export",
        "format_version": FORMAT_VERSION,
        "exported_at": timezone.now(),
        "options": {"include_recruitment_ids": options.include_recruitment_ids},
        "study": {
            "slug": study.slug,
            "name": study.name,
            "status": study.status,
            "target_size": study.target_size,
            "allocation_method": study.allocation_method,
            "block_size": study.block_size,
            "stratify_by": study.stratify_by,
            "seed": study.seed,
            "sequence_hash": study.sequence_hash,
            "design": study.design,
            "opened_at": study.opened_at,
            "closed_at": study.closed_at,
            "max_messages": study.max_messages,
            "training_strategy_mode": study.training_strategy_mode,
            "evaluation_strategy_mode": study.evaluation_strategy_mode,
            "min_difficulty_gap": study.min_difficulty_gap,
            "consent_versions": list(
                ConsentVersion.objects.filter(study=study)
                .order_by("version")
                .values("version", "text", "created_at")
            ),
            "arms": list(
                study.arms.order_by("order", "key").values(
                    "key",
                    "name",
                    "feedback_shown",
                    "suggestion_shown",
                    "worksheet_shown",
                    "adaptive_partner",
                    "weight",
                )
            ),
        },
        "steps": [
            {
                "key": s.key,
                "kind": s.kind,
                "title": s.title,
                "situation": s.slot,
                "time": s.time,
                "chat": s.chat,
            }
            for s in flow.STEPS
        ],
        "survey_items": [
            {
                "key": i.key,
                "version": i.version,
                "construct": i.construct,
                "label": i.label,
                "wording": i.wording,
                "scale_low": i.scale_low,
                "scale_high": i.scale_high,
                "scale_labels": list(i.scale_labels),
                "reverse_scored": i.reverse_scored,
            }
            for i in SurveyItem.objects.filter(
                Q(is_active=True)
                | Q(pk__in=SurveyAnswer.objects.filter(participant__study=study).values("item_id"))
            ).order_by("order", "key", "version")
        ],
    }


def _call_record(call: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in call.items() if not k.startswith("_") and k != "conversation_id"}
    record["id"] = record.pop("pk")
    return record


def _participant_record(batch: _Batch, p: dict[str, Any], options: Options) -> dict[str, Any]:
    record: dict[str, Any] = {"participant": p["code"]}
    if options.include_recruitment_ids:
        record["recruitment"] = {field: p[field] for field in RECRUITMENT_FIELDS}
    record.update(
        source=p["source"],
        arm=p["arm__key"],
        stratum=p["stratum"],
        status=p["status"],
        step=p["step"],
        consent_version=p["consent_version"],
        started_at=p["started_at"],
        consented_at=p["consented_at"],
        finished_at=p["finished_at"],
        allocation=None
        if p["allocation__position"] is None
        else {
            "position": p["allocation__position"],
            "stratum": p["allocation__stratum"],
            "method": p["allocation__method"],
            "assigned_at": p["allocation__assigned_at"],
        },
        situations=[
            {
                "situation": s["slot"],
                "category": s["situation__category"],
                "difficulty": s["situation__difficulty"],
                "text": s["situation__situation"],
                "goal": s["situation__goal"],
            }
            for s in sorted(batch.situations.get(p["pk"], []), key=lambda s: s["slot"])
        ],
        steps=[
            {"step": v["step"], "entered_at": v["entered_at"], "completed_at": v["completed_at"]}
            for v in batch.visits.get(p["pk"], [])
        ],
        answers=[
            {
                "situation": a["slot"],
                "time": a["time"],
                "item": a["item_key"],
                "item_version": a["item_version"],
                "value": a["value"],
                "answered_at": a["answered_at"],
            }
            for a in batch.answers.get(p["pk"], [])
        ],
        chats=[_chat_record(batch, chat) for chat in batch.chats.get(p["pk"], [])],
    )
    return record


def _message_record(m: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in m.items() if k not in ("pk", "conversation_id")}
    if m["role"] == Message.Role.LEARNER:
        # The partner's fields: not applicable to a learner's message (null, not false or 0).
        record["agreed"] = record["attempts"] = None
    return record


def _chat_record(batch: _Batch, chat: dict[str, Any]) -> dict[str, Any]:
    conversation = chat["conversation_id"]
    messages = batch.messages.get(conversation, [])
    seq_of = {m["pk"]: m["seq"] for m in messages}
    brief = chat["conversation__partner_brief"]
    return {
        "step": chat["step"],
        "kind": chat["kind"],
        "situation": chat["slot"],
        "conversation_id": conversation,
        "status": chat["conversation__status"],
        "partner_engine": chat["conversation__partner_engine"],
        "partner_brief_source": brief.get("source") if isinstance(brief, dict) else None,
        "resistance_start": chat["conversation__resistance_start"],
        "switches": {
            key: chat[f"conversation__{key}"]
            for key in (
                "max_messages",
                "strategy_mode",
                "feedback_enabled",
                "suggestion_enabled",
                "worksheet_enabled",
                "adaptive_enabled",
            )
        },
        "created_at": chat["conversation__created_at"],
        "ended_at": chat["conversation__ended_at"],
        "messages": [_message_record(m) for m in messages],
        "drafts": [
            {
                "turn": d["turn"],
                "revision": d["revision"],
                "text": d["text"],
                "strategies": d["strategies"],
                "used_rewrite": d["used_rewrite"],
                "sent_message_seq": seq_of.get(d["sent_message_id"]),
                "created_at": d["created_at"],
                "feedback": [
                    {k: v for k, v in f.items() if k not in ("pk", "draft_id")}
                    for f in batch.feedback.get(d["pk"], [])
                ],
            }
            for d in batch.drafts.get(conversation, [])
        ],
        "checkins": [
            {k: v for k, v in c.items() if k != "conversation_id"}
            for c in batch.checkins.get(conversation, [])
        ],
        "suggestions": [
            {k: v for k, v in s.items() if k not in ("pk", "conversation_id")}
            for s in batch.suggestions.get(conversation, [])
        ],
        "model_calls": [_call_record(c) for c in batch.calls_by_chat.get(conversation, [])],
    }


class _Encoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, datetime):
            return _iso(o)
        return super().default(o)


def json_chunks(study: Study, options: Options = PSEUDONYMOUS) -> Iterator[bytes]:
    """study.json, one participant at a time: the head, each participant, the withdrawals."""
    encode = _Encoder(ensure_ascii=False).encode
    head = encode(_study_record(study, options))
    buffer = io.StringIO()
    buffer.write(head[:-1] + ', "participants": [')
    first = True
    for batch in _batches(study, answers=True, texts=True, calls=True):
        for p in batch.participants:
            record = _participant_record(batch, p, options)
            text = encode(record)
            # Free text is anywhere in a record (feedback quotes the draft), so the encoded
            # record is searched once, and walked only where an id may be (rarely).
            check = redaction(p, options)
            if check.may_be_in(text):
                text = encode(check.everywhere(record))
            buffer.write(("" if first else ", ") + "\n" + text)
            first = False
            if buffer.tell() >= CHUNK:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
    withdrawals = [
        {
            "participant": r.code,
            "step": r.step,
            "arm": r.arm_key,
            "withdrawn_at": r.withdrawn_at,
        }
        for r in WithdrawalReceipt.objects.filter(study_slug=study.slug).order_by("withdrawn_at")
    ]
    buffer.write('\n], "withdrawals": ' + encode(withdrawals) + "}\n")
    yield buffer.getvalue().encode()


def participant_record(
    study: Study, participant_id: int, options: Options = PSEUDONYMOUS
) -> dict[str, Any]:
    """One participant's full record, as in study.json (for the participant page)."""
    for batch in _batches(study, only=participant_id, answers=True, texts=True, calls=True):
        p = batch.participants[0]
        return redaction(p, options).everywhere(_participant_record(batch, p, options))
    raise Participant.DoesNotExist(participant_id)


# --------------------------------------------------------------------------- bonus.csv


def bonus_rows(
    study: Study, options: Options = PSEUDONYMOUS, share: float = 0.30
) -> Iterator[list[Any]]:
    """The bonus list (top `share` per arm by mastery after training), best first per arm."""
    scores, arms = post_mastery(study)
    rows = analysis.bonus_list(scores, arms, share=share)
    ids: dict[str, list[Any]] = {}
    if options.include_recruitment_ids:
        ids = {
            code: rest
            for code, *rest in Participant.objects.filter(
                study=study, code__in=[r["participant"] for r in rows]
            ).values_list("code", *RECRUITMENT_FIELDS)
        }
    for row in rows:
        code = row["participant"]
        head = [code, *ids.get(code, [None] * 4)] if options.include_recruitment_ids else [code]
        yield [*head, row["arm"], row["score"], row["rank"]]


# --------------------------------------------------------------------------- files


def codebook_chunks(
    study: Study, options: Options = PSEUDONYMOUS, files: Sequence[str] = OFFERED
) -> Iterator[bytes]:
    """codebook.csv describing `files` (the files it ships with): a row about each file, then
    every column of each."""
    rows = (
        [c.file, c.name, c.type, c.allowed, c.meaning]
        for c in (*about(options, files), *codebook(study, options, files))
    )
    return csv_chunks(columns(study, CODEBOOK, options), rows)


def file_chunks(
    study: Study, name: str, options: Options = PSEUDONYMOUS, files: Sequence[str] = OFFERED
) -> Iterator[bytes]:
    """The bytes of one export file, in chunks. `files`: the files a codebook.csv describes
    (those it is downloaded with; every file offered when downloaded on its own)."""
    if name == JSON_FILE:
        return json_chunks(study, options)
    if name == CODEBOOK:
        return codebook_chunks(study, options, files)
    producers = {LONG: long_rows, WIDE: wide_rows, MESSAGES: message_rows, BONUS: bonus_rows}
    if name not in producers:
        raise ValueError(f"unknown export file {name!r}")
    return csv_chunks(columns(study, name, options), producers[name](study, options))


def bundle_chunks(study: Study, fmt: str, options: Options = PSEUDONYMOUS) -> Iterator[bytes]:
    """A zip of every file of a format ("csv" or "json"), streamed."""
    files = FORMATS[fmt]
    return zip_chunks((name, file_chunks(study, name, options, files)) for name in files)


def write_files(
    study: Study, directory: Path, fmt: str, options: Options = PSEUDONYMOUS
) -> list[Path]:
    """Write every file of a format into `directory` (created if missing); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FORMATS[fmt]:
        path = directory / name
        with path.open("wb") as out:
            for chunk in file_chunks(study, name, options, FORMATS[fmt]):
                out.write(chunk)
        written.append(path)
    return written


def bundle_name(study: Study, fmt: str) -> str:
    """The download name of a bundle: slug, format and UTC time."""
    return f"{study.slug}-{fmt}-{timezone.now():%Y%m%dT%H%M%SZ}.zip"


def record_export(
    actor: Any,
    study: Study,
    *,
    what: str,
    files: Sequence[str],
    options: Options,
    via: str,
    ip: str | None = None,
    **details: Any,
) -> AuditEntry:
    """Log an export: who, when (the entry's time), what, and with which options."""
    return audit.record(
        actor,
        "study.export",
        study,
        ip=ip,
        what=what,
        files=list(files),
        include_recruitment_ids=options.include_recruitment_ids,
        via=via,
        **details,
    )


# --------------------------------------------------------------------------- for the analysis


def _chat_time(step_key: str) -> str:
    """Evaluation chats before the assignment are "pre", the others "post"."""
    assignment = next(i for i, s in enumerate(flow.STEPS) if s.kind == flow.ASSIGNMENT)
    return "pre" if _STEP_ORDER[step_key] < assignment else "post"


def survey_observations(study: Study) -> list[analysis.Observation]:
    """Every survey answer of an assigned participant, as the analysis reads it."""
    rows = (
        SurveyAnswer.objects.filter(participant__study=study, participant__arm__isnull=False)
        .values_list(
            "participant__code", "participant__arm__key", "slot", "item_key", "time", "value"
        )
        .iterator(chunk_size=ANSWER_CURSOR_ROWS)
    )
    return [analysis.Observation(*row) for row in rows]


def mastery_baseline() -> dict[str, str]:
    """Situations with no evaluation chat before training, mapped to the one whose first chat
    serves as their baseline ({"S2": "S1"} in the published design)."""
    own_pre = {s.slot for s in flow.chat_steps(chat=flow.EVALUATION) if _chat_time(s.key) == "pre"}
    if not own_pre:
        return {}
    first = sorted(own_pre)[0]
    return {slot: first for slot in Slot.values if slot not in own_pre}


def _skill_ratings(batch: _Batch) -> Iterator[analysis.SkillRating]:
    for p in batch.participants:
        if p["arm__key"] is None:
            continue
        for chat in batch.chats.get(p["pk"], []):
            if chat["kind"] != flow.EVALUATION:
                continue
            time = _chat_time(chat["step"])
            for m in batch.messages.get(chat["conversation_id"], []):
                if m["role"] != Message.Role.LEARNER or not m["ratings"]:
                    continue
                for skill, value in _scores(m["ratings"], m["strategies"]).items():
                    yield analysis.SkillRating(
                        p["code"],
                        p["arm__key"],
                        chat["slot"],
                        time,
                        str(m["pk"]),
                        skill,
                        value,  # type: ignore[arg-type]
                    )


def mastery_observations(study: Study) -> list[analysis.Observation]:
    """Each assigned participant's mastery (per skill and overall) in each evaluation chat, as
    `analysis.mastery_observations` defines it, with the baseline of `mastery_baseline()`.

    Computed a batch of participants at a time: memory follows participants, not messages.
    """
    baseline = mastery_baseline()
    out: list[analysis.Observation] = []
    for batch in _batches(study, answers=False, texts=False, calls=False):
        out += analysis.mastery_observations(_skill_ratings(batch), baseline_from=baseline)
    return out


def post_mastery(study: Study) -> tuple[dict[str, float], dict[str, str]]:
    """For the bonus: each completed participant's mean mastery over their evaluation chats after
    training (the mean of each chat's overall mastery), and their arm."""
    completed = set(
        Participant.objects.filter(study=study, status=Participant.Status.COMPLETED).values_list(
            "code", flat=True
        )
    )
    by_participant: dict[str, list[float]] = defaultdict(list)
    arms: dict[str, str] = {}
    for o in mastery_observations(study):
        if o.participant not in completed or o.item != analysis.OVERALL or o.time != "post":
            continue
        if o.value is not None:
            by_participant[o.participant].append(o.value)
            arms[o.participant] = o.arm
    return {p: statistics.fmean(v) for p, v in by_participant.items()}, arms
