"""Exports: columns exactly as the codebook says, read by pandas with the documented types,
pseudonymous unless asked, safe in spreadsheets, streamed with flat memory, and audited."""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import json
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import AsyncRequestFactory, Client

from feedback.skills import mastery
from imbue.models import AuditEntry
from simulations.models import Message
from study import codebook, exports
from study.codebook import CODEBOOK, JSON_FILE, LONG, MESSAGES, WIDE, Options
from study.dashboard import stream_download
from study.models import Participant, StudyStaff
from tests.study.factories import Seeded, seed_study

pytestmark = pytest.mark.django_db

IDS = Options(include_recruitment_ids=True)
CSV_NAMES = (LONG, WIDE, MESSAGES, codebook.BONUS, CODEBOOK)
PANDAS = {"integer": "Int64", "number": "float64", "string": "string", "boolean": "boolean"}


@pytest.fixture
def seeded(no_llm: None) -> Seeded:
    return seed_study(participants=16, screened_out=2, in_progress=2, withdrawn=1)


def read_bytes(seeded: Seeded, name: str, options: Options = codebook.PSEUDONYMOUS) -> bytes:
    return b"".join(exports.file_chunks(seeded.study, name, options))


def read_frame(seeded: Seeded, name: str, options: Options = codebook.PSEUDONYMOUS) -> pd.DataFrame:
    """Read a CSV with exactly the dtypes its codebook rows document."""
    columns = [c for c in codebook.codebook(seeded.study, options) if c.file == name]
    dtypes = {c.name: PANDAS[c.type] for c in columns if c.type in PANDAS}
    dates = [c.name for c in columns if c.type == "datetime"]
    frame = pd.read_csv(
        io.BytesIO(read_bytes(seeded, name, options)),
        dtype=dtypes,
        keep_default_na=False,
        na_values=[""],
    )
    for name in dates:
        frame[name] = pd.to_datetime(frame[name], format="ISO8601", utc=True)
    return frame


@pytest.mark.parametrize("options", [codebook.PSEUDONYMOUS, IDS], ids=["pseudonymous", "ids"])
@pytest.mark.parametrize("name", CSV_NAMES)
def test_each_csv_header_is_exactly_the_codebook_columns(
    seeded: Seeded, name: str, options: Options
) -> None:
    header = next(csv.reader(io.StringIO(read_bytes(seeded, name, options).decode())))
    assert header == codebook.columns(seeded.study, name, options)
    assert len(header) == len(set(header))


@pytest.mark.parametrize("name", CSV_NAMES)
def test_pandas_reads_every_csv_with_the_documented_types(seeded: Seeded, name: str) -> None:
    frame = read_frame(seeded, name, IDS)
    assert len(frame) > 0
    for column in codebook.codebook(seeded.study, IDS):
        if column.file != name:
            continue
        series = frame[column.name]
        if column.type == "integer":
            assert str(series.dtype) == "Int64", column.name
        elif column.type == "number":
            assert series.dtype == "float64", column.name
        elif column.type == "boolean":
            assert str(series.dtype) == "boolean", column.name
        elif column.type == "datetime":
            assert str(series.dtype).startswith("datetime64") and "UTC" in str(series.dtype)


