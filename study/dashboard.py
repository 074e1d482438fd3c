"""The researcher's side, under /research/: the live study dashboard, participant pages, exports.

Every view checks the signed-in staff member's right on the study (`study.permissions`): viewing
data for the dashboard and the participant pages, exporting for downloads. The dashboard is one
page of fragments (enrolment, flow, time per step, model health, analysis, bonus); each fragment
has a stable id and reloads itself every 10 seconds with htmx, so the page follows a running
study without a refresh. Numbers come from `study.analysis` and charts from `study.plots`; this
module only gathers the rows they need.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Max,
    Q,
    Sum,
)
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_POST, require_safe

from feedback.models import Draft, FeedbackRequest
from feedback.skills import SKILL_KEYS, SKILLS
from imbue import audit
from imbue.models import LLMCall
from simulations.models import STRATEGY_CHOICES, Conversation, Message, SkillSuggestion
from study import analysis, codebook, exports, flow, plots
from study.models import (
    Allocation,
    Participant,
    Slot,
    StepVisit,
    Study,
    StudyChat,
    SurveyAnswer,
    WithdrawalReceipt,
)
from study.permissions import Right, research_view, rights_on, staff_view, studies_for

BONUS_SHARE = 0.30
POLL = "every 10s"
ANALYSIS_CACHE_S = 300
# Outcomes that still produced an answer; anything else is an error.
ANSWERED = {LLMCall.Outcome.OK, LLMCall.Outcome.REPAIRED, LLMCall.Outcome.RETRIED_OK}


class Median(Aggregate):
    """PostgreSQL's continuous median of an expression (percentile_cont 0.5)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    allow_distinct = False


def _arms(study: Study) -> tuple[list[str], dict[str, str]]:
    arms = list(study.arms.order_by("order", "key").values_list("key", "name"))
    return [key for key, _ in arms], dict(arms)


# --------------------------------------------------------------------------- fragments


def enrolment(study: Study) -> dict[str, Any]:
    """Who came, who was assigned to which arm and when, who finished or left."""
    keys, labels = _arms(study)
    statuses = Counter(
        dict(
            Participant.objects.filter(study=study)
            .values_list("status")
            .annotate(n=Count("pk"))
            .values_list("status", "n")
        )
    )
    by_arm = {
        (row["arm__key"], row["status"]): row["n"]
        for row in Participant.objects.filter(study=study, arm__isnull=False)
        .values("arm__key", "status")
        .annotate(n=Count("pk"))
    }
    withdrawn = Counter(
        dict(
            WithdrawalReceipt.objects.filter(study_slug=study.slug)
            .values("arm_key")
            .annotate(n=Count("pk"))
            .values_list("arm_key", "n")
        )
    )
    assigned = list(
        Allocation.objects.filter(study=study)
        .order_by("assigned_at")
        .values_list("assigned_at", "arm__key")
    )
    arms = [
        {
            "key": key,
            "name": labels[key],
            "assigned": sum(1 for _, arm in assigned if arm == key),
            "active": by_arm.get((key, Participant.Status.ACTIVE), 0),
            "completed": by_arm.get((key, Participant.Status.COMPLETED), 0),
            "withdrawn": withdrawn.get(key, 0),
        }
        for key in keys
    ]
    total_withdrawn = sum(withdrawn.values())
    return {
        "enrolment": {
            "enrolled": sum(statuses.values()) + total_withdrawn,
            "active": statuses.get(Participant.Status.ACTIVE, 0),
            "completed": statuses.get(Participant.Status.COMPLETED, 0),
            "screened_out": statuses.get(Participant.Status.SCREENED_OUT, 0),
            "withdrawn": total_withdrawn,
            "target": study.target_size,
            "arms": arms,
            "chart": plots.enrolment_chart(assigned, arms=keys, arm_labels=labels),
        }
    }


