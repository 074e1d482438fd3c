import sys
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from imbue import ratelimit, services
from imbue.audit import client_ip
from imbue.security import database_unavailable_response, is_database_outage


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "imbue/home.html")


# HEAD too: uptime monitors often check with HEAD, and a 405 would read as "down".
@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    report = services.check_health()
    return JsonResponse(report, status=200 if report["ok"] else 503)


# --- resume codes: guessing is limited (imbue.ratelimit), both resume forms use this


def resume_allowed(request: HttpRequest) -> ratelimit.Decision:
    """Whether this browser may try a resume code now: refused (`too_many_resume_tries`) while
    its address or session has tried too many wrong ones lately. The attempt is counted now, as
    a wrong one (attempts sent at the same moment cannot all pass before any is counted); the
    view takes it back with `resume_not_counted` when the code matched or none was given."""
    decision, reserved = ratelimit.try_resume(
        ip=client_ip(request), session_key=request.session.session_key
    )
    request._resume_reserved = reserved  # type: ignore[attr-defined]
    return decision


def resume_not_counted(request: HttpRequest) -> None:
    """Take back the attempt `resume_allowed` counted: the code matched, or none was given."""
    ratelimit.release(getattr(request, "_resume_reserved", []))


def too_many_resume_tries(
    request: HttpRequest, decision: ratelimit.Decision, **form: Any
) -> HttpResponse:
    """429, in plain words, with the resume form again and what was typed kept in it. `form`:
    action, label and button (the form's words), and study (on a study's page)."""
    typed = request.POST.get("code", "")[:100]
    response = render(
        request,
        "imbue/too_many_tries.html",
        {"message": decision.message, "code": typed, **form},
        status=429,
    )
    response["Retry-After"] = str(decision.retry_after)
    return response


# --- conversation starts: limited per browser and address (imbue.ratelimit.try_start)


def start_allowed(request: HttpRequest) -> ratelimit.Decision:
    """Whether this browser may start another conversation now (counted when it may)."""
    from simulations.learners import SESSION_KEY

    return ratelimit.try_start(
        ip=client_ip(request),
        learner_id=request.session.get(SESSION_KEY),
        session_key=request.session.session_key,
    )


def too_many_starts(
    request: HttpRequest, decision: ratelimit.Decision, *, action: str
) -> HttpResponse:
    """429, in plain words, with a button that tries the same start again."""
    response = render(
        request,
        "imbue/too_many_tries.html",
        {"message": decision.message, "action": action, "button": "Try again"},
        status=429,
    )
    response["Retry-After"] = str(decision.retry_after)
    return response


# --- error pages: plain words, no details; rendered without the request so they need no database


def _error_page(template: str, status: int, **context: object) -> HttpResponse:
    return HttpResponse(render_to_string(template, context), status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error_page("imbue/error_400.html", 400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error_page("imbue/error_403.html", 403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error_page("imbue/error_404.html", 404)


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception, so exc_info names what went wrong.
    if is_database_outage(sys.exc_info()[1]):
        return database_unavailable_response()
    return _error_page("imbue/error_500.html", 500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return _error_page("imbue/error_403.html", 403, csrf=True)
