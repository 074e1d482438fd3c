"""Withdrawal: everything the participant gave is deleted, from every table; a receipt remains."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.contrib.sessions.models import Session
from django.db import connection, models
from django.test import Client
from django.urls import reverse

from feedback import services as feedback_services
from feedback.models import Draft, FeedbackRequest
from imbue.models import AdverseEvent, LLMCall
from simulations import services as chat_services
from simulations import suggest
from simulations.models import (
    Conversation,
    EmotionCheckin,
    Learner,
    Message,
    Situation,
    SkillSuggestion,
)
from study import flow, services
from study.models import (
    Allocation,
    Participant,
    StepVisit,
    Study,
    StudyChat,
    SurveyAnswer,
    WithdrawalReceipt,
)
from tests.study.conftest import make_study, run_out

# Real transactions: the partner's reply is written from another thread, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

# Words no other row would hold by chance: if any survives, it is the participant's.
MARK = "quokkafennel"


def _situations(mark: str) -> dict[str, str]:
    return {
        "step": "situations",
        "s1-situation": f"My flatmate {mark} leaves the dishes for me every single night.",
        "s1-goal": f"Agree a washing-up rota {mark}.",
        "s1-category": "social",
        "s1-difficulty": "3",
        "s2-situation": f"My manager {mark} adds weekend shifts to my rota without asking.",
        "s2-goal": f"Be asked first {mark}.",
        "s2-category": "work",
        "s2-difficulty": "7",
        "identifying": "keep",
    }


def _survey(key: str) -> dict[str, str]:
    data = {"step": key}
    for item in services.active_items():
        data[f"item_{item.key}"] = "3"
        data[f"version_{item.key}"] = str(item.version)
    return data


def _chat(client: Client, participant: Participant, key: str, mark: str, risky: bool) -> None:
    """Talk in the chat step (drafts and feedback too), then end it and go on."""
    conversation = StudyChat.objects.get(participant=participant, step=key).conversation
    chat_services.record_checkin(conversation=conversation, phase="before", intensity=6)
    # A suggestion on record (a model's sentence may repeat the learner's words).
    shown = chat_services.Suggestion("describe", f"Describe the dishes {mark} first.", "llm")
    suggest.record_suggestion(conversation=conversation, suggestion=shown)
    feedback = feedback_services.request_feedback(
        conversation=conversation, text=f"Draft {mark} about the dishes.", strategies=["describe"]
    )
    if feedback.status == FeedbackRequest.Status.QUEUED:
        feedback_services.rate_request(request_id=feedback.pk)  # what the worker would do
    text = f"The dishes {mark} have been left every night."
    if risky:
        text = f"Honestly I want to kill myself over these dishes {mark}."
    client.post(
        reverse("simulations:send", args=[conversation.pk]),
        {"text": text, "strategies": "describe"},
    )
    client.post(reverse("simulations:end", args=[conversation.pk]))  # refused in evaluations
    run_out(conversation)
    client.post(reverse("study:step", args=[participant.study.slug, key]), {"step": key})


def walk(client: Client, study: Study, pid: str, mark: str, until: str = "debrief") -> Participant:
    """One participant through the pages until `until`, leaving content at every step."""
    client.get(reverse("study:entry", args=[study.slug]), {"PROLIFIC_PID": pid, "SESSION_ID": mark})
    participant = Participant.objects.get(study=study, prolific_pid=pid)
    for _ in range(len(flow.STEPS)):
        key = Participant.objects.get(pk=participant.pk).step
        if key == until:
            break
        url = reverse("study:step", args=[study.slug, key])
        client.get(url)
        kind = flow.step_for(key).kind
        if kind == flow.CONSENT:
            client.post(url, {"step": key, "decision": "agree"})
        elif kind == flow.SITUATIONS:
            client.post(url, _situations(mark))
        elif kind == flow.SURVEY:
            client.post(url, _survey(key))
        elif kind == flow.CHAT:
            # The leaver's first chat is paused for safety: an adverse event is on record.
            _chat(client, participant, key, mark, risky=mark == MARK and key == "eval_s1_pre")
        else:
            raise AssertionError(key)
    participant.refresh_from_db()
    assert participant.step == until
    return participant


def _identity(participant: Participant) -> dict[str, Any]:
    """Every string and id that belongs to this participant, collected before withdrawal."""
    learner = participant.learner
    conversations = list(Conversation.objects.filter(learner=learner))
    messages = Message.objects.filter(conversation__in=conversations)
    drafts = Draft.objects.filter(conversation__in=conversations)
    feedback = FeedbackRequest.objects.filter(draft__in=drafts)
    calls = LLMCall.objects.filter(conversation_id__in=[c.pk for c in conversations])
    return {
        "strings": [
            participant.code,
            participant.prolific_pid,
            participant.prolific_session_id,
            str(learner.public_id),
            learner.public_id.hex,
            learner.resume_code,
        ],
        "ids": {
            Learner: {learner.pk},
            Participant: {participant.pk},
            Conversation: {c.pk for c in conversations},
            Message: set(messages.values_list("pk", flat=True)),
            Draft: set(drafts.values_list("pk", flat=True)),
            FeedbackRequest: set(feedback.values_list("pk", flat=True)),
            LLMCall: set(calls.values_list("pk", flat=True)),
            Situation: set(Situation.objects.filter(learner=learner).values_list("pk", flat=True)),
            SkillSuggestion: set(
                SkillSuggestion.objects.filter(conversation__in=conversations).values_list(
                    "pk", flat=True
                )
            ),
        },
    }


# Plain id columns (apps that must not import each other keep ids, not foreign keys).
PLAIN_ID_COLUMNS = {
    "learner_id": Learner,
    "conversation_id": Conversation,
    "message_id": Message,
    "draft_id": Draft,
    "llm_call_id": LLMCall,
}


def _leftovers(identity: dict[str, Any], mark: str) -> list[str]:
    """Every place in the database that still holds the participant's strings or ids."""
    found = []
    strings = [mark, *identity["strings"]]
    for model in apps.get_models():
        table = model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
            rows = [row[0] for row in cursor.fetchall()]
        for row in rows:
            for value in strings:
                if value and value in row:
                    if model is WithdrawalReceipt and value == identity["strings"][0]:
                        continue  # the receipt keeps the participant code, by design
                    found.append(f"{table}: {value!r} in {row[:200]}")
        for field in model._meta.concrete_fields:
            target = None
            if isinstance(field, models.ForeignKey):
                target = field.related_model
            elif field.column in PLAIN_ID_COLUMNS:
                target = PLAIN_ID_COLUMNS[field.column]
            ids = identity["ids"].get(target)
            if ids and model.objects.filter(**{f"{field.attname}__in": ids}).exists():
                found.append(f"{table}.{field.column} still points at {target.__name__} {ids}")
        ids = identity["ids"].get(model)
        if ids and model.objects.filter(pk__in=ids).exists():
            found.append(f"{table} still has rows {ids}")
    for session in Session.objects.all():
        decoded = str(session.get_decoded())
        found += [f"session: {value!r}" for value in strings if value and value in decoded]
    return found


