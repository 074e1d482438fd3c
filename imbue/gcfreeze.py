"""Keep the garbage collector's full passes short in long-running processes.

A web or worker process holds about a million objects that live as long as it does (Django, the
channel layer, the offline rater's model, the retrieval index). Python's full collection walks all
of them: measured in a web process under the 100-learner bench, 120-230 ms each, during which
that process serves nobody. `gc.freeze()` moves the objects alive now out of the collector's
sight, so later full passes walk only what was made since (they are still collected if freed).
Called once everything long-lived is built: after start-up, and again after a warm-up.
"""

import gc
import logging

log = logging.getLogger(__name__)


def freeze_long_lived() -> None:
    """Collect what is garbage now, then set every surviving object aside for good."""
    gc.collect()
    gc.freeze()
    log.debug("%d objects set aside from the collector", gc.get_freeze_count())
