"""Long-lived objects are set aside from the collector once built."""

from __future__ import annotations

import gc

from imbue.gcfreeze import freeze_long_lived


def test_objects_alive_now_are_set_aside_and_garbage_made_later_is_still_collected() -> None:
    class Node:
        pass

    kept = [Node() for _ in range(1000)]
    try:
        freeze_long_lived()
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        # A cycle made afterwards is not frozen: a collection still frees it.
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