def funnel(study: Study) -> dict[str, Any]:
    """A CONSORT-style flow: how many reached each step (withdrawals counted where they left)."""
    keys, labels = _arms(study)
    reached: dict[str, Counter[str]] = defaultdict(Counter)
    for row in (
        StepVisit.objects.filter(participant__study=study)
        .values("step", "participant__arm__key")
        .annotate(n=Count("pk"))
    ):
        reached[row["step"]][row["participant__arm__key"] or ""] += row["n"]
    here = dict(
        Participant.objects.filter(study=study, status=Participant.Status.ACTIVE)
        .values("step")
        .annotate(n=Count("pk"))
        .values_list("step", "n")
    )
    order = {step.key: i for i, step in enumerate(flow.STEPS)}
    left: Counter[str] = Counter()
    for row in (
        WithdrawalReceipt.objects.filter(study_slug=study.slug)
        .values("step", "arm_key")
        .annotate(n=Count("pk"))
    ):
        left[row["step"]] += row["n"]
        # A withdrawn participant's visits are deleted with them; they still reached every step
        # up to the one they left at.
        for step in flow.STEPS[: order.get(row["step"], -1) + 1]:
            reached[step.key][row["arm_key"] or ""] += row["n"]
    screened = Participant.objects.filter(
        study=study, status=Participant.Status.SCREENED_OUT
    ).count()
    rows = []
    for step in flow.STEPS:
        counts = reached.get(step.key, Counter())
        rows.append(
            {
                "key": step.key,
                "title": step.title,
                "reached": sum(counts.values()),
                "by_arm": [counts.get(key, 0) for key in keys],
                "here": here.get(step.key, 0),
                "withdrew": left.get(step.key, 0),
                "screened_out": screened if step.kind == flow.CONSENT else 0,
            }
        )
    return {
        "funnel": {
            "rows": rows,
            "arms": [labels[key] for key in keys],
            "chart": plots.funnel_chart([(r["title"], r["reached"]) for r in rows]),
        }
    }


def step_times(study: Study) -> dict[str, Any]:
    """Median minutes per step over the participants who finished it."""
    spent = ExpressionWrapper(F("completed_at") - F("entered_at"), output_field=DurationField())
    medians = {
        row["step"]: row
        for row in StepVisit.objects.filter(participant__study=study, completed_at__isnull=False)
        .values("step")
        .annotate(n=Count("pk"), median=Median(spent, output_field=DurationField()))
    }
    rows = []
    for step in flow.STEPS:
        if not step.is_page or step.kind == flow.DEBRIEF:
            continue
        row = medians.get(step.key)
        median: timedelta | None = row["median"] if row else None
        rows.append(
            {
                "key": step.key,
                "title": step.title,
                "n": row["n"] if row else 0,
                "minutes": median.total_seconds() / 60 if median is not None else None,
            }
        )
    return {"step_times": rows}


def model_health(study: Study) -> dict[str, Any]:
    """Model calls by purpose and outcome, feedback engines and fallbacks, failed replies."""
    conversations = StudyChat.objects.filter(participant__study=study).values("conversation_id")
    drafts = Draft.objects.filter(conversation_id__in=conversations).values("pk")
    calls = LLMCall.objects.filter(Q(conversation_id__in=conversations) | Q(draft_id__in=drafts))
    purposes = []
    for row in (
        calls.values("purpose")
        .annotate(
            n=Count("pk"),
            errors=Count("pk", filter=~Q(outcome__in=ANSWERED)),
            retried=Count("pk", filter=Q(attempts__gt=1)),
            retries=Sum(F("attempts") - 1),
            median_ms=Median("total_ms", output_field=FloatField()),
        )
        .order_by("purpose")
    ):
        purposes.append(row)
    outcomes = list(
        calls.exclude(outcome__in=ANSWERED)
        .values("purpose", "outcome")
        .annotate(n=Count("pk"))
        .order_by("-n", "purpose")
    )
    requests = FeedbackRequest.objects.filter(draft__conversation_id__in=conversations)
    engines = list(
        requests.values("status", "engine").annotate(n=Count("pk")).order_by("status", "engine")
    )
    reasons = list(
        requests.exclude(fallback_reason="")
        .values("fallback_reason")
        .annotate(n=Count("pk"))
        .order_by("-n")[:10]
    )
    return {
        "health": {
            "purposes": purposes,
            "outcomes": outcomes,
            "engines": engines,
            "reasons": reasons,
            "failed_replies": Message.objects.filter(
                conversation_id__in=conversations, state=Message.State.FAILED
            ).count(),
            "offline_briefs": Conversation.objects.filter(
                pk__in=conversations, partner_brief__source="offline"
            ).count(),
        }
    }


