"""Every state change of a study: opening it, enrolling, each step of the path, the assignment,
and withdrawal.

Each step's write takes the participant's row lock and checks the step key the form was shown for
(`StaleStep` otherwise), so two tabs or a replayed form can never apply a step twice or skip one.
Lock order, everywhere: participant, then allocation counter, then conversation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from feedback.models import Draft, FeedbackRequest
from imbue import audit
from imbue.models import AdverseEvent, LLMCall
from simulations import services as chat_services
from simulations.models import Conversation, Learner, Message, Situation
from simulations.situations import SituationDraft, create_situation
from study import assignment, flow, surveys
from study.models import (
    Allocation,
    AllocationCounter,
    Arm,
    ConsentVersion,
    Participant,
    ParticipantSituation,
    Slot,
    StepVisit,
    Study,
    StudyChat,
    SurveyAnswer,
    SurveyItem,
    WithdrawalReceipt,
)

CHAT_RETURN_LABEL = "Continue to the next step"


class StaleStep(Exception):
    """The form was for a step the participant is no longer on; `current` is where they are."""

    def __init__(self, current: str) -> None:
        super().__init__(f"participant is on step {current!r}")
        self.current = current


class StepError(ValueError):
    """The step cannot be completed yet; `user_message` says why in plain words."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class StudyNotOpen(Exception):
    """New participants cannot enrol (the study is a draft or closed)."""


# --------------------------------------------------------------------------- studies


def save_study(*, study: Study, consent_changed: bool) -> Study:
    """Save staff's edits; a changed consent text becomes a new, recorded consent version."""
    with transaction.atomic():
        if study.pk is None:
            study.save()
            ConsentVersion.objects.create(study=study, version=1, text=study.consent_text)
            return study
        if consent_changed:
            latest = Study.objects.select_for_update().get(pk=study.pk).consent_version
            study.consent_version = latest + 1
            ConsentVersion.objects.create(
                study=study, version=study.consent_version, text=study.consent_text
            )
        study.save()
    return study


def _design(study: Study, seed: str) -> dict[str, Any]:
    """The keyword arguments of `assignment.generate_sequence` (but length) for this study."""
    arms = list(study.arms.order_by("order", "key"))
    method = assignment.Method(study.allocation_method)
    strata: list[str] | None = None
    if method is assignment.Method.STRATIFIED_BLOCKS:
        if not study.stratify_by:
            raise ValueError("Stratified blocks need a stratification variable.")
        strata = flow.strata_for(study.stratify_by, sources=tuple(Participant.Source.values))
    elif study.stratify_by:
        raise ValueError("Only the stratified-blocks method takes a stratification variable.")
    return {
        "method": method.value,
        "arms": [arm.key for arm in arms],
        "seed": seed,
        "block_size": None if method is assignment.Method.COMPLETE else study.block_size,
        "strata": strata,
        "weights": [arm.weight for arm in arms],
    }


def _sequence_length(study: Study, design: Mapping[str, Any]) -> int:
    unit = design["block_size"] or 1
    return math.ceil(study.target_size / unit) * unit


def open_study(*, study: Study, seed: str | None = None) -> Study:
    """Open a study: draw and record its seed, sequence and hash (once), then accept enrolments.

    ValueError (with a message for staff) if the design is not valid.
    """
    with transaction.atomic():
        locked = Study.objects.select_for_update().get(pk=study.pk)
        if not locked.design_frozen:
            seed = seed or assignment.new_seed()
            design = _design(locked, seed)
            sequences = assignment.generate_sequence(
                length=_sequence_length(locked, design), **design
            )
            locked.seed = seed
            locked.design = design
            locked.sequence = sequences
            locked.sequence_hash = assignment.sequence_hash(
                sequences,
                seed=seed,
                method=design["method"],
                arms=design["arms"],
                block_size=design["block_size"],
                strata=design["strata"],
                weights=design["weights"],
            )
            locked.opened_at = timezone.now()
            AllocationCounter.objects.bulk_create(
                [AllocationCounter(study=locked, stratum=stratum) for stratum in sequences],
                ignore_conflicts=True,
            )
        locked.status = Study.Status.OPEN
        locked.closed_at = None
        locked.save()
    return locked


