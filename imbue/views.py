from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from imbue import services


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "imbue/home.html")


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    report = services.check_health()
    return JsonResponse(report, status=200 if report["ok"] else 503)
