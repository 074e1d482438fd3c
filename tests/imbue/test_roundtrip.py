"""The live path: a socket message goes through a real Celery worker and returns over Redis."""

import json
import time

import pytest
from channels.testing import WebsocketCommunicator

from imbue.asgi import application


def _ping_socket() -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application,
        "/ws/ping/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_socket_message_returns_through_celery_worker_and_channel_layer(
    celery_worker,
) -> None:
    communicator = _ping_socket()
    connected, _ = await communicator.connect()
    assert connected
    timings = []
    for index in range(5):
        started = time.monotonic()
        await communicator.send_to(text_data=json.dumps({"ping": f"hello {index}"}))
        reply = json.loads(await communicator.receive_from(timeout=10))
        timings.append(time.monotonic() - started)
        assert reply == {"pong": f"hello {index}", "db": True}
    await communicator.disconnect()


@pytest.mark.asyncio
async def test_socket_from_a_foreign_origin_is_refused() -> None:
    communicator = WebsocketCommunicator(
        application,
        "/ws/ping/",
        headers=[(b"origin", b"http://evil.example"), (b"host", b"localhost")],
    )
    connected, _ = await communicator.connect()
    assert not connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_open_ping_socket_queues_one_ping_at_a_time(monkeypatch) -> None:
    """Anyone may open /ws/ping/: a burst of frames must not fill the worker's queue."""
    from imbue import services

    queued: list[str] = []

    async def queue(*, reply_channel: str, text: str) -> None:
        queued.append(text)

    monkeypatch.setattr(services, "aping_through_worker", queue)
    communicator = _ping_socket()
    connected, _ = await communicator.connect()
    assert connected
    for index in range(5):
        await communicator.send_to(text_data=json.dumps({"ping": f"burst {index}"}))
    answers = [json.loads(await communicator.receive_from(timeout=5)) for _ in range(4)]
    assert queued == ["burst 0"]
    assert all("Wait for the pong" in a["error"] for a in answers)
    # Frames that are JSON but not an object are answered, not a crash of the socket.
    for raw in ("[1, 2]", "3", '"ping"', "not json"):
        await communicator.send_to(text_data=raw)
        assert "Send JSON" in json.loads(await communicator.receive_from(timeout=5))["error"]
    await communicator.disconnect()
