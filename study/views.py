"""The participant's pages: the entry link, one page per step, withdrawal.

Who the participant is comes from this browser's session only (a map of study to participant,
plus the learner that owns their chats); no participant id is ever taken from the client. Every
step page is served only when it is the participant's current step, and every form carries the
step key it was shown for.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_htmx.http import HttpResponseClientRefresh

from imbue import ratelimit
from imbue.audit import client_ip
from imbue.views import resume_allowed, resume_not_counted, too_many_resume_tries
from simulations import services as chat_services
from simulations import situations
from simulations.learners import SESSION_KEY, attach_learner
from simulations.models import Category
from simulations.views import kept_draft
from study import flow, services, surveys
from study.models import Participant, Slot, Study, StudyChat, WithdrawalReceipt

PARTICIPANTS_KEY = "imbue_study_participants"
WITHDRAWN_KEY = "imbue_study_withdrawn"

# Prolific ids are 24 hex characters; labels from other sources vary, but never need more.
RECRUITMENT_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")

STALE_EARLIER = "That step is already done, so we brought you back to where you are now."
STALE_LATER = "Please finish this step first."
STALE_FINISHED = "You have already finished this part of the study."

SLOT_NAMES = {Slot.S1: "situation 1", Slot.S2: "situation 2"}


# --------------------------------------------------------------------------- who is this


def _remember(request: HttpRequest, participant: Participant) -> None:
    """Make this browser the participant's: their learner (for the chats) and the study map."""
    if request.session.get(SESSION_KEY) != participant.learner_id:
        attach_learner(request.session, participant.learner)
    known = dict(request.session.get(PARTICIPANTS_KEY, {}))
    if known.get(str(participant.study_id)) != participant.pk:
        known[str(participant.study_id)] = participant.pk
        request.session[PARTICIPANTS_KEY] = known


def _current(request: HttpRequest, study: Study) -> Participant | None:
    """This browser's participant in this study, if it has one."""
    participant_id = request.session.get(PARTICIPANTS_KEY, {}).get(str(study.pk))
    participant = None
    if participant_id is not None:
        participant = (
            Participant.objects.select_related("study", "arm", "learner")
            .filter(pk=participant_id, study=study)
            .first()
        )
    if participant is None and request.session.get(SESSION_KEY) is not None:
        participant = (
            Participant.objects.select_related("study", "arm", "learner")
            .filter(learner_id=request.session[SESSION_KEY], study=study)
            .first()
        )
    if participant is not None:
        _remember(request, participant)
    return participant


def _same_attempt(request: HttpRequest, participant: Participant, session_id: str) -> bool:
    """Whether this request may take over the participant: this browser already is them, or the
    link carries the same Prolific SESSION_ID (Prolific's secret for one attempt). A Prolific id
    or a `?participant=` label alone is not a secret: whoever knows or guesses it must not
    become the participant (see their chats, act as them), and a link sent to someone must not
    swap their browser's identity for the sender's. On another device the participant continues
    with their participant code."""
    if request.session.get(PARTICIPANTS_KEY, {}).get(str(participant.study_id)) == participant.pk:
        return True
    return bool(participant.prolific_session_id) and participant.prolific_session_id == session_id


def _receipt(request: HttpRequest, study: Study) -> WithdrawalReceipt | None:
    receipt_id = request.session.get(WITHDRAWN_KEY, {}).get(str(study.pk))
    if receipt_id is None:
        return None
    return WithdrawalReceipt.objects.filter(pk=receipt_id, study_slug=study.slug).first()


def _to_step(participant: Participant) -> HttpResponse:
    return redirect("study:step", slug=participant.study.slug, key=participant.step)


def _notice(
    request: HttpRequest,
    study: Study | None,
    title: str,
    text: str,
    status: int = 200,
    resume_link: bool = False,
) -> HttpResponse:
    context = {"study": study, "title": title, "text": text, "resume_link": resume_link}
    return render(request, "study/notice.html", context, status=status)


