"""ASGI entry point: HTTP through Django, websockets through Channels."""

import asyncio
import itertools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imbue.settings")


class RequestThreads:
    """Long-lived threads for HTTP requests, each serving one request at a time.

    Django gives every request a new thread (an executor made when the request's
    ThreadSensitiveContext is entered, shut down when it is left): starting and joining a thread
    costs about 0.35 ms of CPU per request, part of it in the event loop, which waits for the
    thread to start. Here a request takes an idle thread, or a new one when none is idle, so
    requests never queue behind each other (as with Django's), and gives it back once everything
    it queued there has run, a view still running after its client left included. At most `keep`
    idle threads are kept; more are shut down.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.idle: list[ThreadPoolExecutor] = []
        self.made = itertools.count()

    def take(self) -> ThreadPoolExecutor:
        if self.idle:
            return self.idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"http-{next(self.made)}")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        """Idle again once the work already queued on it is done (called on the event loop)."""
        loop = asyncio.get_running_loop()
        done = executor.submit(int)  # runs after everything queued before it
        done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._idle, executor))

    def _idle(self, executor: ThreadPoolExecutor) -> None:
        if len(self.idle) < self.keep:
            self.idle.append(executor)
        else:
            executor.shutdown(wait=False)


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler with its middleware chain and view run the synchronous way, in one
    thread per request.

    Django runs the chain asynchronously under ASGI, and every middleware written the classic
    way (sessions, CSRF, authentication, messages...) then hops from the event loop to a thread
    and back for each of its hooks: about fifteen round trips per request through a loop that is
    also streaming every socket's replies, each waiting its turn there. All our views and
    middleware are synchronous, so the request goes to its thread once and stays there.
    """

    def __init__(self, threads: RequestThreads | None = None) -> None:
        # Not ASGIHandler's __init__: it would build the async chain too.
        self.load_middleware(is_async=False)
        keep = int(os.environ.get("HTTP_IDLE_THREADS", "32"))
        self.threads = threads or RequestThreads(keep)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Django's, with the request's thread-sensitive work on a reused thread (RequestThreads)
        instead of a new one: the request-started signal, the chain and view, the response's
        close and the request-finished signal, all on that one thread as before."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.threads.take()
        context = ThreadSensitiveContext()  # registered, not entered (entering makes a thread)
        SyncToAsync.context_to_thread_executor[context] = executor
        token = SyncToAsync.thread_sensitive_context.set(context)
        try:
            await self.handle(scope, receive, send)
        finally:
            SyncToAsync.thread_sensitive_context.reset(token)
            SyncToAsync.context_to_thread_executor.pop(context, None)
            self.threads.give_back(executor)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


# Django must be set up before the routing modules import models.
django.setup(set_prefix=False)
django_asgi_app = OneHopASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from imbue.gcfreeze import apply_thresholds, freeze_long_lived, watch_pauses  # noqa: E402
from imbue.routing import websocket_urlpatterns  # noqa: E402
from imbue.settings import env_float  # noqa: E402

_CONVERSATION = re.compile(r"/(\d+)(?:/|$)")


class DatabaseThreads:
    """Spread the sockets' database calls over a few threads instead of one.

    Channels runs every `database_sync_to_async` call of a process on one thread (asgiref's
    single thread-sensitive executor), so with hundreds of sockets each waits behind all the
    others' queries. Django's HTTP handler gives each request its own thread; this gives each
    socket one of `threads` long-lived threads, chosen by the conversation in its path, so the
    sockets of one conversation (its tabs, its feedback panel) still take turns on one thread as
    before, while different conversations run side by side. A socket's calls stay on one thread,
    as thread-sensitive code expects, and so do the tasks it starts (a partner reply that outlives
    the socket keeps its thread, which is never shut down).
    """

    def __init__(self, app: Any, threads: int) -> None:
        self.app = app
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"socket-db-{i}")
            for i in range(max(1, threads))
        ]
        self.turn = itertools.count()

    def executor_for(self, scope: Any) -> ThreadPoolExecutor:
        found = _CONVERSATION.search(str(scope.get("path", "")))
        key = int(found.group(1)) if found else next(self.turn)
        return self.executors[key % len(self.executors)]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        context = ThreadSensitiveContext()
        # Registered, not entered: an entered context shuts its executor down on exit, or
        # refuses calls from the tasks that outlive it; this one is dropped (weakly keyed) once
        # nothing refers to it.
        SyncToAsync.context_to_thread_executor[context] = self.executor_for(scope)
        token = SyncToAsync.thread_sensitive_context.set(context)
        try:
            return await self.app(scope, receive, send)
        finally:
            SyncToAsync.thread_sensitive_context.reset(token)


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": DatabaseThreads(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
            threads=int(os.environ.get("SOCKET_DB_THREADS", "8")),
        ),
    }
)

freeze_long_lived()  # everything above lives as long as the process
apply_thresholds()  # GC_THRESHOLDS
watch_pauses(env_float("GC_PAUSE_WARN_MS", 100.0))  # 0 or less: off
