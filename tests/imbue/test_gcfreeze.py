"""Long-lived objects are set aside from the collector once built."""

from __future__ import annotations

import gc
import weakref

from imbue.gcfreeze import freeze_long_lived


def test_objects_alive_now_are_set_aside_and_garbage_made_later_is_still_collected() -> None:
    class Node:
        pass

    kept = Node()
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() > 0
        # Set aside: no longer among the objects a collection walks.
        assert not any(obj is kept for obj in gc.get_objects())
        # A cycle made afterwards is not: a collection still frees it.
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
