"""Study fixtures: an opened default study and helpers that walk a participant along the path."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.utils import timezone

from simulations.models import Conversation
from simulations.situations import SituationDraft, check_situation
from study import flow, services
from study.models import Participant, Study, StudyChat

SEED = "study-tests-seed"

S1_TEXT = "My flatmate has left the dishes for me every night this week."
S2_TEXT = "My manager keeps adding weekend shifts to my rota without asking me first."


def draft(
    text: str = S1_TEXT, difficulty: int = 4, goal: str = "Share the washing up."
) -> SituationDraft:
    """A checked, valid situation draft."""
    checked = check_situation(
        situation=text, goal=goal, category="social", difficulty=str(difficulty)
    )
    assert checked.valid, checked.errors
    return checked


def make_study(slug: str = "trial", seed: str = SEED, **changes: object) -> Study:
    """The default two-arm study; `changes` edit the design before it opens."""
    study, _ = services.create_default_study(slug=slug, name=f"Study {slug}", open_now=False)
    if changes:
        Study.objects.filter(pk=study.pk).update(**changes)
        study.refresh_from_db()
    return services.open_study(study=study, seed=seed)


@pytest.fixture
def study(db: None, no_llm: None) -> Study:
    return make_study()


def run_out(conversation: Conversation) -> None:
    """End a chat the way an evaluation chat ends (the learner may not end it): its message
    limit reached. A chat that has already ended, or is paused, stays as it is."""
    Conversation.objects.filter(pk=conversation.pk, status=Conversation.Status.ACTIVE).update(
        status=Conversation.Status.LIMIT, ended_at=timezone.now()
    )


def walk_to(participant: Participant, target: str, *, s1: int = 4, s2: int = 6) -> Participant:
    """Take a participant through every step before `target` the way the pages would."""
    while participant.step != target:
        step = flow.step_for(participant.step)
        if step.kind == flow.CONSENT:
            participant = services.give_consent(participant=participant, step=step.key, agree=True)
        elif step.kind == flow.SITUATIONS:
            participant = services.save_situations(
                participant=participant,
                step=step.key,
                drafts={"S1": draft(S1_TEXT, s1), "S2": draft(S2_TEXT, s2, "Ask first.")},
            )
        elif step.kind == flow.SURVEY:
            values = {item.key: 4 for item in services.active_items()}
            participant = services.record_survey(
                participant=participant, step=step.key, values=values
            )
        elif step.kind == flow.CHAT:
            chat = services.open_chat(participant=participant, step=step.key)
            run_out(chat.conversation)
            participant = services.finish_chat(participant=participant, step=step.key)
        else:
            raise AssertionError(f"cannot walk past {step.key}")
    return participant


@pytest.fixture
def enrolled(study: Study) -> Callable[..., Participant]:
    counter = iter(range(1, 100_000))

    def make(target: str = flow.FIRST, **ids: str) -> Participant:
        if not ids:
            ids = {"prolific_pid": f"{next(counter):024x}"}
        participant, _ = services.enroll(study=study, **ids)
        return walk_to(participant, target)

    return make


def chat_of(participant: Participant, step: str) -> StudyChat:
    return StudyChat.objects.select_related("conversation").get(participant=participant, step=step)


@pytest.fixture(scope="session", autouse=True)
def no_resume_failures_left() -> None:
    """The test client's address starts with no wrong resume codes counted: Redis keeps them for
    the limiter's window (imbue.ratelimit), so runs close together would add up. A run itself
    tries only a few (the fuzz test forgets its own)."""
    from imbue import ratelimit

    ratelimit.forget_resume_failures(ip="127.0.0.1", session_key=None)