@pytest.mark.parametrize("until", ["pre_s2", "train_s1", "debrief"])
def test_withdrawal_leaves_no_content_of_the_participant_in_any_table(fake_llm, until: str) -> None:
    study = make_study()
    client = Client()
    leaver = walk(client, study, "a" * 24, MARK, until)
    bystander = walk(Client(), study, "b" * 24, "bystanderword", until)
    identity = _identity(leaver)
    assert SurveyAnswer.objects.filter(participant=leaver).exists()
    assert _leftovers(identity, MARK)  # the scan does find the participant before withdrawal
    if until != "pre_s2":
        assert identity["ids"][Draft] and identity["ids"][LLMCall] and identity["ids"][Message]
        assert EmotionCheckin.objects.filter(conversation__learner=leaver.learner).exists()
        assert SkillSuggestion.objects.filter(conversation__learner=leaver.learner).exists()
        assert AdverseEvent.objects.filter(learner_id=leaver.learner_id).exists()

    page = client.get(reverse("study:withdraw", args=[study.slug]))
    assert "delete" in page.content.decode()
    response = client.post(reverse("study:withdraw", args=[study.slug]), follow=True)

    assert _leftovers(identity, MARK) == []
    receipt = WithdrawalReceipt.objects.get()
    assert (receipt.code, receipt.study_slug, receipt.step) == (leaver.code, "trial", until)
    html = response.content.decode()
    assert leaver.code in html and "TRIAL-WITHDRAWN" in html
    if until != "pre_s2":
        event = AdverseEvent.objects.get()  # still counted, but with no words and no owner
        assert (event.learner_id, event.conversation_id, event.matched) == (None, None, [])
    # The bystander's data are all still there.
    assert _leftovers(_identity(bystander), "bystanderword")
    assert SurveyAnswer.objects.filter(participant=bystander).count() > 0


def test_the_allocation_slot_stays_without_the_participant(no_llm) -> None:
    study = make_study()
    client = Client()
    leaver = walk(client, study, "c" * 24, MARK, "train_s1")
    arm = leaver.arm.key
    client.post(reverse("study:withdraw", args=[study.slug]))
    allocation = Allocation.objects.get(study=study)
    assert allocation.participant is None and allocation.withdrawn_at is not None
    assert (allocation.position, allocation.arm.key) == (0, arm)
    assert WithdrawalReceipt.objects.get().arm_key == arm
    # The next participant takes the next slot: the sequence keeps no gap and no repeat.
    newcomer = walk(Client(), study, "d" * 24, "newcomer", "train_s1")
    assert newcomer.allocation.position == 1


def test_after_withdrawing_the_link_shows_the_receipt_not_a_new_enrolment(no_llm) -> None:
    study = make_study()
    client = Client()
    walk(client, study, "e" * 24, MARK, "pre_s2")
    client.post(reverse("study:withdraw", args=[study.slug]))
    response = client.get(reverse("study:entry", args=[study.slug]), {"PROLIFIC_PID": "e" * 24})
    assert response.url == reverse("study:withdrawn", args=[study.slug])
    assert client.get(reverse("study:step", args=[study.slug, "pre_s2"])).status_code == 302
    assert not Participant.objects.exists()
    assert not StepVisit.objects.exists()


def test_withdrawal_needs_confirmation_and_a_post(no_llm) -> None:
    study = make_study()
    client = Client()
    walk(client, study, "f" * 24, MARK, "situations")
    page = client.get(reverse("study:withdraw", args=[study.slug]))
    assert "Yes, withdraw and delete my data" in page.content.decode()
    assert Participant.objects.count() == 1
    stranger = Client()
    assert stranger.post(reverse("study:withdraw", args=[study.slug])).status_code == 302
    assert Participant.objects.count() == 1


def test_head_on_the_withdrawal_page_withdraws_nothing(no_llm) -> None:
    # HEAD is answered as GET is (a link checker, a browser's preview): it only shows the page.
    study = make_study()
    client = Client()
    walk(client, study, "9" * 24, MARK, "situations")
    response = client.head(reverse("study:withdraw", args=[study.slug]))
    assert response.status_code == 200 and response.content == b""
    assert Participant.objects.count() == 1 and not WithdrawalReceipt.objects.exists()
