"""ASGI entry point: HTTP through Django, websockets through Channels."""

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


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler with its middleware chain and view run the synchronous way, in one
    thread per request.

    Django runs the chain asynchronously under ASGI, and every middleware written the classic
    way (sessions, CSRF, authentication, messages...) then hops from the event loop to a thread
    and back for each of its hooks: about fifteen round trips per request through a loop that is
    also streaming every socket's replies, each waiting its turn there. All our views and
    middleware are synchronous, so the request goes to its thread once and stays there.
    """

    def __init__(self) -> None:  # not ASGIHandler's: it would build the async chain too
        self.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


# Django must be set up before the routing modules import models.
django.setup(set_prefix=False)
django_asgi_app = OneHopASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from imbue.gcfreeze import apply_thresholds, freeze_long_lived, watch_pauses  # noqa: E402
from imbue.routing import websocket_urlpatterns  # noqa: E402
from imbue.settings import env_float  # noqa: E402
from imbue.sockets import SocketSession  # noqa: E402

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
            AllowedHostsOriginValidator(SocketSession(URLRouter(websocket_urlpatterns))),
            threads=int(os.environ.get("SOCKET_DB_THREADS", "8")),
        ),
    }
)

freeze_long_lived()  # everything above lives as long as the process
apply_thresholds()  # GC_THRESHOLDS
watch_pauses(env_float("GC_PAUSE_WARN_MS", 100.0))  # 0 or less: off
