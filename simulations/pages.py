"""Free-practice pages outside the live chat: situations, library, history, progress, resume.

Included at /practice/ under the namespace "practice". Every page filters by this browser's
learner (simulations.learners); nothing here takes a learner or owner id from the client.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import get_script_prefix, path, reverse
from django.utils.safestring import mark_safe
from django.utils.text import slugify
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from imbue.views import (
    resume_allowed,
    resume_not_counted,
    start_allowed,
    too_many_resume_tries,
    too_many_starts,
)
from simulations import progress, services, situations
from simulations.learners import current_learner, owned_conversation, resume_with_code
from simulations.models import (
    LIBRARY_ROWS,
    PRACTISABLE,
    Category,
    Conversation,
    Learner,
    Message,
    Situation,
)

app_name = "practice"


def _start(
    request: HttpRequest, situation: Situation, *, learner: Learner | None = None
) -> HttpResponse:
    learner = learner or current_learner(request)
    conversation = services.start_conversation(learner=learner, situation=situation)
    return redirect("simulations:conversation", conversation_id=conversation.pk)


@require_safe
def hub(request: HttpRequest) -> HttpResponse:
    learner = current_learner(request)
    conversations = (
        Conversation.objects.owned_by(learner).select_related("situation").order_by("-created_at")
    )
    own_situations = Situation.objects.owned_by(learner).order_by("-created_at")
    return render(
        request,
        "simulations/hub.html",
        {"learner": learner, "conversations": conversations, "own_situations": own_situations},
    )


@require_http_methods(["GET", "HEAD", "POST"])
def new_situation(request: HttpRequest) -> HttpResponse:
    """Write your own situation; names, contacts and places are pointed out before saving."""
    context: dict = {"categories": Category.choices, "difficulties": range(1, 10)}
    if request.method != "POST":  # GET or HEAD
        return render(request, "simulations/situation_form.html", context)
    draft = situations.check_situation(
        situation=request.POST.get("situation", ""),
        goal=request.POST.get("goal", ""),
        category=request.POST.get("category", ""),
        difficulty=request.POST.get("difficulty", ""),
    )
    choice = request.POST.get("identifying")
    if draft.valid and draft.findings and choice == "remove":
        draft = situations.remove_identifying(draft)
    if not draft.valid or (draft.findings and choice != "keep"):
        context.update({"draft": draft, "values": request.POST})
        return render(request, "simulations/situation_form.html", context, status=200)
    allowed = start_allowed(request)
    if not allowed:
        # The form again with everything typed in it (and the choice made about identifying
        # details, if one was), so that pressing the button later starts it.
        context.update({"limit": allowed.message, "values": request.POST})
        response = render(request, "simulations/situation_form.html", context, status=429)
        response["Retry-After"] = str(allowed.retry_after)
        return response
    situation = situations.create_situation(learner=current_learner(request), draft=draft)
    return _start(request, situation)


# The library's situations as HTML, rendered once for the rows they show and the address prefix
# their forms post to: every learner sees the same list, and only the admin (or load_library)
# changes it, in any process. So each request still reads the rows (one query, compiled once)
# and compares them with those last rendered; a change anywhere is seen on the next request. The
# CSRF token differs per browser: the list is rendered with a stand-in, replaced per request.
_CSRF_SLOT = f"csrf-slot-{secrets.token_hex(16)}"
_LIBRARY_FIELDS = ("pk", "category", "difficulty", "title", "situation", "goal")
_rendered_library: tuple[tuple[Any, ...], str] | None = None


def _library_html(rows: list[tuple[Any, ...]]) -> str:
    global _rendered_library
    key = (tuple(rows), get_script_prefix())
    rendered = _rendered_library
    if rendered is not None and rendered[0] == key and not settings.DEBUG:
        return rendered[1]  # (DEBUG: a template being edited shows at once)
    items = [dict(zip(_LIBRARY_FIELDS, row, strict=True)) for row in rows]
    grouped = {
        label: [s for s in items if s["category"] == value] for value, label in Category.choices
    }
    html = render_to_string(
        "simulations/library.html#situations",
        {"grouped": {k: v for k, v in grouped.items() if v}, "csrf_token": _CSRF_SLOT},
    )
    _rendered_library = (key, html)
    return html


@require_safe
def library(request: HttpRequest) -> HttpResponse:
    token = get_token(request)  # the page's one token, in its forms and its htmx headers
    situations = _library_html(LIBRARY_ROWS.all()).replace(_CSRF_SLOT, token)
    return render(
        request,
        "simulations/library.html",
        {"situations": mark_safe(situations), "csrf_token": token},  # noqa: S308 (rendered above)
    )


@require_POST
def practise_situation(request: HttpRequest, situation_id: int) -> HttpResponse:
    """Start a conversation on a library situation or on one of this learner's own."""
    allowed = start_allowed(request)
    if not allowed:
        return too_many_starts(request, allowed, action=request.path)
    learner = current_learner(request)
    situation = PRACTISABLE.first(pk=situation_id, learner_id=learner.pk)
    if situation is None:
        raise Http404("No such situation.")
    return _start(request, situation, learner=learner)


