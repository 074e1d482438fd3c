"""Security plumbing every app shares: response headers, a clear page when the database is away,
a guard against junk form input, one cleaner for text people type, and spreadsheet-safe cells.

- `SecurityHeadersMiddleware` adds the Content-Security-Policy (no inline or evaluated scripts),
  Permissions-Policy and Cross-Origin-Resource-Policy; Django's SecurityMiddleware already sends
  HSTS (deploy), nosniff, Referrer-Policy and Cross-Origin-Opener-Policy.
- `DatabaseUnavailableMiddleware` (and `imbue.views.server_error`) turn a lost PostgreSQL
  connection into a 503 page that says what happened instead of a generic 500.
- `MethodNotAllowedPageMiddleware` puts a plain page in the 405 of an address opened the wrong way.
- `FormInputGuardMiddleware` answers 400 to form fields and page addresses holding NUL bytes,
  which PostgreSQL text cannot store and which no person types.
- `clean_user_text` is the one cleaner for messages, drafts and situations.
- `csv_safe` defuses spreadsheet formulas in exported cells.
- `parse_frame` reads a websocket frame as a JSON object without ever crashing the consumer.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin

log = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], Any]

# Browser features the product never uses; denying them limits what injected content could ask for.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer", "camera", "display-capture", "geolocation", "gyroscope",
        "magnetometer", "microphone", "payment", "usb",
    )
)  # fmt: skip


def content_security_policy(request: HttpRequest) -> str:
    """The CSP for one response: scripts only from our own files, sockets only to this host.

    `style-src` keeps 'unsafe-inline' because the progress and study charts are matplotlib SVGs
    placed inline in the page, and those carry `style` attributes and a `<style>` element; styles
    cannot run code, so this is the one relaxation.
    """
    connect = ["'self'"]
    try:
        # CSP level 2 browsers do not count ws:/wss: as 'self'; name this host explicitly.
        host = request.get_host()
        connect += [f"ws://{host}", f"wss://{host}"] if not settings.DEPLOY else [f"wss://{host}"]
    except DisallowedHost:
        pass
    form_action = ["'self'", *getattr(settings, "CSP_FORM_ACTION_EXTRA", [])]
    directives = [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src " + " ".join(connect),
        "object-src 'none'",
        "base-uri 'self'",
        "form-action " + " ".join(form_action),
        "frame-ancestors 'none'",
    ]
    if settings.DEPLOY:
        directives.append("upgrade-insecure-requests")
    return "; ".join(directives)


def _add_headers(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    # A view that set its own policy (none does today) keeps it.
    response.headers.setdefault("Content-Security-Policy", content_security_policy(request))
    response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
    response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    return response


class SecurityHeadersMiddleware:
    """Adds CSP, Permissions-Policy and CORP to every response; runs natively sync or async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        return _add_headers(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return _add_headers(request, await self.get_response(request))


# --- the database is unreachable -------------------------------------------------------------

DATABASE_ERRORS = (OperationalError, InterfaceError)


def is_database_outage(exc: BaseException | None) -> bool:
    """True for the errors a lost or refused PostgreSQL connection raises (not bad queries)."""
    return isinstance(exc, DATABASE_ERRORS)


def database_unavailable_response() -> HttpResponse:
    """The 503 page; rendered without the request so nothing on it needs the database."""
    response = HttpResponse(render_to_string("imbue/error_503.html"), status=503)
    response["Retry-After"] = "10"
    return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A view that loses the database answers 503 with a plain explanation, also when DEBUG is on.

    Failures outside views (the session saved on the way out) reach `imbue.views.server_error`,
    which gives the same page. Services write in transactions, so a failed request wrote nothing.
    """

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_outage(exception):
            return None
        log.error("database unreachable during %s %s: %s", request.method, request.path, exception)
        return database_unavailable_response()


# --- a method the address does not take ------------------------------------------------------


class MethodNotAllowedPageMiddleware(MiddlewareMixin):
    """Gives Django's empty 405 (a GET of an address that only takes a form's POST: a page
    reopened from the address bar or the history) a page in plain words; the Allow header stays."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code != 405 or response.streaming or response.content:
            return response
        response.content = render_to_string("imbue/error_405.html").encode()
        response["Content-Type"] = "text/html; charset=utf-8"
        return response


# --- form input -------------------------------------------------------------------------------


