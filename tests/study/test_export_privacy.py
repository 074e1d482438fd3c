"""Exports as a spreadsheet and a privacy review read them: no cell runs as a formula however it
starts, and a participant's own identifiers typed into their texts never leave in an export that
is meant to be pseudonymous."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
import pytest

from feedback.models import Draft, FeedbackRequest
from simulations.models import Message, SkillSuggestion
from study import codebook, exports
from study.codebook import CODEBOOK, JSON_FILE, MESSAGES, Options
from study.exports import cell, defuse
from study.models import Participant, ParticipantSituation, StudyChat
from tests.study.factories import Seeded, seed_study

IDS = Options(include_recruitment_ids=True)


# --------------------------------------------------------------------------- formula escape


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("=1+1", "'=1+1"),
        (" =1+1", "' =1+1"),  # spreadsheets skip the blanks before a formula
        ("   +1+1", "'   +1+1"),
        ("\u00a0@SUM(A1)", "'\u00a0@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\n=1", "'\n=1"),
        ("\r=1", "'\r=1"),
        ("\tplain words", "'\tplain words"),  # OWASP: a leading tab or line break, always
        ("|calc'!A0", "'|calc'!A0"),  # DDE
        ("\uff1d1+1", "'\uff1d1+1"),  # full-width =
        (" \uff0b1", "' \uff0b1"),
        ("-2+3", "'-2+3"),
        ("- maybe, sorry", "'- maybe, sorry"),
        ("-3", "-3"),  # a plain number written as text is read as that number: nothing runs
        ("+2.5", "+2.5"),
        (" -1e3", " -1e3"),
        ("2026-03-01T14:05:09.123456+00:00", "2026-03-01T14:05:09.123456+00:00"),
        ("", ""),
        ("   ", "   "),
        ("My boss = unfair | again", "My boss = unfair | again"),
        ("a-b", "a-b"),
        # A text that starts with an apostrophe gets one more: taking one off gives it back.
        ("'=1+1", "''=1+1"),
        ("'quoted', she said", "''quoted', she said"),
    ],
)
def test_defuse_follows_owasp_for_formula_starts_after_blanks_and_dde(
    text: str, expected: str
) -> None:
    assert defuse(text) == expected


@pytest.mark.parametrize(("value", "expected"), [(-3, -3), (-2.5, -2.5), (0, 0), (None, "")])
def test_numbers_written_as_numbers_are_never_touched(value: Any, expected: Any) -> None:
    assert cell(value) == expected


@pytest.fixture
def seeded(no_llm: None) -> Seeded:
    return seed_study(participants=6)


def read_bytes(seeded: Seeded, name: str, options: Options = codebook.PSEUDONYMOUS) -> bytes:
    return b"".join(exports.file_chunks(seeded.study, name, options))


def read_csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype="string", keep_default_na=False, na_values=[""])


@pytest.mark.django_db
def test_messages_file_defuses_blank_led_formulas_and_dde_but_json_keeps_them(
    seeded: Seeded,
) -> None:
    learner, reply = Message.objects.filter(conversation__learner__participant__study=seeded.study)[
        :2
    ]
    learner.text, reply.text = " =1+1", "|calc'!A0"
    Message.objects.bulk_update([learner, reply], ["text"])
    texts = set(read_csv(read_bytes(seeded, MESSAGES))["text"].dropna())
    assert {"' =1+1", "'|calc'!A0"} <= texts
    said = {
        m["text"]
        for p in json.loads(read_bytes(seeded, JSON_FILE))["participants"]
        for c in p["chats"]
        for m in c["messages"]
    }
    assert {" =1+1", "|calc'!A0"} <= said


@pytest.mark.django_db
def test_the_formula_escape_is_documented_once_per_csv_file_not_only_on_text(
    seeded: Seeded,
) -> None:
    frame = read_csv(read_bytes(seeded, CODEBOOK))
    about = frame[frame["column"].isna()].set_index("file")
    for name in codebook.OFFERED:
        rule = "first non-blank character is =, +, - or @" in about.loc[name, "meaning"]
        assert rule == name.endswith(".csv"), name
    text = frame[(frame["file"] == MESSAGES) & (frame["column"] == "text")].iloc[0]
    assert "apostrophe" not in text["meaning"]  # said once, for the whole file


# --------------------------------------------------------------------------- redaction


def leak_ids(seeded: Seeded) -> tuple[Participant, list[str]]:
    """A participant who typed their own ids everywhere a text goes; the ids, as typed."""
    chat = (
        StudyChat.objects.filter(
            participant__study=seeded.study, participant__arm__key="feedback", step="train_s1"
        )
        .select_related("participant__learner")
        .first()
    )
    p = chat.participant
    p.label = "alex-runner-77"
    p.save(update_fields=["label"])
    typed = [
        p.prolific_pid.upper(),  # any case
        p.resume_key.lower(),
        p.prolific_session_id,
        p.label,
        p.learner.resume_code,
    ]
    sentence = "My ids: " + ", ".join(typed) + "."
    Message.objects.filter(conversation_id=chat.conversation_id, seq=1).update(text=sentence)
    Message.objects.filter(conversation_id=chat.conversation_id, seq=2).update(
        text=f"So your id is {p.prolific_pid}?", error=f"failed for {p.resume_key}"
    )
    draft = Draft.objects.filter(conversation_id=chat.conversation_id).order_by("pk").first()
    Draft.objects.filter(pk=draft.pk).update(text=f"({p.prolific_pid})")
    request = FeedbackRequest.objects.get(draft=draft)
    request.result["skills"]["mindful"]["rewrite"] = f"I am {p.label}."
    request.save(update_fields=["result"])
    SkillSuggestion.objects.filter(conversation_id=chat.conversation_id).update(
        reason=f"Say {p.resume_key}"
    )
    situation = ParticipantSituation.objects.get(participant=p, slot="S1").situation
    situation.goal = f"Tell them {p.prolific_session_id.lower()}"
    situation.save(update_fields=["goal"])
    return p, typed


def assert_none_of(ids: list[str], data: bytes) -> None:
    lowered = data.decode().lower()
    for i in ids:
        assert i.lower() not in lowered, i


@pytest.mark.django_db
def test_a_participants_own_ids_typed_into_texts_read_redacted_in_a_pseudonymous_export(
    seeded: Seeded,
) -> None:
    p, typed = leak_ids(seeded)
    for name in (MESSAGES, JSON_FILE):
        data = read_bytes(seeded, name)
        assert_none_of(typed, data)
        assert codebook.REDACTED.encode() in data
    frame = read_csv(read_bytes(seeded, MESSAGES))
    mine = frame[frame["participant"] == p.code]
    assert "My ids: " + ", ".join(["[redacted]"] * 5) + "." in set(mine["text"])
    assert f"({codebook.REDACTED})" in set(mine["text"])  # "(id)": still a whole word
    record = exports.participant_record(seeded.study, p.pk)  # the participant page too
    assert_none_of(typed, json.dumps(record, default=str).encode())
    # Only the texts change: the study code still joins every file.
    assert (mine["participant"] == p.code).all()


@pytest.mark.django_db
def test_with_recruitment_ids_only_the_resume_keys_are_redacted(seeded: Seeded) -> None:
    p, _ = leak_ids(seeded)
    data = read_bytes(seeded, MESSAGES, IDS)
    texts = " ".join(read_csv(data)["text"].dropna())
    assert p.prolific_pid.upper() in texts and p.label in texts  # asked for, so kept
    assert_none_of([p.resume_key, p.learner.resume_code], data)


@pytest.mark.django_db
def test_short_ids_and_ids_inside_longer_words_are_left_alone(seeded: Seeded) -> None:
    p, _ = leak_ids(seeded)
    Participant.objects.filter(pk=p.pk).update(label="sam")  # would match "Sam" anywhere
    chat = StudyChat.objects.filter(participant=p, step="train_s1").first()
    kept = f"Sam said x{p.prolific_pid} and {p.resume_key}s"
    Message.objects.filter(conversation_id=chat.conversation_id, seq=3).update(text=kept)
    texts = set(read_csv(read_bytes(seeded, MESSAGES))["text"].dropna())
    assert kept in texts


@pytest.mark.django_db
def test_the_codebook_documents_redaction_where_there_is_free_text(seeded: Seeded) -> None:
    for options, names in ((codebook.PSEUDONYMOUS, "Prolific ids"), (IDS, "resume keys")):
        frame = read_csv(read_bytes(seeded, CODEBOOK, options))
        about = frame[frame["column"].isna()].set_index("file")["meaning"]
        for name in (MESSAGES, JSON_FILE):
            assert "[redacted]" in about[name] and names in about[name]
            assert f"shorter than {codebook.REDACT_MIN_LENGTH} characters" in about[name]
        assert "[redacted]" not in about[codebook.LONG]
    ids_rule = read_csv(read_bytes(seeded, CODEBOOK, IDS))
    assert "Prolific ids" not in ids_rule[ids_rule["file"] == MESSAGES].iloc[0]["meaning"]


def test_the_one_scan_over_an_encoded_record_finds_ids_that_json_escapes() -> None:
    from django.core.serializers.json import DjangoJSONEncoder

    from study.exports import Redaction

    label = 'say "hi" 2u'  # a link label may hold quotes; JSON writes them escaped
    check = Redaction([label, "ABCDEF123"])
    record = {"chats": [{"text": f"Me: {label.upper()}."}], "other": "abcdef123x"}
    encoded = DjangoJSONEncoder(ensure_ascii=False).encode(record)
    assert check.may_be_in(encoded)
    assert check.everywhere(record) == {
        "chats": [{"text": "Me: [redacted]."}],
        "other": "abcdef123x",
    }
    assert not Redaction([]).may_be_in(encoded) and Redaction([]).text(label) == label


def test_redaction_leaves_coded_fields_alone_when_an_id_spells_a_code() -> None:
    from study.exports import Redaction

    check = Redaction(["family", "partner"])
    record = {
        "situations": [{"category": "family", "text": "My family and I", "goal": "partner"}],
        "chats": [
            {
                "kind": "family",
                "messages": [
                    {"role": "partner", "text": "Your partner?", "strategies": ["partner"]}
                ],
                "drafts": [{"feedback": [{"engine": "family", "result": {"skills": {
                    "mindful": {"level": "family", "suggestion": "Ask your family."}}}}]}],
            }
        ],
    }  # fmt: skip
    redacted = check.everywhere(record)
    assert redacted["situations"][0] == {
        "category": "family", "text": "My [redacted] and I", "goal": "[redacted]",
    }  # fmt: skip
    message = redacted["chats"][0]["messages"][0]
    assert message == {"role": "partner", "text": "Your [redacted]?", "strategies": ["partner"]}
    assert redacted["chats"][0]["kind"] == "family"
    feedback = redacted["chats"][0]["drafts"][0]["feedback"][0]
    assert feedback["engine"] == "family"
    assert feedback["result"]["skills"]["mindful"] == {
        "level": "family", "suggestion": "Ask your [redacted].",
    }  # fmt: skip


@pytest.mark.django_db
def test_a_label_that_spells_a_category_leaves_the_category_in_the_json(seeded: Seeded) -> None:
    p, _ = leak_ids(seeded)
    situation = ParticipantSituation.objects.get(participant=p, slot="S1").situation
    situation.category = "family"
    situation.save(update_fields=["category"])
    Participant.objects.filter(pk=p.pk).update(label="family")
    record = exports.participant_record(seeded.study, p.pk)
    assert record["situations"][0]["category"] == "family"
    Participant.objects.filter(pk=p.pk).update(label="partner")
    record = exports.participant_record(seeded.study, p.pk)
    assert {m["role"] for c in record["chats"] for m in c["messages"]} == {"learner", "partner"}
