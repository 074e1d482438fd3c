"""A reply's text is sent as it streams: the first piece at once, then coalesced per window."""

from __future__ import annotations

import asyncio

import pytest

from simulations import services

pytestmark = pytest.mark.asyncio


class Sent:
    def __init__(self) -> None:
        self.pieces: list[str] = []

    async def push(self, job, text: str, lost) -> None:
        if lost.is_set():
            raise services._LeaseLost
        self.pieces.append(text)


@pytest.fixture
def sent(monkeypatch) -> Sent:
    recorder = Sent()
    monkeypatch.setattr(services, "_push", recorder.push)
    return recorder


async def test_the_first_piece_goes_at_once_and_the_rest_once_per_window(sent) -> None:
    pusher = services._Pusher(job=None, lost=asyncio.Event(), flush_s=0.2)
    pusher.add("Well, ")
    await asyncio.sleep(0.02)
    assert sent.pieces == ["Well, "]  # not held back for the window
    for word in ("I ", "see ", "your "):
        pusher.add(word)
        await asyncio.sleep(0.01)
    assert sent.pieces == ["Well, "]  # inside the window: kept together
    pusher.add("point.")
    await pusher.close()
    assert sent.pieces == ["Well, ", "I see your point."]


async def test_with_no_window_every_piece_goes_as_it_comes(sent) -> None:
    pusher = services._Pusher(job=None, lost=asyncio.Event(), flush_s=0)
    for word in ("a", "b", "c"):
        pusher.add(word)
        await asyncio.sleep(0.01)
    await pusher.close()
    assert sent.pieces == ["a", "b", "c"]


async def test_a_lost_lease_stops_the_stream_at_the_next_piece(sent) -> None:
    lost = asyncio.Event()
    pusher = services._Pusher(job=None, lost=lost, flush_s=0)
    pusher.add("a")
    await asyncio.sleep(0.01)
    lost.set()
    pusher.add("b")
    await asyncio.sleep(0.01)
    with pytest.raises(services._LeaseLost):
        pusher.add("c")
    assert sent.pieces == ["a"]


async def test_the_end_of_a_reply_is_not_held_back_for_the_rest_of_a_window(sent) -> None:
    pusher = services._Pusher(job=None, lost=asyncio.Event(), flush_s=5.0)
    pusher.add("Fine, ")
    await asyncio.sleep(0.02)  # sent at once; the five-second window has begun
    pusher.add("you win.")
    started = asyncio.get_running_loop().time()
    await pusher.close()
    assert asyncio.get_running_loop().time() - started < 1.0
    assert sent.pieces == ["Fine, ", "you win."]


async def test_a_cancelled_pusher_stops_in_its_window_and_closes_quietly(sent) -> None:
    pusher = services._Pusher(job=None, lost=asyncio.Event(), flush_s=5.0)
    pusher.add("a")
    await asyncio.sleep(0.02)
    pusher.add("b")
    pusher.cancel()
    await asyncio.sleep(0.01)
    assert pusher.task.cancelled() and sent.pieces == ["a"]  # "b" waited for a window never ended