def analysis_tables(study: Study) -> dict[str, Any]:
    """The published appendix's tables, live: survey pre/post and DiD, mastery pre/post and DiD."""
    keys, labels = _arms(study)
    items = codebook.survey_items(study)
    item_keys = [item.key for item in items]
    observations = exports.survey_observations(study)
    situations = list(Slot.values)
    reference = keys[0]
    prepost = analysis.prepost_table(
        observations, arms=keys, situations=situations, items=item_keys
    )
    did = analysis.did_table(
        observations, reference_arm=reference, arms=keys, situations=situations, items=item_keys
    )
    baseline = exports.mastery_baseline()
    mastery_obs = exports.mastery_observations(study)
    present = {o.item for o in mastery_obs}
    skills = [k for k in (*SKILL_KEYS, analysis.OVERALL) if k in present]
    skills += sorted(present - set(skills))
    # As analysis.mastery_tables does, on observations gathered batch by batch.
    mastery = {
        "prepost": analysis.prepost_table(
            mastery_obs, arms=keys, situations=situations, items=skills
        ),
        "did": analysis.did_table(
            mastery_obs, reference_arm=reference, arms=keys, situations=situations, items=skills
        ),
    }
    item_labels = {item.key: item.label for item in items}
    reverse = {item.key for item in items if item.reverse_scored}
    skill_labels = {key: skill.name for key, skill in SKILLS.items()} | {
        analysis.OVERALL: "Overall"
    }
    return {
        "analysis": {
            "reference": labels[reference],
            "prepost": _labelled(prepost, labels, item_labels, reverse),
            "did": _labelled(did, labels, item_labels, reverse),
            "mastery_prepost": _labelled(mastery["prepost"], labels, skill_labels, set()),
            "mastery_did": _labelled(mastery["did"], labels, skill_labels, set()),
            "baseline": baseline,
            "charts": [
                *(
                    plots.prepost_chart(
                        prepost, situation=s, arms=keys, items=item_keys, arm_labels=labels
                    )
                    for s in situations
                ),
                *(
                    plots.mastery_chart(
                        mastery["prepost"], situation=s, arms=keys, arm_labels=labels
                    )
                    for s in situations
                ),
            ],
        }
    }


def _labelled(
    rows: list[dict[str, Any]], arms: dict[str, str], items: dict[str, str], reverse: set[str]
) -> list[dict[str, Any]]:
    """Rows with display names, the arms of one situation and item next to each other."""
    arm_order, item_order = list(arms), list(items)

    def place(row: dict[str, Any]) -> tuple[str, int, int]:
        item = row["item"]
        position = item_order.index(item) if item in item_order else len(item_order)
        return row["situation"], position, arm_order.index(row["arm"])

    return [
        {
            **row,
            "arm_name": arms.get(row["arm"], row["arm"]),
            "item_label": items.get(row["item"], row["item"]),
            "reverse": row["item"] in reverse,
        }
        for row in sorted(rows, key=place)
    ]


def _analysis_signature(study: Study) -> str:
    """Changes whenever data the analysis reads may have changed (cheap aggregate queries)."""
    people = Participant.objects.filter(study=study).aggregate(n=Count("pk"), at=Max("updated_at"))
    answers = SurveyAnswer.objects.filter(participant__study=study).aggregate(
        n=Count("pk"), last=Max("pk")
    )
    raw = f"{people['n']}-{people['at']}-{answers['n']}-{answers['last']}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cached_analysis(study: Study) -> dict[str, Any]:
    """`analysis_tables`, recomputed only when the data changed (charts take a while to draw)."""
    key = f"research:analysis:{study.pk}:{_analysis_signature(study)}"
    value = cache.get(key)
    if value is None:
        value = analysis_tables(study)
        cache.set(key, value, ANALYSIS_CACHE_S)
    return value


def bonus(study: Study) -> dict[str, Any]:
    """The top share of completed participants per arm by mastery after training."""
    _, labels = _arms(study)
    scores, arms = exports.post_mastery(study)
    rows = analysis.bonus_list(scores, arms, share=BONUS_SHARE)
    eligible = Counter(arms.values())
    return {
        "bonus": {
            "share": BONUS_SHARE,
            "rows": [{**row, "arm_name": labels.get(row["arm"], row["arm"])} for row in rows],
            "eligible": [(labels.get(arm, arm), n) for arm, n in sorted(eligible.items())],
        }
    }


FRAGMENTS: dict[str, Callable[[Study], dict[str, Any]]] = {
    "enrolment": enrolment,
    "funnel": funnel,
    "step_times": step_times,
    "model_health": model_health,
    "analysis": cached_analysis,
    "bonus": bonus,
}


# --------------------------------------------------------------------------- views


def _base(request: HttpRequest, study: Study) -> dict[str, Any]:
    rights = rights_on(request.user, study)
    return {
        "study": study,
        "can_export": Right.EXPORT in rights,
        "can_edit": Right.EDIT in rights,
        "poll": POLL,
    }


@require_safe
@staff_view
def index(request: HttpRequest) -> HttpResponse:
    """The studies this staff member may see."""
    studies = (
        studies_for(request.user, Right.VIEW)
        .annotate(
            n=Count("participants", distinct=True),
            completed=Count(
                "participants",
                filter=Q(participants__status=Participant.Status.COMPLETED),
                distinct=True,
            ),
        )
        .order_by("-created_at")
    )
    return render(request, "research/index.html", {"studies": studies})


