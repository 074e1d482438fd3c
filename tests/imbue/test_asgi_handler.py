"""HTTP through the ASGI application: the middleware chain and the view run in one thread, with
one hop from the event loop instead of one per middleware hook."""

from __future__ import annotations

import asyncio
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


# --- the request threads: reused, never shared by two requests at once ----------------------

SCOPE = {
    "type": "http", "method": "GET", "raw_path": b"", "query_string": b"",
    "headers": [(b"host", b"localhost")], "scheme": "http", "server": ("localhost", 80),
    "client": ("127.0.0.1", 5000), "asgi": {"version": "3.0"}, "http_version": "1.1",
    "root_path": "",
}  # fmt: skip

gate = threading.Event()


def where(request):
    return HttpResponse(str(threading.get_ident()))


def waits(request):
    # Holds its thread until the next request has been answered: a second request queued on
    # the same thread would never be.
    if not gate.wait(timeout=10):
        return HttpResponse("timed out", status=500)
    return HttpResponse(str(threading.get_ident()))


urlpatterns += [path("where/", where), path("waits/", waits)]


async def _get(handler, route: str) -> tuple[int, str]:
    app = ApplicationCommunicator(handler, {**SCOPE, "path": route, "raw_path": route.encode()})
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(timeout=15)
    body = await app.receive_output(timeout=15)
    await app.wait(timeout=15)
    return start["status"], body["body"].decode()


async def _settled(threads: asgi.RequestThreads, idle: int) -> None:
    for _ in range(200):
        if len(threads.idle) >= idle:
            return
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_requests_one_after_another_reuse_one_thread(settings) -> None:
    settings.ROOT_URLCONF = __name__
    threads = asgi.RequestThreads(keep=4)
    handler = asgi.OneHopASGIHandler(threads)
    served = []
    for _ in range(3):
        status, ident = await _get(handler, "/where/")
        assert status == 200
        served.append(int(ident))
        await _settled(threads, 1)
    assert len(set(served)) == 1  # Django's handler starts a new thread for each request
    assert threading.get_ident() not in served
    assert len(threads.idle) == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_requests_at_the_same_time_get_their_own_threads(settings) -> None:
    settings.ROOT_URLCONF = __name__
    threads = asgi.RequestThreads(keep=4)
    handler = asgi.OneHopASGIHandler(threads)
    gate.clear()
    waiting = asyncio.ensure_future(_get(handler, "/waits/"))
    await asyncio.sleep(0.2)  # the first request now holds its thread
    status, other = await _get(handler, "/where/")
    gate.set()
    first_status, first = await waiting
    assert (status, first_status) == (200, 200)
    assert other != first


def test_a_thread_is_idle_again_only_when_its_work_is_done() -> None:
    async def scenario() -> None:
        threads = asgi.RequestThreads(keep=1)
        executor = threads.take()
        release = threading.Event()
        executor.submit(release.wait, 10)  # a view still running after its client left
        threads.give_back(executor)
        await asyncio.sleep(0.2)
        assert threads.idle == []  # not handed to the next request while busy
        release.set()
        await _settled(threads, 1)
        assert threads.idle == [executor]
        assert threads.take() is executor
        # Beyond `keep`, threads given back are shut down rather than kept.
        spare = threads.take()
        threads.give_back(executor)
        threads.give_back(spare)
        await _settled(threads, 1)
        await asyncio.sleep(0.1)
        assert len(threads.idle) == 1
        kept = threads.idle[0]
        gone = spare if kept is executor else executor
        with pytest.raises(RuntimeError):
            gone.submit(int)  # shut down

    asyncio.run(scenario())