def close_study(*, study: Study) -> Study:
    """Stop new enrolments; participants already in can finish."""
    Study.objects.filter(pk=study.pk).update(
        status=Study.Status.CLOSED, closed_at=timezone.now(), updated_at=timezone.now()
    )
    study.refresh_from_db()
    return study


def verify_sequence(study: Study) -> bool:
    """Whether the stored sequence is the one the recorded seed and design produce (audit)."""
    if not study.design_frozen:
        return False
    design = dict(study.design)
    length = max((len(seq) for seq in study.sequence.values()), default=0)
    regenerated = assignment.generate_sequence(length=length, **design)
    digest = assignment.sequence_hash(
        study.sequence,
        seed=design["seed"],
        method=design["method"],
        arms=design["arms"],
        block_size=design["block_size"],
        strata=design["strata"],
        weights=design["weights"],
    )
    return regenerated == study.sequence and digest == study.sequence_hash


# --------------------------------------------------------------------------- survey items


def seed_survey_items(model: type[SurveyItem] = SurveyItem) -> int:
    """Create the default items (study/surveys.py) that are missing; returns how many were made.

    Takes the model class so that a data migration can pass its historical model.
    """
    created = 0
    for order, item in enumerate(surveys.DEFAULT_ITEMS):
        _, made = model.objects.get_or_create(
            key=item.key,
            version=item.version,
            defaults={
                "construct": item.construct,
                "label": item.label,
                "wording": item.wording,
                "scale_low": item.scale.low,
                "scale_high": item.scale.high,
                "scale_labels": list(item.scale.labels),
                "reverse_scored": item.reverse_scored,
                "order": order * 10,
                "is_active": not model.objects.filter(key=item.key, is_active=True).exists(),
            },
        )
        created += made
    return created


def new_item_version(*, item: SurveyItem) -> SurveyItem:
    """Copy an item as its next version (asked from now on); answers keep the wording they saw."""
    with transaction.atomic():
        latest = (
            SurveyItem.objects.select_for_update().filter(key=item.key).order_by("-version").first()
        )
        assert latest is not None
        SurveyItem.objects.filter(key=item.key).update(is_active=False)
        return SurveyItem.objects.create(
            key=item.key,
            version=latest.version + 1,
            construct=item.construct,
            label=item.label,
            wording=item.wording,
            scale_low=item.scale_low,
            scale_high=item.scale_high,
            scale_labels=list(item.scale_labels),
            reverse_scored=item.reverse_scored,
            order=item.order,
            is_active=True,
        )


def active_items() -> list[SurveyItem]:
    """The items every survey step asks, in order."""
    return list(SurveyItem.objects.filter(is_active=True).order_by("order", "key"))


def check_survey(
    items: list[SurveyItem], data: Mapping[str, Any]
) -> tuple[dict[str, int], dict[str, str]]:
    """Validate a submitted survey: (values by item key, error messages by item key).

    The form carries the version it showed; an item reworded in between is asked again.
    """
    values: dict[str, int] = {}
    errors: dict[str, str] = {}
    for item in items:
        if str(data.get(f"version_{item.key}", "")) != str(item.version):
            errors[item.key] = "This question was updated; please answer it again."
            continue
        try:
            values[item.key] = surveys.parse_answer(
                data.get(f"item_{item.key}"), low=item.scale_low, high=item.scale_high
            )
        except ValueError:
            errors[item.key] = "Please choose an answer for this statement."
    return values, errors


# --------------------------------------------------------------------------- enrolment


def find_participant(
    *, study: Study, prolific_pid: str = "", label: str = ""
) -> Participant | None:
    """The participant this recruitment id already enrolled in this study, if any."""
    if prolific_pid:
        return Participant.objects.filter(study=study, prolific_pid=prolific_pid).first()
    if label:
        return Participant.objects.filter(study=study, label=label).first()
    return None


