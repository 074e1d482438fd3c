import sys

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from imbue import services
from imbue.security import database_unavailable_response, is_database_outage


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "imbue/home.html")


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    report = services.check_health()
    return JsonResponse(report, status=200 if report["ok"] else 503)


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
