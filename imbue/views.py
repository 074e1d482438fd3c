import hmac
import sys
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from imbue import ratelimit, services
from imbue.audit import client_ip
from imbue.security import database_unavailable_response, is_database_outage


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "imbue/home.html")


HEALTHZ_NOT_THE_KEY = "That is not this server's HEALTHZ_TOKEN."
HEALTHZ_STAFF_ONLY = (
    "The detailed health report is for staff (sign in at /admin/) or the HEALTHZ_TOKEN's holder."
)
HEALTHZ_NOT_IN_THE_ADDRESS = (
    "Send the token in an 'Authorization: Bearer <token>' header, not in the address: addresses "
    "are written to access logs and proxy logs, where anyone reading them would find the token."
)


def _healthz_token(request: HttpRequest) -> str | None:
    """The token an `Authorization: Bearer` header offers, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


# HEAD too: uptime monitors often check with HEAD, and a 405 would read as "down".
@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """`{"ok": ...}` for everyone (200 or 503); the per-component report for staff (with
    `?details`) and for the holder of settings.HEALTHZ_TOKEN, sent as `Authorization: Bearer`
    (a `?token=` in the address is refused with 400: it would be in the access logs). Both come
    from a report at most HEALTHZ_CACHE_SECONDS old (`services.recent_health`), so asking often
    costs no more checks; a public request reads neither the session nor the database."""
    if "token" in request.GET:
        return JsonResponse({"ok": False, "error": HEALTHZ_NOT_IN_THE_ADDRESS}, status=400)
    token = _healthz_token(request)
    details = False
    if token is not None:
        expected = settings.HEALTHZ_TOKEN
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            return JsonResponse({"ok": False, "error": HEALTHZ_NOT_THE_KEY}, status=403)
        details = True
    elif "details" in request.GET:
        user = getattr(request, "user", None)
        if user is None or not (user.is_active and user.is_staff):
            return JsonResponse({"ok": False, "error": HEALTHZ_STAFF_ONLY}, status=403)
        details = True
    report, age = services.recent_health(settings.HEALTHZ_CACHE_SECONDS)
    status = 200 if report["ok"] else 503
    if not details:
        return JsonResponse({"ok": report["ok"]}, status=status)
    return JsonResponse({**report, "age_s": round(age, 1)}, status=status)


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
    """Whether this browser may start another conversation now (counted when it may). A browser
    that is no learner yet also counts the learner the start will create, against its address
    (imbue.ratelimit.try_new_learner): refused here, the start's own page keeps what was typed."""
    from simulations.learners import NEW_LEARNER_COUNTED, SESSION_KEY

    learner_id = request.session.get(SESSION_KEY)
    ip = client_ip(request)
    reserved: ratelimit.Reservation = []
    if learner_id is None and not hasattr(request, NEW_LEARNER_COUNTED):
        decision, reserved = ratelimit.try_new_learner(ip=ip)
        if not decision:
            return decision
    decision = ratelimit.try_start(
        ip=ip, learner_id=learner_id, session_key=request.session.session_key
    )
    if not decision:
        ratelimit.release(reserved)  # no learner will be created after all
    elif learner_id is None:
        setattr(request, NEW_LEARNER_COUNTED, reserved)
    return decision


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


def too_many_requests(request: HttpRequest, decision: ratelimit.Decision) -> HttpResponse:
    """429 in plain words for a request refused by a limit on creating rows: nothing was stored.
    A GET (a page opened) offers a link to open it again; a form's POST comes back as the same
    form, every field it sent kept in it, so that pressing the button sends it again unchanged."""
    fields = []
    if request.method == "POST":
        fields = [
            (name, value)
            for name, values in request.POST.lists()
            if name != "csrfmiddlewaretoken"
            for value in values
        ]
    response = render(
        request,
        "imbue/too_many_tries.html",
        {
            "message": decision.message,
            "action": request.get_full_path(),
            "button": "Try again",
            "reload": request.method != "POST",
            "fields": fields,
        },
        status=429,
    )
    response["Retry-After"] = str(decision.retry_after)
    return response


class TooManyRequestsMiddleware(MiddlewareMixin):
    """Answers ratelimit.TooManyNewLearners, raised wherever a view would create a learner past
    its address's limit (simulations.learners.current_learner), with `too_many_requests`."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, ratelimit.TooManyNewLearners):
            return too_many_requests(request, exception.decision)
        return None


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
