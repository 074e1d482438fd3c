"""/healthz: everyone gets `{"ok": ...}`; staff and the HEALTHZ_TOKEN's holder get the report per
component. However often it is asked, each process checks at most once per HEALTHZ_CACHE_SECONDS."""

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError
from django.test import Client

from imbue import services

TOKEN = "t0ken-for-the-monitor-0123456789"


@pytest.fixture(autouse=True)
def fresh_check(settings) -> Iterator[None]:
    settings.HEALTHZ_TOKEN = TOKEN
    services.forget_health()
    yield
    services.forget_health()


def detailed(client: Client) -> dict:
    return client.get("/healthz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()


@pytest.mark.django_db(transaction=True)
def test_healthz_reports_database_redis_and_worker_up(client: Client, celery_worker) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    # The public learns only that all is well, nothing about what runs behind it.
    assert response.json() == {"ok": True}
    body = detailed(client)
    assert body["ok"] is True
    for component in ("database", "redis", "worker"):
        assert body[component] == {"ok": True, "status": "up"}
    assert body["reasons"] == {} and body["age_s"] >= 0 and body["checked_in_ms"] > 0


@pytest.mark.django_db(transaction=True)
def test_healthz_says_503_when_the_worker_is_killed(client: Client, celery_worker) -> None:
    celery_worker.kill()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"ok": False}
    body = detailed(client)
    assert body["worker"] == {"ok": False, "status": "down"}
    assert body["database"]["ok"] and body["redis"]["ok"]
    assert body["reasons"] == {"worker": "no worker answered"}


def test_healthz_says_503_when_redis_is_unreachable(client: Client, settings, monkeypatch) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(services, "_database_fails", lambda: None)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = detailed(client)
    assert body["redis"] == {"ok": False, "status": "down"}
    assert body["worker"] == {"ok": False, "status": "not checked"}


def test_healthz_answers_head_with_the_same_status(client: Client, settings, monkeypatch) -> None:
    # Uptime monitors often check with HEAD: a 405 there reads as "down" while all is well.
    monkeypatch.setattr(services, "_database_fails", lambda: None)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert client.head("/healthz").status_code == client.get("/healthz").status_code == 503
    services.forget_health()
    monkeypatch.setattr(services, "check_health", lambda: {"ok": True})
    head = client.head("/healthz")
    assert head.status_code == 200 and head.content == b""
    assert client.options("/healthz").status_code == 405


class _DatabaseAway:
    def cursor(self) -> None:
        raise OperationalError('connection to server at "10.9.8.7", port 5432 failed: refused')


def test_healthz_names_no_exception_publicly_and_logs_what_failed(
    client: Client, settings, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(services, "connection", _DatabaseAway())
    with caplog.at_level(logging.WARNING, logger="imbue.services"):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"ok": False}
    # The operators' details are in the server's log and the detailed report instead.
    logged = caplog.text
    assert "database is down: OperationalError" in logged and "10.9.8.7" in logged
    assert "redis is down: ConnectionError" in logged
    body = detailed(client)
    assert {name: body[name] for name in ("ok", "database", "redis", "worker")} == {
        "ok": False,
        "database": {"ok": False, "status": "down"},
        "redis": {"ok": False, "status": "down"},
        "worker": {"ok": False, "status": "not checked"},
    }
    assert "10.9.8.7" in body["reasons"]["database"]


def test_the_detailed_report_needs_the_token_or_staff(client: Client, db, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # quick: no worker to wait for
    wrong = client.get("/healthz", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 403 and "reasons" not in wrong.json()
    assert client.get("/healthz?details").status_code == 403  # anonymous
    assert "reasons" in client.get("/healthz", HTTP_AUTHORIZATION=f"bearer {TOKEN}").json()
    settings.HEALTHZ_TOKEN = ""  # no token configured: none is accepted, not even an empty one
    assert client.get("/healthz", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    learner_like = User.objects.create_user("someone", password="x" * 12)
    client.force_login(learner_like)
    assert client.get("/healthz?details").status_code == 403
    staff = User.objects.create_user("operator", password="x" * 12, is_staff=True)
    client.force_login(staff)
    body = client.get("/healthz?details").json()
    assert body["redis"] == {"ok": False, "status": "down"} and "reasons" in body


def test_a_token_in_the_address_is_refused_with_a_clear_error(client: Client, db, settings) -> None:
    # An address is written to access logs (the server's, the proxy's, the monitor's): a token
    # in it would be readable by whoever reads them, so only the Authorization header carries it.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    for query in (f"token={TOKEN}", "token=nope", "token=", f"details&token={TOKEN}"):
        response = client.get(f"/healthz?{query}")
        body = response.json()
        assert response.status_code == 400, query
        assert body["ok"] is False and "reasons" not in body and "database" not in body
        assert "Authorization: Bearer" in body["error"] and "access logs" in body["error"]
    # Even alongside the right header: a link that carries the token must stop working.
    both = client.get(f"/healthz?token={TOKEN}", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert both.status_code == 400
    assert client.head(f"/healthz?token={TOKEN}").status_code == 400
    assert "reasons" in client.get("/healthz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()
    assert client.get("/healthz", HTTP_AUTHORIZATION=f"Basic {TOKEN}").json() == {"ok": False}


def test_asking_often_checks_once_per_window(client: Client, settings, monkeypatch) -> None:
    checks: list[float] = []

    def check() -> dict:
        checks.append(time.monotonic())
        return {"ok": True}

    monkeypatch.setattr(services, "check_health", check)
    settings.HEALTHZ_CACHE_SECONDS = 0.3
    for _ in range(50):
        assert client.get("/healthz").status_code == 200
        client.get("/healthz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert len(checks) == 1
    time.sleep(0.35)
    client.get("/healthz")
    assert len(checks) == 2


def test_while_one_request_checks_the_others_answer_at_once(settings, monkeypatch) -> None:
    settings.HEALTHZ_CACHE_SECONDS = 0.01
    monkeypatch.setattr(services, "check_health", lambda: {"ok": True})
    services.recent_health(0.01)  # a previous report
    time.sleep(0.02)
    release = threading.Event()
    started = threading.Event()

    def slow_check() -> dict:
        started.set()
        release.wait(5)
        return {"ok": False}

    monkeypatch.setattr(services, "check_health", slow_check)
    checker = threading.Thread(target=services.recent_health, args=(0.01,))
    checker.start()
    assert started.wait(5)
    began = time.monotonic()
    answers = [services.recent_health(0.01)[0] for _ in range(20)]
    assert time.monotonic() - began < 0.5  # none waited for the slow check
    assert answers == [{"ok": True}] * 20  # the previous report
    release.set()
    checker.join(5)
    assert services.recent_health(60)[0] == {"ok": False}


@pytest.mark.django_db
def test_a_public_request_reads_no_session_and_no_database(
    client: Client, settings, monkeypatch, django_assert_num_queries
) -> None:
    monkeypatch.setattr(services, "check_health", lambda: {"ok": True})
    client.get("/healthz")  # the report is remembered
    client.cookies[settings.SESSION_COOKIE_NAME] = "made-up-session-key-made-up-session-key"
    with django_assert_num_queries(0):
        assert client.get("/healthz").json() == {"ok": True}
        assert client.head("/healthz").status_code == 200