@require_safe
@research_view(Right.VIEW)
def dashboard(request: HttpRequest, study: Study) -> HttpResponse:
    """The live dashboard of one study."""
    context = _base(request, study)
    for build in FRAGMENTS.values():
        context.update(build(study))
    return render(request, "research/dashboard.html", context)


@require_safe
@research_view(Right.VIEW)
def fragment(request: HttpRequest, study: Study, name: str) -> HttpResponse:
    """One fragment of the dashboard, for htmx polling."""
    build = FRAGMENTS.get(name)
    if build is None:
        raise Http404("No such part of the dashboard.")
    context = {**_base(request, study), **build(study)}
    return render(request, f"research/dashboard.html#{name}", context)


@require_safe
@research_view(Right.VIEW)
def participants(request: HttpRequest, study: Study) -> HttpResponse:
    """Every participant of the study, newest first, filterable by status and arm."""
    rows = Participant.objects.filter(study=study).select_related("arm").order_by("-started_at")
    status = request.GET.get("status", "")
    arm = request.GET.get("arm", "")
    if status in Participant.Status.values:
        rows = rows.filter(status=status)
    if arm:
        rows = rows.filter(arm__key=arm)
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "research/participants.html",
        {
            **_base(request, study),
            "page": page,
            "status": status,
            "arm": arm,
            "statuses": Participant.Status.choices,
            "arms": study.arms.order_by("order", "key"),
        },
    )


@require_safe
@research_view(Right.VIEW)
def participant(request: HttpRequest, study: Study, code: str) -> HttpResponse:
    """One participant's whole record: transcript with drafts and feedback, answers, calls."""
    found = Participant.objects.filter(study=study, code=code).select_related("arm").first()
    if found is None:
        raise Http404("No such participant in this study.")
    record = exports.participant_record(study, found.pk)
    audit.record_request(request, "study.participant.view", found, study=study.slug)
    items = codebook.survey_items(study)
    answers = {(a["situation"], a["time"], a["item"]): a["value"] for a in record["answers"]}
    table = [
        {
            "label": item.label,
            "key": item.key,
            "values": [
                answers.get((slot, time, item.key))
                for slot in Slot.values
                for time in ("pre", "post")
            ],
        }
        for item in items
    ]
    titles = {step.key: step.title for step in flow.STEPS}
    return render(
        request,
        "research/participant.html",
        {
            **_base(request, study),
            "participant": found,
            "record": record,
            "answers": table,
            "steps": [
                {
                    **visit,
                    "title": titles.get(visit["step"], visit["step"]),
                    "minutes": (visit["completed_at"] - visit["entered_at"]).total_seconds() / 60
                    if visit["completed_at"]
                    else None,
                }
                for visit in record["steps"]
            ],
            "chats": [
                {
                    **chat,
                    "title": titles.get(chat["step"], chat["step"]),
                    "timeline": timeline(chat),
                }
                for chat in record["chats"]
            ],
        },
    )


SKILL_LABELS = dict(STRATEGY_CHOICES)
SUGGESTION_ENGINES = {
    SkillSuggestion.Engine.RULE: "the fixed rule for the first message",
    SkillSuggestion.Engine.LLM: "the language model",
    SkillSuggestion.Engine.OFFLINE: "the written rules",
}


