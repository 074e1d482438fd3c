"""Synthetic studies with finished participants, written through the real models.

`seed_study` opens the default two-arm study (study.services) and then writes, with bulk inserts
so that 10,000 participants take a minute rather than an hour, everything a real run leaves:
learners, participants, allocation slots taken from the study's own sequence, situations, step
visits, survey answers, the four chats with transcripts, drafts, feedback requests (computed,
delivered and viewed in the feedback arm, withheld in the other), skill suggestions where the arm
shows them (one per turn: the opening rule, the model, the written rules), emotion check-ins and the
model calls behind replies, feedback and suggestions. Known effects are built in (the feedback arm
gains more on 'confident' and in mastery), and the values written are returned as `analysis` rows
so tests can compare what the dashboard shows with what scipy computes from the truth.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.utils import timezone

from feedback.models import Draft, FeedbackRequest
from feedback.skills import LEVELS, SKILL_KEYS, STRATEGIES, mastery, rated_skills, score
from imbue.models import LLMCall
from simulations.models import (
    Conversation,
    EmotionCheckin,
    Learner,
    Message,
    Situation,
    SkillSuggestion,
)
from study import analysis, assignment, flow, services
from study.models import (
    Allocation,
    AllocationCounter,
    Participant,
    ParticipantSituation,
    StepVisit,
    Study,
    StudyChat,
    SurveyAnswer,
    WithdrawalReceipt,
)

# Mean change (post - pre) by arm and item; everything else drifts by about 0.
EFFECTS: dict[str, dict[str, float]] = {
    "feedback": {"confident": 2.0, "fear": -1.5, "hopeful": 1.0},
    "simulation": {"confident": 0.8, "fear": -0.6},
}
# Probability that a rated skill is at its top level, by arm and time (evaluation chats).
TOP_LEVEL = {("feedback", "pre"): 0.3, ("feedback", "post"): 0.65}
TOP_LEVEL_DEFAULT = 0.3

LEARNER_LINES = (
    "You have been late to pick me up three times this week.",
    "I feel worried when I wait outside in the dark.",
    "I'd like you to text me if you will be more than ten minutes late.",
    "If you text me, I can wait inside and we both start the evening calmer.",
    "What if we try it for two weeks and see how it goes?",
    '=HYPERLINK("http://example.invalid","click")',
    "- maybe, sorry, if that's ok?",
    'I said "no", twice,\nand I meant it.',
)
PARTNER_LINES = (
    "I'm doing my best, you know that.",
    "Traffic isn't my fault.",
    "Fine, I can text you. Happy now?",
)


@dataclass
class Seeded:
    """A seeded study and the truth written into it."""

    study: Study
    codes: list[str] = field(default_factory=list)
    observations: list[analysis.Observation] = field(default_factory=list)
    ratings: list[analysis.SkillRating] = field(default_factory=list)


@contextmanager
def explicit_times(*fields: models.DateTimeField) -> Iterator[None]:
    """Let bulk inserts keep the times we set on auto_now_add fields (history, not 'now')."""
    saved = [(f, f.auto_now_add) for f in fields]
    for f, _ in saved:
        f.auto_now_add = False
    try:
        yield
    finally:
        for f, value in saved:
            f.auto_now_add = value


def _field(model: type[models.Model], name: str) -> models.DateTimeField:
    return model._meta.get_field(name)  # type: ignore[return-value]


TIMED_FIELDS = (
    _field(Learner, "created_at"),
    _field(Participant, "started_at"),
    _field(Allocation, "assigned_at"),
    _field(StepVisit, "entered_at"),
    _field(SurveyAnswer, "answered_at"),
    _field(Situation, "created_at"),
    _field(Conversation, "created_at"),
    _field(StudyChat, "created_at"),
    _field(Message, "created_at"),
    _field(Draft, "created_at"),
    _field(FeedbackRequest, "requested_at"),
    _field(EmotionCheckin, "created_at"),
    _field(SkillSuggestion, "created_at"),
    _field(LLMCall, "created_at"),
)


def open_study(slug: str, seed: str = "factory-seed") -> Study:
    """The default two-arm study, opened with a fixed seed."""
    study, _ = services.create_default_study(slug=slug, name=f"Study {slug}", seed=seed)
    return study


def seed_study(
    *,
    slug: str = "seeded",
    participants: int = 40,
    messages: int = 3,
    drafts_per_turn: int = 2,
    screened_out: int = 0,
    in_progress: int = 0,
    withdrawn: int = 0,
    seed: int = 7,
    batch: int = 250,
    keep_truth: bool = True,
    start: datetime | None = None,
) -> Seeded:
    """A study with `participants` finished participants (plus the screened-out, in-progress and
    withdrawn ones asked for), written through the models in batches of `batch`."""
    study = open_study(slug)
    rng = random.Random(seed)
    seeded = Seeded(study=study)
    start = start or timezone.now() - timedelta(days=10)
    items = list(services.active_items())
    total = participants + screened_out + in_progress
    position = 0
    for first in range(0, total, batch):
        kinds = []
        for index in range(first, min(first + batch, total)):
            if index < participants:
                kinds.append("completed")
            elif index < participants + screened_out:
                kinds.append("screened_out")
            else:
                kinds.append("in_progress")
        position = _seed_batch(
            study, seeded, kinds, first, position, rng, start, items, messages, drafts_per_turn,
            keep_truth,
        )  # fmt: skip
    AllocationCounter.objects.filter(study=study, stratum="").update(next_position=position)
    for index in range(withdrawn):
        arm = assignment.slot_arm(study.sequence, "", position, design=study.design)
        Allocation.objects.create(
            study=study,
            participant=None,
            stratum="",
            position=position,
            arm=study.arms.get(key=arm),
            method=study.design["method"],
            sequence_hash=study.sequence_hash,
            withdrawn_at=timezone.now(),
        )
        position += 1
        WithdrawalReceipt.objects.create(
            code=f"WITHDRAWN{index:07d}", study_slug=study.slug, step="train_s1", arm_key=arm
        )
    AllocationCounter.objects.filter(study=study, stratum="").update(next_position=position)
    return seeded


def _seed_batch(
    study: Study,
    seeded: Seeded,
    kinds: list[str],
    first: int,
    position: int,
    rng: random.Random,
    start: datetime,
    items: list[Any],
    n_messages: int,
    drafts_per_turn: int,
    keep_truth: bool,
) -> int:
    arms = {arm.key: arm for arm in study.arms.all()}
    with explicit_times(*TIMED_FIELDS):
        starts = [start + timedelta(minutes=7 * (first + i)) for i in range(len(kinds))]
        learners = Learner.objects.bulk_create(
            [Learner(created_at=moment) for moment in starts], batch_size=1000
        )
        people: list[Participant] = []
        allocations: list[Allocation] = []
        for i, (kind, learner, began) in enumerate(zip(kinds, learners, starts, strict=True)):
            p = Participant(
                study=study,
                learner=learner,
                prolific_pid=f"60d{first + i:021x}",
                prolific_study_id="STUDY0001",
                prolific_session_id=f"SESSION{first + i:08d}",
                source=Participant.Source.PROLIFIC,
                started_at=began,
            )
            if kind == "screened_out":
                p.step, p.status, p.finished_at = (
                    flow.SCREENED_OUT,
                    Participant.Status.SCREENED_OUT,
                    began + timedelta(minutes=1),
                )
            else:
                p.consent_version, p.consented_at = 1, began + timedelta(minutes=1)
                if kind == "completed":
                    p.step, p.status = "debrief", Participant.Status.COMPLETED
                    p.finished_at = began + timedelta(minutes=55)
                else:
                    p.step = "train_s1"
                key = assignment.slot_arm(study.sequence, "", position, design=study.design)
                p.arm = arms[key]
                p.stratum = ""
                allocations.append(
                    Allocation(
                        study=study,
                        participant=p,
                        stratum="",
                        position=position,
                        arm=p.arm,
                        method=study.design["method"],
                        sequence_hash=study.sequence_hash,
                        assigned_at=began + timedelta(minutes=15),
                    )
                )
                position += 1
            people.append(p)
        Participant.objects.bulk_create(people, batch_size=1000)
        Allocation.objects.bulk_create(allocations, batch_size=1000)
        seeded.codes += [p.code for p in people]
        _visits(people)
        situations = _situations(people, rng)
        _answers(people, items, rng, seeded if keep_truth else None)
        _chats(people, situations, rng, n_messages, drafts_per_turn, seeded if keep_truth else None)
    return position


def _visits(people: list[Participant]) -> None:
    visits = []
    for p in people:
        moment = p.started_at
        for step in flow.STEPS:
            if p.status == Participant.Status.SCREENED_OUT and step.kind != flow.CONSENT:
                break
            done = moment + timedelta(minutes=5)
            current = step.key == p.step
            visits.append(
                StepVisit(
                    participant=p,
                    step=step.key,
                    entered_at=moment,
                    completed_at=None if current and step.kind != flow.DEBRIEF else done,
                )
            )
            if current:
                break
            moment = done
    StepVisit.objects.bulk_create(visits, batch_size=2000)


def _situations(people: list[Participant], rng: random.Random) -> dict[tuple[int, str], Situation]:
    rows: dict[tuple[int, str], Situation] = {}
    for p in people:
        if p.status == Participant.Status.SCREENED_OUT:
            continue
        s1 = rng.randint(2, 6)
        for slot, difficulty in (("S1", s1), ("S2", min(9, s1 + rng.randint(0, 3)))):
            rows[(p.pk, slot)] = Situation(
                learner_id=p.learner_id,
                category=rng.choice(["family", "social", "work"]),
                situation=f"My housemate keeps leaving the kitchen in a mess ({slot}).",
                goal="Agree a cleaning rota.",
                difficulty=difficulty,
                created_at=p.started_at,
            )
    Situation.objects.bulk_create(list(rows.values()), batch_size=2000)
    ParticipantSituation.objects.bulk_create(
        [
            ParticipantSituation(participant_id=pk, slot=slot, situation=situation)
            for (pk, slot), situation in rows.items()
        ],
        batch_size=2000,
    )
    return rows


def _answers(
    people: list[Participant], items: list[Any], rng: random.Random, seeded: Seeded | None
) -> None:
    answers = []
    for p in people:
        if p.arm is None:
            continue
        times = ("pre", "post") if p.status == Participant.Status.COMPLETED else ("pre",)
        for slot in ("S1", "S2"):
            for item in items:
                pre = rng.randint(2, 5)
                effect = EFFECTS.get(p.arm.key, {}).get(item.key, 0.0)
                if slot == "S2":
                    effect /= 2
                values = {"pre": pre, "post": max(1, min(7, round(pre + effect + rng.gauss(0, 1))))}
                for time in times:
                    # A few unanswered items show the analysis's pairwise deletion.
                    if time == "post" and rng.random() < 0.03:
                        continue
                    answers.append(
                        SurveyAnswer(
                            participant=p,
                            slot=slot,
                            time=time,
                            item=item,
                            item_key=item.key,
                            item_version=item.version,
                            value=values[time],
                            answered_at=p.started_at
                            + timedelta(minutes=10 if time == "pre" else 40),
                        )
                    )
                    if seeded is not None:
                        seeded.observations.append(
                            analysis.Observation(
                                p.code, p.arm.key, slot, item.key, time, values[time]
                            )
                        )
    SurveyAnswer.objects.bulk_create(answers, batch_size=2000)


def _levels(rng: random.Random, top: float) -> dict[str, str]:
    out = {}
    for skill in SKILL_KEYS:
        levels = LEVELS[skill]
        if rng.random() < top:
            out[skill] = levels[0]
        else:
            out[skill] = rng.choice(levels[1:])
    return out


def _chats(
    people: list[Participant],
    situations: dict[tuple[int, str], Situation],
    rng: random.Random,
    n_messages: int,
    drafts_per_turn: int,
    seeded: Seeded | None,
) -> None:
    study = people[0].study
    settings = services.study_settings(study)
    plan = []  # (participant, step, conversation)
    for p in people:
        if p.arm is None:
            continue
        for step in flow.chat_steps():
            if p.status != Participant.Status.COMPLETED and step.key != "eval_s1_pre":
                continue
            options = flow.chat_options(step, study=settings, arm=services.arm_switches(p.arm))
            opened = p.started_at + timedelta(minutes=12 + 10 * flow.STEPS.index(step))
            conversation = Conversation(
                learner_id=p.learner_id,
                situation=situations[(p.pk, step.slot)],
                kind=step.chat,
                status=Conversation.Status.LIMIT,
                partner_engine=Conversation.Engine.LLM,
                resistance_start=0.6,
                created_at=opened,
                ended_at=opened + timedelta(minutes=8),
                **options,
            )
            plan.append((p, step, conversation))
    Conversation.objects.bulk_create([c for _, _, c in plan], batch_size=2000)
    StudyChat.objects.bulk_create(
        [
            StudyChat(
                participant=p,
                step=step.key,
                conversation=c,
                kind=step.chat,
                slot=step.slot,
                created_at=c.created_at,
            )
            for p, step, c in plan
        ],
        batch_size=2000,
    )
    # Model calls first (messages and feedback point at them), then the rows they served.
    personas = LLMCall.objects.bulk_create(
        [_call("persona", c.pk, c.created_at) for _, _, c in plan], batch_size=2000
    )
    for (_, _, c), call in zip(plan, personas, strict=True):
        c.partner_brief = {"source": "llm", "llm_call_id": call.pk}
    Conversation.objects.bulk_update([c for _, _, c in plan], ["partner_brief"], batch_size=2000)
    partner_calls = LLMCall.objects.bulk_create(
        [
            _call("partner", c.pk, c.created_at + timedelta(seconds=30 * t), slow=t == 2)
            for _, _, c in plan
            for t in range(1, n_messages + 1)
        ],
        batch_size=2000,
    )
    calls = iter(partner_calls)
    messages: list[Message] = []
    drafts: list[Draft] = []
    for p, step, c in plan:
        time = "pre" if step.key == "eval_s1_pre" else "post"
        top = TOP_LEVEL.get((p.arm.key, time), TOP_LEVEL_DEFAULT)
        resistance = 0.6
        for turn in range(1, n_messages + 1):
            sent = c.created_at + timedelta(seconds=30 * turn)
            if c.strategy_mode == Conversation.StrategyMode.SINGLE:
                chosen = [STRATEGIES[(turn - 1) % len(STRATEGIES)]]
            else:
                chosen = sorted(rng.sample(STRATEGIES, rng.randint(1, 3)), key=STRATEGIES.index)
            levels = _levels(rng, top)
            resistance = round(max(0.0, resistance - rng.uniform(0, 0.1)), 3)
            learner = Message(
                conversation=c,
                seq=2 * turn - 1,
                role=Message.Role.LEARNER,
                text=rng.choice(LEARNER_LINES),
                strategies=chosen,
                ratings=levels,
                rating_engine="offline",
                mastery=mastery(levels, chosen),
                resistance=resistance,
                resistance_reasons=[f"chose {chosen[0]} ({-0.05:+.2f})"],
                created_at=sent,
                completed_at=sent,
            )
            call = next(calls)
            reply = Message(
                conversation=c,
                seq=2 * turn,
                role=Message.Role.PARTNER,
                text=rng.choice(PARTNER_LINES),
                agreed=turn == n_messages,
                attempts=1,
                llm_call_id=call.pk,
                created_at=sent + timedelta(seconds=2),
                completed_at=sent + timedelta(seconds=4),
            )
            messages += [learner, reply]
            if seeded is not None and step.chat == flow.EVALUATION:
                seeded.ratings += [
                    analysis.SkillRating(
                        p.code,
                        p.arm.key,
                        step.slot,
                        time,
                        f"{c.pk}-{turn}",
                        skill,
                        score(skill, levels[skill]),
                    )
                    for skill in rated_skills(chosen)
                ]
            if step.chat == flow.TRAINING:
                for revision in range(1, drafts_per_turn + 1):
                    drafts.append(
                        Draft(
                            conversation=c,
                            turn=turn,
                            revision=revision,
                            text=rng.choice(LEARNER_LINES),
                            strategies=chosen,
                            used_rewrite=revision > 1,
                            created_at=sent - timedelta(seconds=20 - revision),
                        )
                    )
    Message.objects.bulk_create(messages, batch_size=2000)
    by_turn = {(m.conversation_id, (m.seq + 1) // 2): m for m in messages if m.seq % 2}
    for d in drafts:
        d.sent_message = by_turn[(d.conversation_id, d.turn)]
    Draft.objects.bulk_create(drafts, batch_size=2000)
    _feedback(drafts, rng)
    checkins = []
    for _, _, c in plan:
        checkins += [
            EmotionCheckin(
                conversation=c,
                phase=EmotionCheckin.Phase.BEFORE,
                after_seq=0,
                intensity=rng.randint(3, 9),
                emotion="worried",
                created_at=c.created_at,
            ),
            EmotionCheckin(
                conversation=c,
                phase=EmotionCheckin.Phase.AFTER,
                after_seq=2 * n_messages,
                intensity=rng.randint(1, 7),
                emotion="calmer",
                created_at=c.ended_at,
            ),
        ]
    EmotionCheckin.objects.bulk_create(checkins, batch_size=2000)
    _suggestions([c for _, _, c in plan], n_messages)


SUGGESTION_ENGINES = ("rule", "llm", "offline")


def _suggestions(conversations: list[Conversation], n_messages: int) -> None:
    """One suggestion per turn where they are shown: the rule opens; then the model, then the rules
    after a failed call, in turn. The second turn's is asked between its two drafts."""
    shown = [c for c in conversations if c.suggestion_enabled]
    plan = []  # (conversation, turn, engine, asked at)
    for c in shown:
        for turn in range(1, n_messages + 1):
            sent = c.created_at + timedelta(seconds=30 * turn)
            asked = sent - timedelta(seconds=18.5 if turn == 2 else 25)
            plan.append((c, turn, SUGGESTION_ENGINES[min(turn - 1, 2)], asked))
    calls = LLMCall.objects.bulk_create(
        [
            _call(
                "suggestion",
                c.pk,
                asked,
                outcome=LLMCall.Outcome.OK if engine == "llm" else LLMCall.Outcome.TIMEOUT,
            )
            for c, _, engine, asked in plan
            if engine != "rule"
        ],
        batch_size=2000,
    )
    call_of = iter(calls)
    rows = []
    for c, turn, engine, asked in plan:
        call = None if engine == "rule" else next(call_of)
        rows.append(
            SkillSuggestion(
                conversation=c,
                turn=turn,
                after_seq=2 * (turn - 1),
                skill=STRATEGIES[(turn - 1) % len(STRATEGIES)],
                reason=f"Suggested for turn {turn}.",
                engine=engine,
                model=call.model if call and engine == "llm" else "",
                llm_call_id=call.pk if call else None,
                created_at=asked,
            )
        )
    SkillSuggestion.objects.bulk_create(rows, batch_size=2000)