def enroll(
    *,
    study: Study,
    prolific_pid: str = "",
    prolific_study_id: str = "",
    prolific_session_id: str = "",
    label: str = "",
) -> tuple[Participant, bool]:
    """Enrol someone (a new learner of their own), or return who this recruitment id already is.

    Returns (participant, created). Raises StudyNotOpen for a new participant of a study that is
    not open. Two requests with the same Prolific id at once enrol one participant.
    """
    existing = find_participant(study=study, prolific_pid=prolific_pid, label=label)
    if existing is not None:
        return existing, False
    if study.status != Study.Status.OPEN or not study.design_frozen:
        raise StudyNotOpen(study.slug)
    if prolific_pid:
        source = Participant.Source.PROLIFIC
    elif label:
        source = Participant.Source.LABEL
    else:
        source = Participant.Source.DIRECT
    try:
        with transaction.atomic():
            participant = Participant.objects.create(
                study=study,
                learner=Learner.objects.create(),
                prolific_pid=prolific_pid,
                prolific_study_id=prolific_study_id,
                prolific_session_id=prolific_session_id,
                label=label,
                source=source,
                step=flow.FIRST,
            )
            StepVisit.objects.create(participant=participant, step=flow.FIRST)
    except IntegrityError:
        existing = find_participant(study=study, prolific_pid=prolific_pid, label=label)
        if existing is None:
            raise
        return existing, False
    return participant, True


# --------------------------------------------------------------------------- steps


def _lock(participant: Participant, step: str) -> Participant:
    """The participant's row, locked, if they are still on `step`; StaleStep otherwise."""
    locked = (
        Participant.objects.select_for_update(of=("self",))
        .select_related("study", "arm", "learner")
        .get(pk=participant.pk)
    )
    if locked.step != step:
        raise StaleStep(locked.step)
    return locked


def _advance(locked: Participant) -> Participant:
    """Close the current step and enter the next; the assignment runs on the way."""
    now = timezone.now()
    StepVisit.objects.filter(participant=locked, step=locked.step).update(completed_at=now)
    following = flow.next_step(locked.step)
    if following is None:
        raise StepError("There is no further step.")
    locked.step = following.key
    StepVisit.objects.get_or_create(participant=locked, step=following.key)
    if following.kind == flow.ASSIGNMENT:
        allocation = assign(locked)
        locked.arm = allocation.arm
        locked.stratum = allocation.stratum
        return _advance(locked)
    if following.kind == flow.DEBRIEF:
        locked.status = Participant.Status.COMPLETED
        locked.finished_at = now
        StepVisit.objects.filter(participant=locked, step=following.key).update(completed_at=now)
    locked.save(update_fields=["step", "arm", "stratum", "status", "finished_at", "updated_at"])
    return locked


def give_consent(*, participant: Participant, step: str, agree: bool) -> Participant:
    """Record consent to this version of the text and go on, or screen the participant out."""
    with transaction.atomic():
        locked = _lock(participant, step)
        if flow.step_for(step).kind != flow.CONSENT:
            raise StaleStep(locked.step)
        now = timezone.now()
        if not agree:
            StepVisit.objects.filter(participant=locked, step=step).update(completed_at=now)
            locked.step = flow.SCREENED_OUT
            locked.status = Participant.Status.SCREENED_OUT
            locked.finished_at = now
            locked.save(update_fields=["step", "status", "finished_at", "updated_at"])
            return locked
        locked.consent_version = locked.study.consent_version
        locked.consented_at = now
        locked.save(update_fields=["consent_version", "consented_at", "updated_at"])
        return _advance(locked)


def save_situations(
    *, participant: Participant, step: str, drafts: Mapping[str, SituationDraft]
) -> Participant:
    """Store the participant's two situations (checked drafts) as S1 and S2, then go on."""
    if set(drafts) != set(Slot.values) or not all(d.valid for d in drafts.values()):
        raise ValueError("save_situations needs a valid draft for S1 and for S2")
    with transaction.atomic():
        locked = _lock(participant, step)
        if flow.step_for(step).kind != flow.SITUATIONS:
            raise StaleStep(locked.step)
        problem = flow.difficulty_error(
            drafts[Slot.S1].difficulty,
            drafts[Slot.S2].difficulty,
            min_gap=locked.study.min_difficulty_gap,
        )
        if problem:
            raise StepError(problem)
        for slot in Slot.values:
            situation = create_situation(learner=locked.learner, draft=drafts[slot])
            ParticipantSituation.objects.create(participant=locked, slot=slot, situation=situation)
        return _advance(locked)