@require_safe
def transcript(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """The learner's own transcript as plain text, to keep."""
    conversation = owned_conversation(request, conversation_id)
    lines = [
        f"IMBUE practice conversation, {conversation.created_at:%Y-%m-%d %H:%M} UTC",
        f"Situation: {conversation.situation.situation}",
        f"Goal: {conversation.situation.goal}",
        f"Outcome: {conversation.get_status_display()}",
        "",
    ]
    for message in conversation.messages.exclude(state=Message.State.FAILED).order_by("seq"):
        who = "You" if message.role == Message.Role.LEARNER else "Them"
        skills = f"  [skills: {', '.join(message.strategies)}]" if message.strategies else ""
        lines.append(f"{who}: {message.text}{skills}")
    response = HttpResponse("\n".join(lines) + "\n", content_type="text/plain; charset=utf-8")
    name = slugify(str(conversation.situation))[:40] or "conversation"
    response["Content-Disposition"] = f'attachment; filename="imbue-{name}-{conversation.pk}.txt"'
    return response


@require_safe
def progress_page(request: HttpRequest) -> HttpResponse:
    rows = progress.learner_progress(current_learner(request))
    chart = progress.progress_chart_svg(rows) if len(rows) >= 1 else ""
    return render(
        request,
        "simulations/progress.html",
        {"rows": rows, "chart": chart, "skills": progress.SKILL_ORDER},
    )


@require_http_methods(["GET", "HEAD", "POST"])
def resume(request: HttpRequest) -> HttpResponse:
    """Continue on this device with the resume code shown on another."""
    if request.method == "POST":
        allowed = resume_allowed(request)
        if not allowed:
            return too_many_resume_tries(
                request,
                allowed,
                action=reverse("practice:resume"),
                label="Resume code",
                button="Continue",
            )
        code = request.POST.get("code", "")
        learner = resume_with_code(request, code=code)
        if learner is not None or not code.strip():
            resume_not_counted(request)
        if learner is not None:
            messages.success(request, "Welcome back: your conversations are here.")
            return redirect(reverse("practice:hub"))
        return render(
            request,
            "simulations/resume.html",
            {"error": "That code was not found. Check it and try again."},
            status=400,
        )
    return render(request, "simulations/resume.html")


urlpatterns = [
    path("", hub, name="hub"),
    path("situations/new/", new_situation, name="new_situation"),
    path("library/", library, name="library"),
    path("situations/<int:situation_id>/practise/", practise_situation, name="practise"),
    path("c/<int:conversation_id>/transcript.txt", transcript, name="transcript"),
    path("progress/", progress_page, name="progress"),
    path("resume/", resume, name="resume"),
]
