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


class SentBy:
    """Each pusher's pieces, by its job (here a name)."""

    def __init__(self) -> None:
        self.pieces: dict[str, list[str]] = {}

    async def push(self, job, text: str, lost) -> None:
        self.pieces.setdefault(job, []).append(text)


async def test_with_many_replies_at_once_each_window_widens_to_keep_the_process_budget(
    monkeypatch,
) -> None:
    sent = SentBy()
    monkeypatch.setattr(services, "_push", sent.push)
    before = services.streaming_replies()
    # Budget: 20 pieces a second for the process. Alone, a reply keeps its 50 ms window.
    alone = services._Pusher(job="alone", lost=asyncio.Event(), flush_s=0.05, pieces_per_s=20)
    assert services.streaming_replies() == before + 1
    assert alone.window_s() == pytest.approx(max(0.05, (before + 1) / 20))
    await alone.close()
    assert services.streaming_replies() == before
    # Ten at once: each waits 10 / 20 = 0.5 s between pieces.
    many = [
        services._Pusher(job=f"r{i}", lost=asyncio.Event(), flush_s=0.05, pieces_per_s=20)
        for i in range(10)
    ]
    assert services.streaming_replies() == before + 10
    assert many[0].window_s() == pytest.approx((before + 10) / 20)
    for pusher in many:
        pusher.add("First ")
    await asyncio.sleep(0.02)
    for pusher in many:
        pusher.add("words ")
    await asyncio.sleep(0.2)  # four of the old windows: still inside the wide one
    assert all(sent.pieces[f"r{i}"] == ["First "] for i in range(10))
    for pusher in many[1:]:
        pusher.cancel()  # nine replies end (a cancelled one too counts as ended)
    await asyncio.sleep(0.01)
    assert services.streaming_replies() == before + 1
    assert many[0].window_s() == pytest.approx(max(0.05, (before + 1) / 20))
    many[0].add("again.")
    await many[0].close()
    assert sent.pieces["r0"] == ["First ", "words again."]
    assert services.streaming_replies() == before


async def test_with_no_budget_the_window_never_widens(sent) -> None:
    pushers = [services._Pusher(job=None, lost=asyncio.Event(), flush_s=0.05) for _ in range(50)]
    assert all(p.window_s() == 0.05 for p in pushers)
    for pusher in pushers:
        pusher.cancel()