def participant_situations(participant: Participant) -> dict[str, Situation]:
    """The participant's situations by slot ("S1", "S2"); empty before they wrote them."""
    links = ParticipantSituation.objects.filter(participant=participant).select_related("situation")
    return {link.slot: link.situation for link in links}


def record_survey(*, participant: Participant, step: str, values: Mapping[str, int]) -> Participant:
    """Store one survey step's answers (each with its item's version and time), then go on."""
    with transaction.atomic():
        locked = _lock(participant, step)
        current = flow.step_for(step)
        if current.kind != flow.SURVEY:
            raise StaleStep(locked.step)
        items = {item.key: item for item in active_items()}
        if set(values) != set(items):
            raise StepError("Please answer every statement.")
        for key, value in values.items():
            item = items[key]
            if not item.scale_low <= value <= item.scale_high:
                raise StepError("Please choose one of the options for every statement.")
            SurveyAnswer.objects.create(
                participant=locked,
                slot=current.slot,
                time=current.time,
                item=item,
                item_key=item.key,
                item_version=item.version,
                value=value,
            )
        return _advance(locked)


def study_settings(study: Study) -> dict[str, Any]:
    """The study-level chat settings `flow.chat_options` reads."""
    return {
        "max_messages": study.max_messages,
        "training_strategy_mode": study.training_strategy_mode,
        "evaluation_strategy_mode": study.evaluation_strategy_mode,
        "evaluation_worksheet_shown": study.evaluation_worksheet_shown,
        "evaluation_adaptive_partner": study.evaluation_adaptive_partner,
        "max_message_chars": study.max_message_chars,
        "conversation_token_budget": study.conversation_token_budget,
        "messages_per_minute": study.messages_per_minute,
        "feedback_per_minute": study.feedback_per_minute,
    }


def arm_switches(arm: Arm) -> dict[str, Any]:
    """The arm's switches `flow.chat_options` reads."""
    return {
        "feedback_shown": arm.feedback_shown,
        "suggestion_shown": arm.suggestion_shown,
        "worksheet_shown": arm.worksheet_shown,
        "adaptive_partner": arm.adaptive_partner,
    }


def open_chat(*, participant: Participant, step: str) -> StudyChat:
    """The conversation of this chat step, started on the first visit and the same ever after."""
    with transaction.atomic():
        locked = _lock(participant, step)
        current = flow.step_for(step)
        if current.kind != flow.CHAT:
            raise StaleStep(locked.step)
        existing = (
            StudyChat.objects.filter(participant=locked, step=step)
            .select_related("conversation__situation")
            .first()
        )
        if existing is not None:
            return existing
        situation = ParticipantSituation.objects.get(participant=locked, slot=current.slot)
        options = flow.chat_options(
            current,
            study=study_settings(locked.study),
            arm=arm_switches(locked.arm) if locked.arm else None,
        )
        if current.chat == flow.EVALUATION:
            # The measurement runs to agreement or the message limit; nobody leaves it early.
            options["end_enabled"] = False
        page = reverse("study:step", kwargs={"slug": locked.study.slug, "key": step})
        conversation = chat_services.start_conversation(
            learner=locked.learner,
            situation=situation.situation,
            kind=current.chat,
            options=options,
            # The summary points at the step's own Continue button (templates/study/chat.html).
            return_url=f"{page}#study-continue",
            return_label=CHAT_RETURN_LABEL,
            support_text=locked.study.support_text,
        )
        return StudyChat.objects.create(
            participant=locked,
            step=step,
            conversation=conversation,
            kind=current.chat,
            slot=current.slot,
        )


def chat_finished(conversation: Conversation) -> bool:
    """A chat step can be left once its conversation has ended in any way."""
    return not conversation.is_open


