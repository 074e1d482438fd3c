"""Sockets' database calls: spread over a few threads, each socket's calls on one of them."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from asgiref.sync import SyncToAsync, sync_to_async

from imbue.asgi import DatabaseThreads, application


def thread_id() -> int:
    return threading.get_ident()


def run_sockets(
    threads: int, sockets: int, paths: list[str] | None = None
) -> tuple[list[list[int]], dict[int, int]]:
    """Each fake socket makes two thread-sensitive calls and starts a task that makes one more
    after the socket has gone; returns the threads seen per socket and by the late tasks."""
    seen: list[list[int]] = []
    late: dict[int, int] = {}
    tasks: list[asyncio.Task[None]] = []

    async def socket_app(scope: Any, receive: Any, send: Any) -> None:
        number = len(seen)
        seen.append([await sync_to_async(thread_id)(), await sync_to_async(thread_id)()])

        async def after_the_socket() -> None:
            await asyncio.sleep(0.01)
            late[number] = await sync_to_async(thread_id)()

        tasks.append(asyncio.get_running_loop().create_task(after_the_socket()))

    wrapped = DatabaseThreads(socket_app, threads=threads)

    async def main() -> None:
        for n in range(sockets):
            path = paths[n] if paths else f"/ws/conversations/{n}/"
            await wrapped({"type": "websocket", "path": path}, None, None)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return seen, late


def test_each_socket_keeps_one_thread_and_sockets_share_a_few() -> None:
    seen, late = run_sockets(threads=2, sockets=4)
    assert all(a == b for a, b in seen)  # thread-sensitive: one socket, one thread
    firsts = [calls[0] for calls in seen]
    assert len(set(firsts)) == 2  # conversations 0-3 over the two threads
    assert firsts[0] == firsts[2] and firsts[1] == firsts[3]
    # A task that outlives its socket (a partner reply) still runs its calls on that thread.
    assert [late[n] for n in range(4)] == firsts
    assert threading.get_ident() not in firsts


def test_not_the_single_thread_every_socket_shared_before() -> None:
    single = SyncToAsync.single_thread_executor.submit(thread_id).result()
    seen, _ = run_sockets(threads=3, sockets=3)
    assert single not in {calls[0] for calls in seen}
    assert len({calls[0] for calls in seen}) == 3


def test_the_application_spreads_its_websockets() -> None:
    assert isinstance(application.application_mapping["websocket"], DatabaseThreads)
    assert len(application.application_mapping["websocket"].executors) >= 2


def test_the_sockets_of_one_conversation_share_its_thread() -> None:
    paths = [
        "/ws/conversations/7/",
        "/ws/conversations/7/feedback/",
        "/ws/conversations/7/",  # a second tab
        "/ws/conversations/8/",
    ]
    seen, _ = run_sockets(threads=4, sockets=4, paths=paths)
    firsts = [calls[0] for calls in seen]
    # Their calls take turns, as on the one thread before: two tabs storing a message and
    # checking for a reply at the same moment do not race each other inside a process.
    assert firsts[0] == firsts[1] == firsts[2]
    assert firsts[3] != firsts[0]