def _closed(request: HttpRequest, study: Study) -> HttpResponse:
    if study.status == Study.Status.CLOSED:
        text = (
            "This study has closed and is no longer taking new participants. "
            "Thank you for your interest."
        )
    else:
        text = "This study has not opened yet. Please try the link again later."
    return _notice(request, study, "This study is not open", text)


# --------------------------------------------------------------------------- entry


@require_safe
def entry(request: HttpRequest, slug: str) -> HttpResponse:
    """The recruitment link: ?PROLIFIC_PID=&STUDY_ID=&SESSION_ID= (Prolific) or ?participant=."""
    study = get_object_or_404(Study, slug=slug)
    pid = request.GET.get("PROLIFIC_PID", "").strip()
    label = request.GET.get("participant", "").strip() if not pid else ""
    if pid or label:
        extra = [request.GET.get(name, "").strip() for name in ("STUDY_ID", "SESSION_ID")]
        given = [pid or label] + [value for value in extra if value]
        if not all(RECRUITMENT_ID.match(value) for value in given):
            return _notice(
                request,
                study,
                "This link is not complete",
                "The link you followed is missing your participant id or has it in a form we "
                "do not recognise. Please go back to the site that sent you and open the study "
                "from there.",
                status=400,
            )
        participant = services.find_participant(study=study, prolific_pid=pid, label=label)
        if participant is not None and not _same_attempt(request, participant, extra[1]):
            return _notice(
                request,
                study,
                "You have already started this study",
                "This participant id has already started the study in another session. Please "
                "continue on the device you used first, or enter your participant code on the "
                "study's first page.",
                status=403,
                resume_link=True,
            )
        if participant is None:
            if _receipt(request, study) is not None:
                return redirect("study:withdrawn", slug=study.slug)
            if not study.is_open:
                return _closed(request, study)
            allowed, reserved = ratelimit.try_enrol(ip=client_ip(request))
            if not allowed:
                return _too_many_enrolments(request, study, allowed)
            try:
                participant, created = services.enroll(
                    study=study,
                    prolific_pid=pid,
                    prolific_study_id=extra[0] if pid else "",
                    prolific_session_id=extra[1] if pid else "",
                    label=label,
                )
            except services.StudyNotOpen:
                ratelimit.release(reserved)
                return _closed(request, study)
            if not created:
                ratelimit.release(reserved)  # the same id, sent twice at once: one participant
        elif participant.step != flow.FIRST:
            messages.info(request, "Welcome back. You are where you left off.")
        _remember(request, participant)
        return _to_step(participant)
    participant = _current(request, study)
    if participant is not None:
        return _to_step(participant)
    if _receipt(request, study) is not None:
        return redirect("study:withdrawn", slug=study.slug)
    if not study.is_open:
        return _closed(request, study)
    return render(request, "study/entry.html", {"study": study})


@require_POST
def start(request: HttpRequest, slug: str) -> HttpResponse:
    """Join without a recruitment id: the participant gets an unguessable code to note."""
    study = get_object_or_404(Study, slug=slug)
    participant = _current(request, study)
    if participant is None:
        if not study.is_open:
            return _closed(request, study)
        allowed, reserved = ratelimit.try_enrol(ip=client_ip(request))
        if not allowed:
            return _too_many_enrolments(request, study, allowed)
        try:
            participant, _ = services.enroll(study=study)
        except services.StudyNotOpen:
            ratelimit.release(reserved)
            return _closed(request, study)
        _remember(request, participant)
    return _to_step(participant)


def _too_many_enrolments(
    request: HttpRequest, study: Study, decision: ratelimit.Decision
) -> HttpResponse:
    """429 on the study's own page, in plain words: nobody was enrolled. The link (a GET) or the
    start button (a POST) tries the same again."""
    response = render(
        request,
        "imbue/too_many_tries.html",
        {
            "study": study,
            "message": decision.message,
            "action": request.get_full_path(),
            "button": "Try again",
            "reload": request.method != "POST",
        },
        status=429,
    )
    response["Retry-After"] = str(decision.retry_after)
    return response