class FormInputGuardMiddleware(MiddlewareMixin):
    """Refuses form and query fields, and paths, holding NUL bytes before any view sees them
    (400)."""

    def process_view(
        self, request: HttpRequest, view: Callable, args: tuple, kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        # Runs after CsrfViewMiddleware, so a forged request still gets its 403 first.
        if "\x00" in request.path:
            # A URL's own parts reach lookups too (a participant code in /research/): refused
            # here, as a form field would be, instead of a 500 from PostgreSQL.
            return HttpResponse(
                render_to_string(
                    "imbue/error_400.html",
                    {"reason": "The page address contained characters we cannot read."},
                ),
                status=400,
            )
        for data in (request.GET, request.POST if request.method == "POST" else None):
            if data is None:
                continue
            for key, values in data.lists():
                if "\x00" in key or any("\x00" in value for value in values):
                    return HttpResponse(
                        render_to_string(
                            "imbue/error_400.html",
                            {
                                "reason": "The form contained characters we cannot store.",
                                # Nothing typed is lost: the words come back, without the
                                # characters, with the way back to the page they came from.
                                "kept": _kept_fields(request),
                                "back": _same_site_referer(request),
                            },
                        ),
                        status=400,
                    )
        return None


# Fields a page fills in for itself (keys, steps, choices made by buttons), not typed by anyone.
_NOT_TYPED = {
    "csrfmiddlewaretoken",
    "send_key",
    "step",
    "action",
    "phase",
    "via",
    "used_rewrite",
    "identifying",
    "decision",
}


def _kept_fields(request: HttpRequest) -> list[tuple[str, str]]:
    """What the person typed into a refused form, every field of it, without NUL bytes: (the
    field's name in words, its value), for the 400 page to give back."""
    if request.method != "POST":
        return []
    kept = []
    for key, values in list(request.POST.lists())[:60]:
        name = key.replace("\x00", "")
        if name in _NOT_TYPED or name.startswith("version_"):
            continue
        value = "\n".join(v.replace("\x00", "") for v in values)[:20_000]
        if value.strip():
            words = name.replace("-", " ").replace("_", " ").strip()[:80] or "field"
            kept.append((words, value))
    return kept


def _same_site_referer(request: HttpRequest) -> str:
    """The path of the page that sent the request, if it is one of ours ("" otherwise)."""
    referer = urlsplit(request.META.get("HTTP_REFERER", ""))
    if referer.netloc != request.get_host() or "\x00" in referer.path:
        return ""
    path = referer.path or "/"
    return path + (f"?{referer.query}" if referer.query else "")


# --- text people type -------------------------------------------------------------------------


class UserTextError(ValueError):
    """Text we will not store; `str(error)` is a plain sentence to show the person."""


# C0/C1 controls except tab, newline and carriage return (handled separately), plus the
# bidirectional overrides and isolates that can make a message display differently from what it
# says ("Trojan Source"). Zero-width joiners stay: emoji and several scripts need them.
_STRIP = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff]")
_CONTROL = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
# More control characters than this share (and than 3) and the text is binary junk, not a message.
_JUNK_SHARE = 0.1


def clean_user_text(text: str, max_chars: int, *, what: str = "message") -> str:
    """Normalised text ready to store: NFC, plain newlines, no control or bidi-override characters,
    trimmed; raises `UserTextError` with a plain message for NUL/binary input or too long text.

    Empty text is returned as "" (callers decide whether that is allowed).
    """
    if not isinstance(text, str):
        raise UserTextError(f"Your {what} could not be read. Please type it again.")
    if "\x00" in text or _SURROGATE.search(text):
        raise UserTextError(
            f"Your {what} contains characters that are not text (for example from a file that "
            "was pasted in). Please type or paste plain text."
        )
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    controls = len(_CONTROL.findall(text))
    if controls > max(3, _JUNK_SHARE * len(text)):
        raise UserTextError(
            f"Your {what} contains characters that are not text (for example from a file that "
            "was pasted in). Please type or paste plain text."
        )
    text = _STRIP.sub("", text).replace("\t", " ")
    text = _BLANK_RUN.sub("\n\n", text)
    text = "\n".join(line.rstrip() for line in text.split("\n")).strip()
    if len(text) > max_chars:
        raise UserTextError(
            f"Your {what} is {len(text):,} characters long; the limit is {max_chars:,}. "
            "Please shorten it."
        )
    return text


# --- spreadsheet exports ----------------------------------------------------------------------

# A cell starting with one of these is read as a formula by Excel, LibreOffice and Google Sheets.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_safe(value: Any) -> Any:
    """The value for a CSV/XLSX cell: text that a spreadsheet would run as a formula gets a
    leading apostrophe; numbers, dates and other types pass through unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


# --- websocket frames -------------------------------------------------------------------------


class BadFrame(ValueError):
    """A websocket frame that is not a JSON object we can use (`too_long`: over the limit)."""

    def __init__(self, reason: str, *, too_long: bool = False) -> None:
        super().__init__(reason)
        self.too_long = too_long


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def parse_frame(text_data: str | None, *, max_chars: int = 64_000) -> dict[str, Any]:
    """The JSON object a consumer received, or `BadFrame`: never a crash on oversized, deeply
    nested, non-finite (1e400, NaN, Infinity) or non-object input."""
    if not isinstance(text_data, str) or not text_data:
        raise BadFrame("frame missing")
    if len(text_data) > max_chars:
        raise BadFrame("frame too long", too_long=True)
    try:
        payload = json.loads(text_data, parse_float=_finite_float, parse_constant=_no_constants)
    except (ValueError, RecursionError) as error:
        raise BadFrame(str(error)[:100]) from None
    if not isinstance(payload, dict):
        raise BadFrame("not an object")
    return payload
