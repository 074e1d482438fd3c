"""HTTP through the ASGI application: the middleware chain and the view run in one thread, with
one hop from the event loop instead of one per middleware hook."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import SyncToAsync, iscoroutinefunction
from asgiref.testing import ApplicationCommunicator
from django.http import HttpResponse
from django.urls import path
from django.utils.deprecation import MiddlewareMixin

from imbue import asgi

seen: list[tuple[str, int]] = []


class RecordingMiddleware(MiddlewareMixin):
    """A classic middleware (sync and async capable, as Django's own) noting where hooks ran."""

    def process_request(self, request):
        seen.append(("middleware", threading.get_ident()))

    def process_response(self, request, response):
        seen.append(("middleware after", threading.get_ident()))
        return response


def view(request):
    seen.append(("view", threading.get_ident()))
    request.session["visited"] = True  # sessions work in the one thread too
    return HttpResponse("ok")


urlpatterns = [path("probe/", view)]


def test_the_chain_is_built_synchronous() -> None:
    assert not iscoroutinefunction(asgi.django_asgi_app._middleware_chain)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_request_stays_in_one_thread_and_gets_every_middlewares_work(
    settings, monkeypatch
) -> None:
    settings.ROOT_URLCONF = __name__
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.RecordingMiddleware"]
    handler = asgi.OneHopASGIHandler()  # built with the settings above
    seen.clear()
    scope = {
        "type": "http", "method": "GET", "path": "/probe/", "raw_path": b"/probe/",
        "query_string": b"", "headers": [(b"host", b"localhost")], "scheme": "http",
        "server": ("localhost", 80), "client": ("127.0.0.1", 5000), "asgi": {"version": "3.0"},
        "http_version": "1.1", "root_path": "",
    }  # fmt: skip
    hops = []
    real_init = SyncToAsync.__init__

    def counting(self, func, *args, **kwargs):
        hops.append(getattr(func, "__qualname__", repr(func)))
        real_init(self, func, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__init__", counting)
    app = ApplicationCommunicator(handler, scope)
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(timeout=10)
    body = await app.receive_output(timeout=10)
    # The request ends as under a server: the connection goes back to the pool when it closes.
    await app.wait(timeout=10)
    assert start["status"] == 200 and body["body"] == b"ok"
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    assert "content-security-policy" in headers  # our security headers middleware ran
    assert "sessionid" in headers.get("set-cookie", "")  # and the session middleware
    assert [name for name, _ in seen] == ["middleware", "view", "middleware after"]
    assert len({thread for _, thread in seen}) == 1
    assert threading.get_ident() not in {thread for _, thread in seen}
    # The request's hop, and the request-started and -finished signals' receivers: not one per
    # hook of the dozen middlewares (Django's own async chain made 14 here).
    assert len(hops) <= 4, hops
