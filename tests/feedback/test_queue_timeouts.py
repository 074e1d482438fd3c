"""A Redis that accepts connections but never answers (a stopped server, a dead network path):
queueing a feedback request gives up after a bounded wait and raises, so
`feedback.services._enqueue` answers the request with its offline rating, instead of holding the
learner's "Get feedback" (and its web thread) for as long as Redis stays silent. kombu's default
is to wait for ever."""

from __future__ import annotations

from typing import Any

from celery import Celery
from django.conf import settings
from kombu.exceptions import OperationalError

from tests.conftest import within

TASK = "feedback.tasks.rate_feedback_request"


def _product_app(broker_url: str, **overrides: Any) -> Celery:
    """A Celery app configured as the product's (`imbue/celery.py`), on another broker."""
    app = Celery("queue-probe", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = broker_url
    app.conf.update(overrides)
    return app


def _publish(app: Celery, bound_s: float, **options: Any) -> tuple[object, float]:
    """What `send_task` raised (or returned) and how long it took; fails if it is still waiting
    after `bound_s`."""
    outcome, ended, took = within(lambda: app.send_task(TASK, args=(1,), **options), bound_s)
    assert ended, f"the publish still waited for Redis after {bound_s}s"
    return outcome, took


def test_one_try_gives_up_after_the_products_socket_timeout(silent_server: str) -> None:
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["socket_timeout"]
    assert 0 < timeout <= 5
    # A new connection asks Redis a question or two before the task's own push: each waits.
    outcome, took = _publish(_product_app(silent_server), 4 * timeout + 2, retry=False)
    assert isinstance(outcome, OperationalError), outcome
    assert took >= timeout * 0.9  # the product's timeout, not some shorter default


def test_the_products_retries_end_and_raise(silent_server: str) -> None:
    """The publish's own retries (four tries) end too; the socket timeout is shortened here."""
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS}
    options.update(socket_timeout=0.3, socket_connect_timeout=0.3)
    app = _product_app(silent_server, broker_transport_options=options)
    policy = settings.CELERY_TASK_PUBLISH_RETRY_POLICY
    outcome, took = _publish(app, 10)
    assert isinstance(outcome, OperationalError), outcome
    # Every try waited its timeout: the retries happened (a Redis restart needs them).
    assert took >= (policy["max_retries"] + 1) * 0.3 * 0.9


def _short_timeouts_app(url: str) -> Celery:
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS}
    options.update(socket_timeout=0.3, socket_connect_timeout=0.3)
    return _product_app(url, broker_transport_options=options)


def test_a_feedback_request_is_not_queued_again_after_a_timeout(silent_redis_server) -> None:
    """`_enqueue`'s policy: one try on a Redis that does not answer (the product's default
    policy tries four times, each waiting its timeout), then the offline answer."""
    from feedback.services import ENQUEUE_RETRY_POLICY
    from imbue import redis_quiet

    app = _short_timeouts_app(silent_redis_server.url)
    outcome, took = _publish(app, 10, retry_policy=ENQUEUE_RETRY_POLICY)
    assert isinstance(outcome, Exception) and redis_quiet._is_timeout(outcome), outcome
    assert silent_redis_server.connections == 1  # four without the errback
    policy = settings.CELERY_TASK_PUBLISH_RETRY_POLICY
    assert took < (policy["max_retries"] + 1) * 0.3 * 0.9


def test_a_dropped_connection_is_still_queued_again(dropping_redis_server) -> None:
    """A Redis just restarted drops the pooled connections: those tries go on as before."""
    from feedback.services import ENQUEUE_RETRY_POLICY

    app = _short_timeouts_app(dropping_redis_server.url)
    outcome, _ = _publish(app, 10, retry_policy=ENQUEUE_RETRY_POLICY)
    assert isinstance(outcome, OperationalError), outcome
    assert (
        dropping_redis_server.connections
        >= settings.CELERY_TASK_PUBLISH_RETRY_POLICY["max_retries"] + 1
    )