def finish_chat(*, participant: Participant, step: str) -> Participant:
    """Leave a chat step whose conversation has ended; the assignment follows the first one."""
    with transaction.atomic():
        locked = _lock(participant, step)
        chat = (
            StudyChat.objects.filter(participant=locked, step=step)
            .select_related("conversation")
            .first()
        )
        if chat is None:
            raise StepError("Please have the conversation first.")
        if not chat_finished(chat.conversation):
            raise StepError(
                "The conversation is still going. Keep talking until they agree or you have "
                "used all your messages, or end it, then press Continue."
            )
        return _advance(locked)


# --------------------------------------------------------------------------- assignment


def baseline_stratum(participant: Participant) -> str:
    """The participant's stratum under the study's design ("" when not stratified)."""
    study = participant.study
    if not study.design.get("strata"):
        return assignment.UNSTRATIFIED
    if study.stratify_by == Study.StratifyBy.SOURCE:
        return participant.source
    if study.stratify_by == Study.StratifyBy.S1_DIFFICULTY:
        s1 = ParticipantSituation.objects.select_related("situation").get(
            participant=participant, slot=Slot.S1
        )
        return flow.difficulty_band(s1.situation.difficulty)
    raise ValueError(f"unknown stratification variable {study.stratify_by!r}")


def assign(participant: Participant) -> Allocation:
    """The participant's arm: the next slot of their stratum's sequence, stored once.

    Returns the stored allocation if there is one (never re-drawn). Concurrent calls are
    serialised on the stratum's counter row, so slots are taken in order with no gap or repeat.
    """
    with transaction.atomic():
        locked = (
            Participant.objects.select_for_update(of=("self",))
            .select_related("study")
            .get(pk=participant.pk)
        )
        existing = Allocation.objects.filter(participant=locked).select_related("arm").first()
        if existing is not None:
            return existing
        study = locked.study
        if not study.design_frozen:
            raise ValueError(f"study {study.slug} has no allocation sequence (not opened)")
        stratum = baseline_stratum(locked)
        AllocationCounter.objects.bulk_create(
            [AllocationCounter(study=study, stratum=stratum)], ignore_conflicts=True
        )
        counter = AllocationCounter.objects.select_for_update().get(study=study, stratum=stratum)
        position = counter.next_position
        arm_key = assignment.slot_arm(study.sequence, stratum, position, design=study.design)
        allocation = Allocation.objects.create(
            study=study,
            participant=locked,
            stratum=stratum,
            position=position,
            arm=Arm.objects.get(study=study, key=arm_key),
            method=study.design["method"],
            sequence_hash=study.sequence_hash,
        )
        counter.next_position = position + 1
        counter.save(update_fields=["next_position"])
        Participant.objects.filter(pk=locked.pk).update(arm=allocation.arm, stratum=stratum)
        participant.arm = allocation.arm
        participant.stratum = stratum
        return allocation


# --------------------------------------------------------------------------- withdrawal


def withdraw(*, participant: Participant) -> WithdrawalReceipt:
    """Delete everything the participant gave (answers, situations, transcripts, drafts, feedback,
    model-call records) and keep only a receipt: their code, the study, the step and the time.

    The allocation slot stays, without them, so the sequence keeps no gap; adverse events stay,
    without words or links, so they can still be counted.
    """
    with transaction.atomic():
        locked = (
            Participant.objects.select_for_update(of=("self",))
            .select_related("study", "arm")
            .get(pk=participant.pk)
        )
        learner_id = locked.learner_id
        conversations = list(Conversation.objects.filter(learner_id=learner_id))
        conversation_ids = [c.pk for c in conversations]
        messages = Message.objects.filter(conversation_id__in=conversation_ids)
        drafts = Draft.objects.filter(conversation_id__in=conversation_ids)
        call_ids = set(messages.exclude(llm_call_id=None).values_list("llm_call_id", flat=True))
        call_ids |= set(
            FeedbackRequest.objects.filter(draft__in=drafts)
            .exclude(llm_call_id=None)
            .values_list("llm_call_id", flat=True)
        )
        call_ids |= {
            c.partner_brief["llm_call_id"]
            for c in conversations
            if isinstance(c.partner_brief, dict) and c.partner_brief.get("llm_call_id")
        }
        LLMCall.objects.filter(
            Q(pk__in=call_ids)
            | Q(conversation_id__in=conversation_ids)
            | Q(message_id__in=list(messages.values_list("pk", flat=True)))
            | Q(draft_id__in=list(drafts.values_list("pk", flat=True)))
        ).delete()
        # The ethics board still counts adverse events; they keep no words and no link to anyone.
        audit.redact_adverse_events(learner_id=learner_id)
        AdverseEvent.objects.filter(
            Q(learner_id=learner_id) | Q(conversation_id__in=conversation_ids)
        ).update(learner_id=None, conversation_id=None, message_id=None, matched=[])
        Allocation.objects.filter(participant=locked).update(
            participant=None, withdrawn_at=timezone.now()
        )
        receipt = WithdrawalReceipt.objects.create(
            code=locked.code,
            study_slug=locked.study.slug,
            step=locked.step,
            arm_key=locked.arm.key if locked.arm else "",
        )
        # Conversations first: their situations are protected while a conversation uses them.
        Conversation.objects.filter(learner_id=learner_id).delete()
        Learner.objects.filter(pk=learner_id).delete()
    return receipt