def json_paths(value: Any, prefix: str = "") -> set[str]:
    """Every field path of a JSON value, lists marked [], not descending into free-form objects."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            found.add(path)
            found |= json_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                found |= json_paths(item, f"{prefix}[]")
    return found


@pytest.mark.parametrize("options", [codebook.PSEUDONYMOUS, IDS], ids=["pseudonymous", "ids"])
def test_json_fields_are_exactly_the_codebook_paths(seeded: Seeded, options: Options) -> None:
    record = json.loads(read_bytes(seeded, JSON_FILE, options))
    documented = {
        c.name: c.type for c in codebook.codebook(seeded.study, options) if c.file == JSON_FILE
    }
    free_form = {path for path, kind in documented.items() if kind == "object"}
    found = {
        path
        for path in json_paths(record)
        if not any(
            path.startswith(f"{parent}.") or path.startswith(f"{parent}[]") for parent in free_form
        )
    }
    assert found == set(documented)


def test_codebook_documents_types_allowed_values_and_meanings(seeded: Seeded) -> None:
    frame = read_frame(seeded, CODEBOOK)
    assert list(frame.columns) == ["file", "column", "type", "allowed_values", "meaning"]
    assert set(frame["type"]) <= set(codebook.TYPES)
    csv_rows = frame[frame["file"] != JSON_FILE]
    assert (csv_rows["meaning"].str.len() > 0).all()
    arm = frame[(frame["file"] == LONG) & (frame["column"] == "arm")].iloc[0]
    assert "simulation = Simulation only" in arm["allowed_values"]
    assert "feedback = Simulation + feedback" in arm["allowed_values"]


def test_exports_are_pseudonymous_unless_recruitment_ids_are_asked_for(seeded: Seeded) -> None:
    pid = Participant.objects.filter(study=seeded.study).values_list("prolific_pid", flat=True)[0]
    for name in (*CSV_NAMES, JSON_FILE):
        assert pid.encode() not in read_bytes(seeded, name), name
        assert b"SESSION0" not in read_bytes(seeded, name), name
    for name in (LONG, WIDE, MESSAGES, JSON_FILE):
        assert pid.encode() in read_bytes(seeded, name, IDS), name


def test_text_that_a_spreadsheet_would_run_is_defused_in_csv_but_kept_in_json(
    seeded: Seeded,
) -> None:
    frame = read_frame(seeded, MESSAGES)
    texts = set(frame["text"].dropna())
    assert '\'=HYPERLINK("http://example.invalid","click")' in texts
    assert "'- maybe, sorry, if that's ok?" in texts
    assert not any(text.startswith(("=", "+", "-", "@")) for text in texts)
    assert 'I said "no", twice,\nand I meant it.' in texts  # quotes and newlines survive
    raw = json.loads(read_bytes(seeded, JSON_FILE))
    said = {m["text"] for p in raw["participants"] for c in p["chats"] for m in c["messages"]}
    assert '=HYPERLINK("http://example.invalid","click")' in said


def test_a_lone_carriage_return_in_a_text_does_not_break_its_row(seeded: Seeded) -> None:
    # A model's reply may hold a bare "\r", which the learner's cleaned text never does.
    reply = Message.objects.filter(role=Message.Role.PARTNER).order_by("pk").first()
    reply.text = "lone\rcarriage\r\n=1"
    reply.save(update_fields=["text"])
    frame = read_frame(seeded, MESSAGES)  # the documented types: a shifted row fails here
    assert "lone\ncarriage\n=1" in set(frame["text"].dropna())
    assert (
        len(frame) == len(list(csv.reader(io.StringIO(read_bytes(seeded, MESSAGES).decode())))) - 1
    )


def test_messages_file_rates_only_the_chosen_strategies_and_the_states(seeded: Seeded) -> None:
    from feedback.skills import STATES, STRATEGIES

    frame = read_frame(seeded, MESSAGES)
    learner = frame[frame["role"] == "learner"]
    assert len(learner) > 0
    filled = 0
    for _, row in learner.iterrows():
        chosen = set(str(row["strategies"]).split(";")) if pd.notna(row["strategies"]) else set()
        for skill in STRATEGIES:
            if skill not in chosen:
                assert pd.isna(row[f"rating_{skill}"]), (row["row_type"], skill, chosen)
        filled += sum(pd.notna(row[f"rating_{skill}"]) for skill in (*STATES, *chosen))
    assert filled > 0  # the rated ones are written


def test_long_file_has_one_row_per_answer_with_the_values_written(seeded: Seeded) -> None:
    frame = read_frame(seeded, LONG)
    truth = {(o.participant, o.situation, o.time, o.item): o.value for o in seeded.observations}
    assert len(frame) == len(truth)
    got = {
        (r.participant, r.situation, r.time, r.item): int(r.value)
        for r in frame.itertuples(index=False)
    }
    assert got == truth
    first = frame[frame["participant"] == frame["participant"].iloc[0]]
    # Within a participant: S1 before S2, pre before post, items in survey order.
    assert list(first["situation"]) == sorted(first["situation"])
    s1 = first[first["situation"] == "S1"]
    assert list(s1["time"]) == sorted(s1["time"], key=["pre", "post"].index)
    assert list(s1["item"])[:3] == ["confident", "worried", "hopeful"]


def test_wide_file_has_one_row_per_participant_with_answers_and_chat_mastery(
    seeded: Seeded,
) -> None:
    frame = read_frame(seeded, WIDE).set_index("participant")
    assert sorted(frame.index) == sorted(seeded.codes)
    for o in seeded.observations[:200]:
        assert frame.loc[o.participant, f"{o.situation.lower()}_{o.time}_{o.item}"] == o.value
    code = next(p for p in seeded.codes if frame.loc[p, "status"] == "completed")
    messages = Message.objects.filter(
        conversation__study_chat__participant__code=code,
        conversation__study_chat__step="eval_s1_post",
        role=Message.Role.LEARNER,
    )
    expected = sum(mastery(m.ratings, m.strategies) for m in messages) / len(messages)
    assert frame.loc[code, "eval_s1_post_mastery"] == pytest.approx(expected, abs=1e-12)
    assert frame.loc[code, "eval_s1_post_messages"] == len(messages)
    screened = frame[frame["status"] == "screened_out"]
    assert len(screened) == 2 and screened["arm"].isna().all()


def test_messages_file_puts_each_turns_drafts_before_the_message_and_its_reply(
    seeded: Seeded,
) -> None:
    frame = read_frame(seeded, MESSAGES)
    training = frame[frame["step"] == "train_s1"]
    chat = training[training["conversation_id"] == training["conversation_id"].iloc[0]]
    kinds = list(zip(chat["turn"], chat["row_type"], chat["role"], strict=True))
    assert kinds[:4] == [
        (1, "draft", "learner"),
        (1, "draft", "learner"),
        (1, "message", "learner"),
        (1, "message", "partner"),
    ]
    drafts = frame[frame["row_type"] == "draft"]
    feedback_arm = drafts[drafts["arm"] == "feedback"]
    assert feedback_arm["feedback_status"].eq("done").all()
    assert feedback_arm["feedback_computed"].all() and feedback_arm["feedback_viewed"].all()
    assert feedback_arm["llm_model"].eq("fake-small").all()
    timed_out = feedback_arm[feedback_arm["llm_outcome"] == "timeout"]
    assert len(timed_out) and timed_out["feedback_engine"].eq("offline").all()
    assert timed_out["feedback_fallback_reason"].str.startswith("timeout").all()
    withheld = drafts[drafts["arm"] == "simulation"]
    assert withheld["feedback_status"].eq("withheld").all()
    # Feedback is off in this arm: not applicable (empty), not "false".
    assert withheld["feedback_computed"].isna().all() and withheld["feedback_viewed"].isna().all()
    learner = frame[(frame["row_type"] == "message") & (frame["role"] == "learner")]
    assert learner["resistance"].notna().all()
    assert set(learner["rating_mindful"]) <= {"yes", "no"}
    sent_training = learner[(learner["step"] == "train_s1") & (learner["arm"] == "simulation")]
    assert sent_training["feedback_computed"].isna().all()  # never on offer in this arm
    partner = frame[frame["role"] == "partner"]
    assert partner["llm_purpose"].eq("partner").all()
    assert (partner["llm_retries"] == partner["llm_attempts"] - 1).all()
    assert partner["llm_total_ms"].notna().all()


def test_messages_file_has_each_suggestion_shown_among_its_turns_drafts(seeded: Seeded) -> None:
    frame = read_frame(seeded, MESSAGES)
    header = codebook.columns(seeded.study, MESSAGES)
    rows = list(csv.reader(io.StringIO(read_bytes(seeded, MESSAGES).decode())))
    assert {len(row) for row in rows} == {len(header)}  # every row type fills every column
    suggestions = frame[frame["row_type"] == "suggestion"]
    assert len(suggestions) and suggestions["arm"].eq("feedback").all()
    assert suggestions["step"].eq("train_s1").all()
    assert suggestions["role"].isna().all() and suggestions["seq"].isna().all()
    chat = frame[frame["conversation_id"] == suggestions["conversation_id"].iloc[0]]
    order = list(zip(chat["turn"], chat["row_type"], chat["revision"].astype(object), strict=True))
    assert order[:9] == [
        (1, "suggestion", pd.NA),
        (1, "draft", 1),
        (1, "draft", 2),
        (1, "message", pd.NA),
        (1, "message", pd.NA),
        (2, "draft", 1),
        (2, "suggestion", pd.NA),  # asked between the turn's two drafts
        (2, "draft", 2),
        (2, "message", pd.NA),
    ]
    shown = chat[chat["row_type"] == "suggestion"]
    assert list(shown["suggested_skill"]) == ["describe", "express", "assert"]
    assert list(shown["suggestion_engine"]) == ["rule", "llm", "offline"]
    assert list(shown["text"]) == [f"Suggested for turn {t}." for t in (1, 2, 3)]
    assert shown["llm_call_id"].iloc[0] is pd.NA
    assert list(shown["llm_purpose"].iloc[1:]) == ["suggestion", "suggestion"]
    assert list(shown["llm_model"].iloc[1:]) == ["fake-small", "fake-small"]
    assert list(shown["llm_outcome"].iloc[1:]) == ["ok", "timeout"]
    others = frame[frame["row_type"] != "suggestion"]
    assert others["suggested_skill"].isna().all() and others["suggestion_engine"].isna().all()


def test_json_record_nests_drafts_with_feedback_and_every_model_call(seeded: Seeded) -> None:
    record = json.loads(read_bytes(seeded, JSON_FILE))
    assert record["study"]["sequence_hash"] == seeded.study.sequence_hash
    assert len(record["participants"]) == len(seeded.codes)
    assert record["withdrawals"][0]["participant"] == "WITHDRAWN0000000"
    person = next(
        p for p in record["participants"] if p["arm"] == "feedback" and p["status"] == "completed"
    )
    training = next(c for c in person["chats"] if c["step"] == "train_s1")
    draft = training["drafts"][0]
    assert draft["sent_message_seq"] == 1
    result = draft["feedback"][0]["result"]
    assert set(result["skills"]) >= {"mindful", "confident"}
    assert {"suggestion", "rewrite", "level"} <= set(next(iter(result["skills"].values())))
    purposes = {call["purpose"] for call in training["model_calls"]}
    assert purposes == {"persona", "partner", "feedback", "suggestion"}
    assert [c["phase"] for c in training["checkins"]] == ["before", "after"]
    suggestions = training["suggestions"]
    assert [(s["turn"], s["engine"]) for s in suggestions] == [
        (1, "rule"),
        (2, "llm"),
        (3, "offline"),
    ]
    assert [s["after_seq"] for s in suggestions] == [0, 2, 4]
    assert suggestions[1]["model"] == "fake-small" and suggestions[0]["llm_call_id"] is None
    calls = {call["id"]: call for call in training["model_calls"]}
    assert calls[suggestions[1]["llm_call_id"]]["purpose"] == "suggestion"
    assert calls[suggestions[2]["llm_call_id"]]["outcome"] == "timeout"
    # Evaluation chats and the simulation arm show no suggestions, so none are on record.
    for p in record["participants"]:
        for chat in p["chats"]:
            if chat["suggestions"]:
                assert chat["step"] == "train_s1" and p["arm"] == "feedback"


def test_a_participant_who_went_through_the_real_flow_is_exported(enrolled: Any) -> None:
    participant = enrolled("post_s1")
    study = participant.study
    answers = [r for r in exports.long_rows(study) if r[0] == participant.code]
    assert len(answers) == 2 * 8  # pre S1 and pre S2, eight items each
    wide = [r for r in exports.wide_rows(study) if r[0] == participant.code]
    assert len(wide) == 1
    record = exports.participant_record(study, participant.pk)
    assert [c["step"] for c in record["chats"]] == ["eval_s1_pre", "train_s1"]


def test_zip_bundles_hold_every_file_of_their_format(seeded: Seeded) -> None:
    for fmt, names in codebook.FORMATS.items():
        data = b"".join(exports.bundle_chunks(seeded.study, fmt))
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.testzip() is None
            assert archive.namelist() == list(names)
            for name in names:
                if name == JSON_FILE:  # only the export time differs
                    zipped, direct = (
                        json.loads(b) for b in (archive.read(name), read_bytes(seeded, name))
                    )
                    assert {**zipped, "exported_at": None} == {**direct, "exported_at": None}
                elif name == CODEBOOK:  # the bundle's own files, not every file offered
                    own = exports.file_chunks(seeded.study, name, codebook.PSEUDONYMOUS, names)
                    assert archive.read(name) == b"".join(own)
                else:
                    assert archive.read(name) == read_bytes(seeded, name)


def test_command_writes_the_files_and_logs_the_export(seeded: Seeded, tmp_path: Path) -> None:
    out = io.StringIO()
    call_command(
        "export_study", seeded.study.slug, "--format", "csv", "--out", str(tmp_path), stdout=out
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(codebook.FORMATS["csv"])
    assert (tmp_path / WIDE).read_bytes() == read_bytes(seeded, WIDE)
    entry = AuditEntry.objects.get(action="study.export")
    assert entry.object_id == str(seeded.study.pk) and entry.actor_id is None
    assert entry.details["via"] == "command" and entry.details["what"] == "csv"
    assert entry.details["include_recruitment_ids"] is False
    assert entry.details["files"] == list(codebook.FORMATS["csv"])
    call_command(
        "export_study", seeded.study.slug, "--format", "json", "--out", str(tmp_path / "j"),
        "--include-recruitment-ids", stdout=out,
    )  # fmt: skip
    record = json.loads((tmp_path / "j" / JSON_FILE).read_text())
    assert "recruitment" in record["participants"][0]
    assert AuditEntry.objects.filter(action="study.export").count() == 2
    assert AuditEntry.objects.latest("id").details["include_recruitment_ids"] is True


def test_command_refuses_an_unknown_study_or_a_user_without_the_export_right(
    seeded: Seeded, tmp_path: Path
) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No study"):
        call_command("export_study", "nope", "--out", str(tmp_path))
    User.objects.create_user("viewer", password="x", is_staff=True)
    with pytest.raises(CommandError, match="may not export"):
        call_command("export_study", seeded.study.slug, "--out", str(tmp_path), "--user", "viewer")
    assert not AuditEntry.objects.filter(action="study.export").exists()


def test_download_streams_and_records_who_what_and_options(seeded: Seeded) -> None:
    user = User.objects.create_user("exporter", password="pw-for-tests-1", is_staff=True)
    StudyStaff.objects.create(study=seeded.study, user=user, can_export=True)
    client = Client()
    client.force_login(user)
    response = client.post(
        f"/research/{seeded.study.slug}/export/", {"what": "csv", "recruitment_ids": "1"}
    )
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="seeded-csv-')
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        assert archive.read(WIDE) == read_bytes(seeded, WIDE, IDS)
    entry = AuditEntry.objects.get(action="study.export")
    assert (entry.actor_id, entry.actor_username) == (user.pk, "exporter")
    assert entry.details == {
        "what": "csv",
        "files": list(codebook.FORMATS["csv"]),
        "include_recruitment_ids": True,
        "via": "dashboard",
    }
    assert entry.ip == "127.0.0.1" and entry.at is not None
    single = client.post(f"/research/{seeded.study.slug}/export/", {"what": "long.csv"})
    assert single["Content-Type"].startswith("text/csv")
    assert b"".join(single.streaming_content) == read_bytes(seeded, LONG)


def test_under_asgi_the_download_is_pulled_one_chunk_at_a_time() -> None:
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(3):
            pulled.append(i)
            yield b"x" * 10

    request = AsyncRequestFactory().get("/")
    response = stream_download(request, chunks(), filename="f.csv", content_type="text/csv")
    assert response.is_async

    async def consume() -> list[tuple[bytes, int]]:
        seen = []
        async for chunk in response.streaming_content:
            seen.append((chunk, len(pulled)))
        return seen

    seen = asyncio.run(consume())
    # Each chunk reached the server before the next one was produced.
    assert [count for _, count in seen] == [1, 2, 3]


def peak_export_memory(seeded: Seeded) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        for name in (*codebook.FORMATS["csv"], JSON_FILE):
            for _ in exports.file_chunks(seeded.study, name, IDS):
                pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.django_db(transaction=True)
def test_export_memory_does_not_grow_with_the_number_of_participants(
    no_llm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Smaller batches than in production keep the test quick; bench/export_memory.py measures
    # the real batch size with 1,000 and 10,000 participants.
    monkeypatch.setattr(exports, "BATCH", 25)
    small = seed_study(slug="small", participants=25, keep_truth=False)
    large = seed_study(slug="large", participants=100, keep_truth=False)
    small_peak = peak_export_memory(small)
    large_peak = peak_export_memory(large)
    # Four times the participants; the peak is one batch's rows plus a chunk either way.
    assert large_peak < 1.2 * small_peak, (small_peak, large_peak)


# --------------------------------------------------------------------------- not applicable


def training_chat(seeded: Seeded, arm: str) -> Any:
    from study.models import StudyChat

    return (
        StudyChat.objects.filter(
            participant__study=seeded.study,
            participant__arm__key=arm,
            participant__status="completed",
            step="train_s1",
        )
        .select_related("conversation", "participant")
        .order_by("pk")
        .first()
    )


def test_feedback_flags_are_empty_where_not_offered_and_false_where_offered_but_not_done(
    seeded: Seeded,
) -> None:
    from feedback.models import Draft, FeedbackRequest

    chat = training_chat(seeded, "feedback")
    conversation = chat.conversation_id
    # Turn 3: feedback on offer, none asked for. Turn 2: one draft asked and never looked at,
    # the other saved without a request. Turn 1: withheld for safety in a chat with feedback.
    Draft.objects.filter(conversation_id=conversation, turn=3).delete()
    unseen, unasked = Draft.objects.filter(conversation_id=conversation, turn=2).order_by(
        "revision"
    )
    FeedbackRequest.objects.filter(draft=unseen).update(viewed_at=None)
    FeedbackRequest.objects.filter(draft=unasked).delete()
    paused = Draft.objects.filter(conversation_id=conversation, turn=1).order_by("revision")[0]
    FeedbackRequest.objects.filter(draft=paused).update(
        status=FeedbackRequest.Status.WITHHELD, computed_at=None, delivered_at=None, viewed_at=None
    )

    frame = read_frame(seeded, MESSAGES)
    flags = ["feedback_computed", "feedback_delivered", "feedback_viewed"]
    mine = frame[frame["conversation_id"] == conversation].set_index(["turn", "row_type", "role"])
    drafts = frame[(frame["conversation_id"] == conversation) & (frame["row_type"] == "draft")]
    by_revision = drafts.set_index(["turn", "revision"])
    assert list(mine.loc[(3, "message", "learner"), flags]) == [False, False, False]
    assert list(by_revision.loc[(2, 1), flags]) == [True, True, False]
    assert by_revision.loc[(2, 2), flags].isna().all()  # a draft with no request
    assert list(by_revision.loc[(1, 1), flags]) == [False, False, False]
    assert list(mine.loc[(2, "message", "learner"), flags]) == [True, True, False]
    assert mine.loc[(2, "message", "partner"), flags].isna().all()

    # Never on offer: evaluation chats, the arm without feedback, suggestions.
    evaluation = frame[frame["chat_kind"] == "evaluation"]
    assert len(evaluation) and evaluation[flags].isna().all().all()
    simulation = frame[(frame["arm"] == "simulation") & (frame["step"] == "train_s1")]
    assert len(simulation) and simulation[flags].isna().all().all()
    assert frame[frame["row_type"] == "suggestion"][flags].isna().all().all()
    sent = frame[(frame["row_type"] == "message") & (frame["role"] == "learner")]
    offered = sent[(sent["arm"] == "feedback") & (sent["step"] == "train_s1")]
    assert len(offered) and offered[flags].notna().all().all()

    wide = read_frame(seeded, WIDE).set_index("participant")
    completed = wide[wide["status"] == "completed"]
    assert completed["eval_s1_pre_feedback_viewed"].isna().all()
    assert completed["eval_s2_post_feedback_viewed"].isna().all()
    in_arm = completed.groupby("arm")["train_s1_feedback_viewed"]
    assert in_arm.apply(lambda s: s.isna().all())["simulation"]
    assert in_arm.apply(lambda s: s.notna().all())["feedback"]
    assert wide.loc[chat.participant.code, "train_s1_feedback_viewed"] == 1  # turn 1, revision 2


def test_json_writes_null_for_the_partners_fields_on_a_learners_message(seeded: Seeded) -> None:
    record = json.loads(read_bytes(seeded, JSON_FILE))
    messages = [m for p in record["participants"] for c in p["chats"] for m in c["messages"]]
    learner = [m for m in messages if m["role"] == "learner"]
    partner = [m for m in messages if m["role"] == "partner"]
    assert learner and all(m["agreed"] is None and m["attempts"] is None for m in learner)
    assert partner and all(isinstance(m["agreed"], bool) and m["attempts"] for m in partner)


def test_the_codebook_says_empty_is_not_applicable_for_the_feedback_flags(seeded: Seeded) -> None:
    frame = read_frame(seeded, CODEBOOK).set_index(["file", "column"])
    for flag in ("feedback_computed", "feedback_delivered", "feedback_viewed"):
        row = frame.loc[(MESSAGES, flag)]
        assert "empty = not applicable" in row["allowed_values"]
        assert "evaluation chats" in row["meaning"] and "false = " in row["meaning"]
    assert (
        "Empty when the chat offered no feedback"
        in frame.loc[(WIDE, "train_s1_feedback_viewed"), "meaning"]
    )


# --------------------------------------------------------------------------- each codebook's files


def codebook_frame(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype="string", keep_default_na=False, na_values=[""])


@pytest.mark.parametrize("fmt", sorted(codebook.FORMATS))
def test_a_bundles_codebook_describes_exactly_the_files_of_that_bundle(
    seeded: Seeded, fmt: str
) -> None:
    data = b"".join(exports.bundle_chunks(seeded.study, fmt))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        shipped = archive.namelist()
        frame = codebook_frame(archive.read(CODEBOOK))
    assert list(dict.fromkeys(frame["file"])) == shipped  # no bonus.csv, no other format's files
    about = frame[frame["column"].isna()]
    assert list(about["file"]) == shipped and (about["type"] == "file").all()
    own = frame[(frame["file"] == CODEBOOK) & (frame["column"] == "file")].iloc[0]
    assert own["allowed_values"] == "; ".join(shipped)
    for name in shipped:
        if name != JSON_FILE:
            described = list(frame[(frame["file"] == name) & frame["column"].notna()]["column"])
            assert described == codebook.columns(seeded.study, name)


def test_the_codebook_downloaded_on_its_own_documents_every_file_offered_with_bonus_csv(
    seeded: Seeded,
) -> None:
    user = User.objects.create_user("analyst", password="pw-for-tests-1", is_staff=True)
    StudyStaff.objects.create(study=seeded.study, user=user, can_export=True)
    client = Client()
    client.force_login(user)
    response = client.post(f"/research/{seeded.study.slug}/export/", {"what": "codebook.csv"})
    frame = codebook_frame(b"".join(response.streaming_content))
    assert list(dict.fromkeys(frame["file"])) == list(codebook.OFFERED)
    bonus = frame[(frame["file"] == codebook.BONUS) & frame["column"].notna()]
    assert list(bonus["column"]) == ["participant", "arm", "score", "rank"]
    header = next(csv.reader(io.StringIO(read_bytes(seeded, codebook.BONUS).decode())))
    assert header == list(bonus["column"])
    about = frame[(frame["file"] == codebook.BONUS) & frame["column"].isna()].iloc[0]
    assert "in no bundle" in about["meaning"]


def test_the_downloads_form_says_which_codebook_describes_bonus_csv(seeded: Seeded) -> None:
    user = User.objects.create_user("reader", password="pw-for-tests-1", is_staff=True)
    StudyStaff.objects.create(study=seeded.study, user=user, can_export=True)
    client = Client()
    client.force_login(user)
    page = client.get(f"/research/{seeded.study.slug}/").content.decode()
    form = page[page.index('id="exports"') :]
    assert "A zip's codebook.csv describes the files in that zip" in form
    assert "codebook.csv on its own describes every file here, bonus.csv" in form
