"""Exports as a spreadsheet reads them: no cell runs as a formula however it starts."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
import pytest

from simulations.models import Message
from study import codebook, exports
from study.codebook import CODEBOOK, JSON_FILE, MESSAGES, Options
from study.exports import cell, defuse
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