# --------------------------------------------------------------------------- the default study

DEFAULT_CONSENT = """\
What this study is: researchers want to learn whether practising hard conversations with a \
computer partner, with or without feedback on your messages, helps people feel ready for them. \
It takes about an hour.

What you will do: describe two conversations from your own life that you find hard, answer short \
questions about how you feel about them, and practise them in written chats with a computer \
partner that plays the other person.

Your data: we keep what you write, your answers and the chats, linked to a random code, not to \
your name. Please do not write names, addresses or other details that could identify anyone. \
Your messages are sent to a language model to play the other person and to rate your messages.

Taking part is voluntary. You can withdraw at any point with the "Withdraw from the study" link at \
the bottom of every page; everything you wrote is then deleted.

This is practice, not therapy. If a conversation upsets you, you can stop at any time."""

DEFAULT_DEBRIEF = """\
Thank you for taking part. Some participants received feedback on their messages while \
practising and others practised without it; comparing the two groups tells us whether the \
feedback helps. Your answers and chats are stored under a random code."""

DEFAULT_SUPPORT = """\
If you are in danger, call your local emergency number now. If you are struggling, a crisis \
line or a trusted person can help: in the UK and Ireland, Samaritans 116 123; in the US, call or \
text 988."""

DEFAULT_ARMS: tuple[dict[str, Any], ...] = (
    {
        "key": "simulation",
        "name": "Simulation only",
        "feedback_shown": False,
        "suggestion_shown": False,
        "worksheet_shown": True,
        "adaptive_partner": True,
        "order": 0,
    },
    {
        "key": "feedback",
        "name": "Simulation + feedback",
        "feedback_shown": True,
        "suggestion_shown": True,
        "worksheet_shown": True,
        "adaptive_partner": True,
        "order": 1,
    },
)


def create_default_study(
    *, slug: str, name: str, seed: str | None = None, target_size: int = 100, open_now: bool = True
) -> tuple[Study, bool]:
    """The published trial's design (two arms, permuted blocks of 4); an existing study is kept.

    Returns (study, created). A draft study is opened when ``open_now``.
    """
    with transaction.atomic():
        study = Study.objects.filter(slug=slug).first()
        created = study is None
        if study is None:
            study = save_study(
                study=Study(
                    slug=slug,
                    name=name,
                    target_size=target_size,
                    consent_text=DEFAULT_CONSENT,
                    debrief_text=DEFAULT_DEBRIEF,
                    support_text=DEFAULT_SUPPORT,
                    allocation_method=assignment.Method.BLOCKS.value,
                    block_size=4,
                    completion_code=f"{slug.upper()}-DONE",
                    screenout_code=f"{slug.upper()}-NOCONSENT",
                    withdrawal_code=f"{slug.upper()}-WITHDRAWN",
                ),
                consent_changed=True,
            )
            Arm.objects.bulk_create([Arm(study=study, **arm) for arm in DEFAULT_ARMS])
        seed_survey_items()
    if open_now and study.status == Study.Status.DRAFT:
        study = open_study(study=study, seed=seed)
    return study, created