def timeline(chat: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat's events in the order they happened: before each learner message, the drafts of
    its turn with their feedback and the skill suggestions asked for it (among the drafts, in the
    order they were made); check-ins after the message they followed."""
    events: list[tuple[tuple[int, int, float], dict[str, Any]]] = []
    turn = 0
    for message in chat["messages"]:
        if message["role"] == Message.Role.LEARNER:
            turn += 1
            order = 1
        else:
            order = 2
        events.append(((turn, order, message["seq"]), {"type": "message", **message}))
    calls = {call["id"]: call for call in chat["model_calls"]}
    for draft in chat["drafts"]:
        feedback = [
            {
                **f,
                "call": calls.get(f["llm_call_id"]),
                "skills": _feedback_skills(f["result"]),
            }
            for f in draft["feedback"]
        ]
        events.append(
            (
                (draft["turn"], 0, draft["revision"]),
                {"type": "draft", **draft, "feedback": feedback},
            )
        )
    for suggestion in chat.get("suggestions", []):
        # Among its turn's drafts: after the last one saved before it was asked (as the export).
        before = [
            draft["revision"]
            for draft in chat["drafts"]
            if draft["turn"] == suggestion["turn"]
            and draft["created_at"] <= suggestion["created_at"]
        ]
        events.append(
            (
                (suggestion["turn"], 0, max(before, default=0) + 0.5),
                {
                    "type": "suggestion",
                    **suggestion,
                    "skill_label": SKILL_LABELS.get(suggestion["skill"], suggestion["skill"]),
                    "engine_label": SUGGESTION_ENGINES.get(
                        suggestion["engine"], suggestion["engine"]
                    ),
                    "call": calls.get(suggestion["llm_call_id"]),
                },
            )
        )
    turn_of_seq = {}
    turn = 0
    for message in chat["messages"]:
        turn += message["role"] == Message.Role.LEARNER
        turn_of_seq[message["seq"]] = turn
    for checkin in chat["checkins"]:
        after = checkin["after_seq"]
        events.append(((turn_of_seq.get(after, 0), 3, after), {"type": "checkin", **checkin}))
    for _, event in events:
        if event["type"] == "message":
            event["call"] = calls.get(event["llm_call_id"])
            event["rated"] = _message_ratings(event)
    events.sort(key=lambda pair: pair[0])
    return [event for _, event in events]


def _feedback_skills(result: Any) -> list[dict[str, Any]]:
    skills = result.get("skills", {}) if isinstance(result, dict) else {}
    return [{"skill": key, **value} for key, value in skills.items() if isinstance(value, dict)]


def _message_ratings(message: dict[str, Any]) -> list[tuple[str, str]]:
    ratings = message.get("ratings") or {}
    if message["role"] != Message.Role.LEARNER or not isinstance(ratings, dict):
        return []
    return [(skill, level) for skill, level in ratings.items()]


EXPORTABLE = {
    "csv": ("application/zip", None),
    "json": ("application/zip", None),
    codebook.LONG: ("text/csv; charset=utf-8", codebook.LONG),
    codebook.WIDE: ("text/csv; charset=utf-8", codebook.WIDE),
    codebook.MESSAGES: ("text/csv; charset=utf-8", codebook.MESSAGES),
    codebook.CODEBOOK: ("text/csv; charset=utf-8", codebook.CODEBOOK),
    codebook.JSON_FILE: ("application/json", codebook.JSON_FILE),
    codebook.BONUS: ("text/csv; charset=utf-8", codebook.BONUS),
}


@require_POST
@research_view(Right.EXPORT)
def export(request: HttpRequest, study: Study) -> HttpResponse:
    """Download an export (a zip of a format's files, or one file), logged in the audit trail."""
    what = request.POST.get("what", "csv")
    if what not in EXPORTABLE:
        raise Http404("No such export.")
    options = codebook.Options(include_recruitment_ids=request.POST.get("recruitment_ids") == "1")
    content_type, single = EXPORTABLE[what]
    if single is None:
        files = codebook.FORMATS[what]
        chunks = exports.bundle_chunks(study, what, options)
        filename = exports.bundle_name(study, what)
    else:
        files = (single,)
        chunks = exports.file_chunks(study, single, options)
        stem, _, suffix = single.rpartition(".")
        filename = f"{study.slug}-{stem}.{suffix}"
    exports.record_export(
        request.user,
        study,
        what=what,
        files=files,
        options=options,
        via="admin" if request.POST.get("via") == "admin" else "dashboard",
        ip=audit.client_ip(request),
    )
    return stream_download(request, chunks, filename=filename, content_type=content_type)


def stream_download(
    request: HttpRequest, chunks: Iterator[bytes], *, filename: str, content_type: str
) -> StreamingHttpResponse:
    """A download streamed chunk by chunk, under WSGI and ASGI alike.

    Django would read a plain iterator to the end before sending it under ASGI (its sync-iterator
    fallback), so ASGI requests get an async iterator that pulls one chunk at a time from the
    same thread the view ran in (the database cursor lives there).
    """
    body: Any = _pull(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


async def _pull(chunks: Iterator[bytes]) -> Any:
    step = sync_to_async(next, thread_sensitive=True)
    while True:
        chunk = await step(chunks, None)
        if chunk is None:
            return
        yield chunk


app_name = "research"

urlpatterns = [
    path("", index, name="index"),
    path("<slug:slug>/", dashboard, name="dashboard"),
    path("<slug:slug>/fragment/<slug:name>/", fragment, name="fragment"),
    path("<slug:slug>/participants/", participants, name="participants"),
    path("<slug:slug>/participants/<str:code>/", participant, name="participant"),
    path("<slug:slug>/export/", export, name="export"),
]