def _call(
    purpose: str, conversation_id: int | None, at: datetime, *, slow: bool = False, **extra: Any
) -> LLMCall:
    outcome = extra.pop("outcome", LLMCall.Outcome.OK)
    return LLMCall(
        purpose=purpose,
        model="fake-small",
        provider="openai",
        prompt_name=purpose,
        prompt_version="3",
        prompt_hash="5e" * 32,
        params={"temperature": 0.2},
        outcome=outcome,
        attempts=3 if slow else 1,
        ttft_ms=400.0 if not slow else 2400.0,
        total_ms=900.0 if not slow else 4100.0,
        tokens_in=300,
        tokens_out=40,
        conversation_id=conversation_id,
        created_at=at,
        **extra,
    )


def _feedback(drafts: list[Draft], rng: random.Random) -> None:
    shown = [d for d in drafts if d.conversation.feedback_enabled]
    calls = LLMCall.objects.bulk_create(
        [
            _call(
                "feedback",
                None,
                d.created_at,
                draft_id=d.pk,
                outcome=LLMCall.Outcome.TIMEOUT if i % 10 == 9 else LLMCall.Outcome.OK,
            )
            for i, d in enumerate(shown)
        ],
        batch_size=2000,
    )
    call_of = {d.pk: call for d, call in zip(shown, calls, strict=True)}
    requests = []
    for d in drafts:
        if not d.conversation.feedback_enabled:
            requests.append(
                FeedbackRequest(
                    draft=d, status=FeedbackRequest.Status.WITHHELD, requested_at=d.created_at
                )
            )
            continue
        call = call_of[d.pk]
        levels = _levels(rng, 0.5)
        rated = rated_skills(d.strategies)
        result = {
            "engine": "llm",
            "chosen": d.strategies,
            "call_id": call.pk,
            "skills": {
                k: {
                    "level": levels[k],
                    "reasoning": "The facts are specific.",
                    "suggestion": "Say how often it happened.",
                    "rewrite": "You were late three times this week.",
                }
                for k in rated
            },
            "mastery": mastery(levels, d.strategies),
        }
        timed_out = call.outcome == LLMCall.Outcome.TIMEOUT
        requests.append(
            FeedbackRequest(
                draft=d,
                status=FeedbackRequest.Status.DONE,
                engine="offline" if timed_out else "llm",
                fallback_reason="timeout: no answer in 30 s" if timed_out else "",
                result={**result, "engine": "offline"} if timed_out else result,
                offline_result={**result, "engine": "offline"},
                llm_call_id=call.pk,
                requested_at=d.created_at,
                computed_at=d.created_at + timedelta(seconds=2),
                delivered_at=d.created_at + timedelta(seconds=2.1),
                viewed_at=d.created_at + timedelta(seconds=2.2),
                latency_ms=2200.0,
                model_ms=1900.0,
            )
        )
    FeedbackRequest.objects.bulk_create(requests, batch_size=2000)