@require_POST
def resume(request: HttpRequest, slug: str) -> HttpResponse:
    """Continue on this device with the participant's own key (shown to them when joining as
    "your participant code"; not the pseudonym staff and exports see)."""
    study = get_object_or_404(Study, slug=slug)
    allowed = resume_allowed(request)
    if not allowed:
        return too_many_resume_tries(
            request,
            allowed,
            study=study,
            action=reverse("study:resume", args=[study.slug]),
            label="Your participant code",
            button="Continue where I stopped",
        )
    code = "".join(ch for ch in request.POST.get("code", "").upper() if ch.isalnum())
    found = Participant.objects.select_related("study", "learner").filter(
        study=study, resume_key=code
    )
    participant = found.first() if code else None
    if participant is None:
        if not code:
            resume_not_counted(request)
        return render(
            request,
            "study/entry.html",
            {"study": study, "resume_error": "That code was not found. Check it and try again."},
            status=400,
        )
    resume_not_counted(request)
    _remember(request, participant)
    messages.info(request, "Welcome back. You are where you left off.")
    return _to_step(participant)


# --------------------------------------------------------------------------- steps


def _page(
    request: HttpRequest,
    template: str,
    participant: Participant,
    current: flow.Step,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    base = {
        "study": participant.study,
        "participant": participant,
        "step": current,
        "progress": flow.progress(current.key),
        "show_code": participant.source == Participant.Source.DIRECT,
        "new_key": _new_key_to_show(request, participant, template),
    }
    return render(request, template, {**base, **(context or {})}, status=status)


def _new_key_to_show(request: HttpRequest, participant: Participant, template: str) -> str:
    """The participant's resume key if study/0006 replaced the one they wrote down and they have
    not seen it yet: shown on the next whole page they open, once ("" otherwise). The flag is
    cleared in the same statement that reads it, so two pages opened at once show it once; a
    HEAD or a polled fragment shows nothing, so it does not use it up."""
    if not participant.new_key_unseen or request.method == "HEAD" or "#" in template:
        return ""
    claimed = Participant.objects.filter(pk=participant.pk, new_key_unseen=True).update(
        new_key_unseen=False
    )
    participant.new_key_unseen = False
    return participant.resume_key if claimed else ""


@require_http_methods(["GET", "HEAD", "POST"])
def step(request: HttpRequest, slug: str, key: str) -> HttpResponse:
    """Whatever step the participant is on; any other step's URL or form leads back to it."""
    study = get_object_or_404(Study, slug=slug)
    participant = _current(request, study)
    if participant is None:
        return redirect("study:entry", slug=study.slug)
    posted = request.POST.get("step") if request.method == "POST" else key
    if key != participant.step or posted != participant.step:
        if flow.is_step(key):
            messages.info(request, _stale_message(request, participant, key))
        return _to_step(participant)
    current = flow.step_for(key)
    handler = HANDLERS[current.kind]
    try:
        return handler(request, participant, current)
    except services.StaleStep:
        messages.info(request, STALE_EARLIER)
        participant.refresh_from_db()
        return _to_step(participant)


def _stale_message(request: HttpRequest, participant: Participant, key: str) -> str:
    if flow.is_terminal(participant.step):
        return STALE_FINISHED
    ahead = (flow.page_number(key) or 0) > (flow.page_number(participant.step) or 0)
    return STALE_LATER if ahead and request.method != "POST" else STALE_EARLIER


def _consent(request: HttpRequest, participant: Participant, current: flow.Step) -> HttpResponse:
    if request.method == "POST":
        decision = request.POST.get("decision")
        if decision in ("agree", "decline"):
            participant = services.give_consent(
                participant=participant, step=current.key, agree=decision == "agree"
            )
            return _to_step(participant)
        messages.error(request, "Please choose “I agree” or “I do not agree”.")
    return _page(request, "study/consent.html", participant, current)


def _situations(request: HttpRequest, participant: Participant, current: flow.Step) -> HttpResponse:
    context: dict[str, Any] = {
        "categories": Category.choices,
        "difficulties": range(1, 10),
        "slots": [],
        "min_gap": participant.study.min_difficulty_gap,
    }
    values: dict[str, dict[str, str]] = {slot: {} for slot in Slot.values}
    drafts: dict[str, situations.SituationDraft] = {}
    if request.method == "POST":
        choice = request.POST.get("identifying")
        for slot in Slot.values:
            prefix = slot.lower()
            values[slot] = {
                field: request.POST.get(f"{prefix}-{field}", "")
                for field in ("situation", "goal", "category", "difficulty")
            }
            draft = situations.check_situation(**values[slot])
            if draft.valid and draft.findings and choice == "remove":
                draft = situations.remove_identifying(draft)
                values[slot].update(situation=draft.situation, goal=draft.goal)
            drafts[slot] = draft
        valid = all(d.valid for d in drafts.values())
        findings = [f for d in drafts.values() for f in d.findings]
        gap_error = (
            flow.difficulty_error(
                drafts[Slot.S1].difficulty,
                drafts[Slot.S2].difficulty,
                min_gap=participant.study.min_difficulty_gap,
            )
            if valid
            else None
        )
        if valid and not gap_error and (not findings or choice == "keep"):
            try:
                participant = services.save_situations(
                    participant=participant, step=current.key, drafts=drafts
                )
                return _to_step(participant)
            except services.StepError as error:
                gap_error = error.user_message
        context["gap_error"] = gap_error
        context["privacy_check"] = valid and bool(findings) and not gap_error
    for slot in Slot.values:
        draft = drafts.get(slot)
        context["slots"].append(
            {
                "slot": slot,
                "prefix": slot.lower(),
                "name": SLOT_NAMES[slot],
                "values": values[slot],
                "errors": draft.errors if draft else {},
                "findings": draft.findings if draft else [],
            }
        )
    context["has_errors"] = any(s["errors"] for s in context["slots"])
    return _page(request, "study/situations.html", participant, current, context)


def _survey(request: HttpRequest, participant: Participant, current: flow.Step) -> HttpResponse:
    items = services.active_items()
    chosen: dict[str, str] = {}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values, errors = services.check_survey(items, request.POST)
        if not errors:
            try:
                participant = services.record_survey(
                    participant=participant, step=current.key, values=values
                )
                return _to_step(participant)
            except services.StepError as error:
                messages.error(request, error.user_message)
        chosen = {key: str(value) for key, value in values.items()}
    groups: list[dict[str, Any]] = []
    for item in items:
        if not groups or groups[-1]["construct"] != item.construct:
            groups.append(
                {
                    "construct": item.construct,
                    "instructions": surveys.CONSTRUCT_INSTRUCTIONS.get(
                        item.construct, "How much do you agree with each statement right now?"
                    ),
                    "items": [],
                }
            )
        groups[-1]["items"].append(
            {"item": item, "chosen": chosen.get(item.key, ""), "error": errors.get(item.key)}
        )
    situation = services.participant_situations(participant).get(current.slot)
    return _page(
        request,
        "study/survey.html",
        participant,
        current,
        {
            "groups": groups,
            "errors": errors,
            "situation": situation,
            "slot_name": SLOT_NAMES[current.slot],
            "is_post": current.time == "post",
        },
        status=400 if errors else 200,
    )


def _chat(request: HttpRequest, participant: Participant, current: flow.Step) -> HttpResponse:
    if request.method == "POST":
        try:
            participant = services.finish_chat(participant=participant, step=current.key)
        except services.StepError as error:
            messages.error(request, error.user_message)
        return _to_step(participant)
    chat = services.open_chat(participant=participant, step=current.key)
    conversation = chat.conversation
    study = participant.study
    live = chat_services.chat_context(conversation)
    paused = conversation.status == conversation.Status.PAUSED
    context: dict[str, Any] = {
        **live,
        # Without JavaScript a refused message comes back here: its words go back in the box.
        **kept_draft(request, conversation),
        "chat": chat,
        "finished": services.chat_finished(conversation),
        "paused": paused,
        "slot_name": SLOT_NAMES[current.slot],
        "is_training": current.chat == flow.TRAINING,
        "feedback_arm": bool(participant.arm and participant.arm.feedback_shown),
        "status_url": reverse("study:chat_status", kwargs={"slug": study.slug, "key": current.key}),
    }
    return _page(request, "study/chat.html", participant, current, context)


@require_safe
def chat_status(request: HttpRequest, slug: str, key: str) -> HttpResponse:
    """The Continue button of a chat step, polled until the conversation has ended."""
    study = get_object_or_404(Study, slug=slug)
    participant = _current(request, study)
    if participant is None or participant.step != key or flow.step_for(key).kind != flow.CHAT:
        return HttpResponseClientRefresh()
    chat = StudyChat.objects.filter(participant=participant, step=key).select_related(
        "conversation"
    )
    found = chat.first()
    if found is None:
        return HttpResponseClientRefresh()
    return _page(
        request,
        "study/chat.html#continue",
        participant,
        flow.step_for(key),
        {
            "finished": services.chat_finished(found.conversation),
            "paused": found.conversation.status == found.conversation.Status.PAUSED,
            "status_url": request.path,
        },
    )


def _debrief(request: HttpRequest, participant: Participant, current: flow.Step) -> HttpResponse:
    if request.method == "POST":
        return _to_step(participant)
    study = participant.study
    return _page(
        request,
        "study/debrief.html",
        participant,
        current,
        {"exit": study.exit_link("completion")},
    )


def _screened_out(
    request: HttpRequest, participant: Participant, current: flow.Step
) -> HttpResponse:
    if request.method == "POST":
        return _to_step(participant)
    study = participant.study
    return _page(
        request,
        "study/screened_out.html",
        participant,
        current,
        {"exit": study.exit_link("screenout")},
    )


HANDLERS = {
    flow.CONSENT: _consent,
    flow.SITUATIONS: _situations,
    flow.SURVEY: _survey,
    flow.CHAT: _chat,
    flow.DEBRIEF: _debrief,
    flow.SCREENED_OUT: _screened_out,
}


# --------------------------------------------------------------------------- withdrawal


@require_http_methods(["GET", "HEAD", "POST"])
def withdraw(request: HttpRequest, slug: str) -> HttpResponse:
    """Withdraw from the study: confirm, then delete everything and show the receipt."""
    study = get_object_or_404(Study, slug=slug)
    participant = _current(request, study)
    if participant is None:
        if _receipt(request, study) is not None:
            return redirect("study:withdrawn", slug=study.slug)
        return redirect("study:entry", slug=study.slug)
    if request.method != "POST":  # GET or HEAD
        return render(request, "study/withdraw.html", {"study": study, "participant": participant})
    receipt = services.withdraw(participant=participant)
    known = dict(request.session.get(PARTICIPANTS_KEY, {}))
    known.pop(str(study.pk), None)
    request.session[PARTICIPANTS_KEY] = known
    if request.session.get(SESSION_KEY) == participant.learner_id:
        del request.session[SESSION_KEY]
    withdrawn = dict(request.session.get(WITHDRAWN_KEY, {}))
    withdrawn[str(study.pk)] = receipt.pk
    request.session[WITHDRAWN_KEY] = withdrawn
    return redirect("study:withdrawn", slug=study.slug)


@require_safe
def withdrawn(request: HttpRequest, slug: str) -> HttpResponse:
    """The withdrawal receipt: code and time, and the study's withdrawal code and link."""
    study = get_object_or_404(Study, slug=slug)
    receipt = _receipt(request, study)
    if receipt is None:
        return redirect("study:entry", slug=study.slug)
    return render(
        request,
        "study/withdrawn.html",
        {
            "study": study,
            "receipt": receipt,
            "exit": study.exit_link("withdrawal"),
        },
    )
