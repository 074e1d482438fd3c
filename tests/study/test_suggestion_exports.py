"""Skill suggestions in the exports: a study's files hold the suggestions its own participants were
shown, each in their own record, and nobody else's (another study's, or free practice)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from simulations import services as chat_services
from simulations import suggest
from simulations.models import Conversation, Learner, Situation, SkillSuggestion
from study import codebook, exports
from study.models import StudyChat
from tests.study.factories import seed_study

pytestmark = pytest.mark.django_db


def practice_suggestion() -> SkillSuggestion:
    """A learner practising outside any study, shown a suggestion."""
    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        situation="My neighbour parks across my driveway every morning.",
        goal="Keep the driveway clear.",
        category="social",
        difficulty=4,
    )
    conversation = Conversation.objects.create(learner=learner, situation=situation)
    shown = chat_services.Suggestion("assert", "PRACTICE-ONLY sentence.", "offline")
    return suggest.record_suggestion(conversation=conversation, suggestion=shown)


def test_a_studys_exports_hold_its_own_participants_suggestions_only(no_llm: None) -> None:
    alpha = seed_study(slug="alpha", participants=4)
    beta = seed_study(slug="beta", participants=4, seed=8)
    SkillSuggestion.objects.filter(
        conversation__in=StudyChat.objects.filter(participant__study=beta.study).values(
            "conversation"
        )
    ).update(reason="BETA-ONLY sentence.")
    practice_suggestion()
    ours = SkillSuggestion.objects.filter(
        conversation__in=StudyChat.objects.filter(participant__study=alpha.study).values(
            "conversation"
        )
    )
    assert ours.count() > 0

    text = b"".join(exports.file_chunks(alpha.study, codebook.MESSAGES)).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    shown = [r for r in rows if r["row_type"] == "suggestion"]
    assert len(shown) == ours.count()
    assert {int(r["conversation_id"]) for r in shown} == set(
        ours.values_list("conversation_id", flat=True)
    )
    record = b"".join(exports.file_chunks(alpha.study, codebook.JSON_FILE)).decode()
    for body in (text, record):
        assert "BETA-ONLY" not in body and "PRACTICE-ONLY" not in body

    # Each participant's record carries the suggestions of their own chats.
    data = json.loads(record)
    for person in data["participants"]:
        for chat in person["chats"]:
            expected = SkillSuggestion.objects.filter(conversation_id=chat["conversation_id"])
            assert [s["reason"] for s in chat["suggestions"]] == [s.reason for s in expected]
            owner = StudyChat.objects.get(conversation_id=chat["conversation_id"]).participant
            assert owner.code == person["participant"]
    assert sum(len(c["suggestions"]) for p in data["participants"] for c in p["chats"]) == len(
        shown
    )
