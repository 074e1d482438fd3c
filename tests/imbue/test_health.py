import json
import logging

import pytest
from django.db import OperationalError
from django.test import Client


@pytest.mark.django_db(transaction=True)
def test_healthz_reports_database_redis_and_worker_up(client: Client, celery_worker) -> None:
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["ok"] is True
    for component in ("database", "redis", "worker"):
        assert body[component] == {"ok": True, "status": "up"}
    # Nothing about what runs behind it (versions) for the public.
    assert "PostgreSQL" not in response.content.decode()
    assert "Redis " not in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_healthz_says_503_when_the_worker_is_killed(client: Client, celery_worker) -> None:
    celery_worker.kill()
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["worker"] == {"ok": False, "status": "down"}
    assert body["database"]["ok"] and body["redis"]["ok"]


def test_healthz_says_503_when_redis_is_unreachable(client: Client, settings, monkeypatch) -> None:
    from imbue import services

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(services, "_database_fails", lambda: None)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["redis"] == {"ok": False, "status": "down"}
    assert response.json()["worker"] == {"ok": False, "status": "not checked"}


def test_healthz_answers_head_with_the_same_status(client: Client, settings, monkeypatch) -> None:
    # Uptime monitors often check with HEAD: a 405 there reads as "down" while all is well.
    from imbue import services

    monkeypatch.setattr(services, "_database_fails", lambda: None)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert client.head("/healthz").status_code == client.get("/healthz").status_code == 503
    monkeypatch.setattr(services, "check_health", lambda: {"ok": True})
    head = client.head("/healthz")
    assert head.status_code == 200 and head.content == b""
    assert client.options("/healthz").status_code == 405


class _DatabaseAway:
    def cursor(self) -> None:
        raise OperationalError('connection to server at "10.9.8.7", port 5432 failed: refused')


def test_healthz_names_no_exception_and_logs_what_failed(
    client: Client, settings, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    from imbue import services

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(services, "connection", _DatabaseAway())
    with caplog.at_level(logging.WARNING, logger="imbue.services"):
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert {name: body[name] for name in ("ok", "database", "redis", "worker")} == {
        "ok": False,
        "database": {"ok": False, "status": "down"},
        "redis": {"ok": False, "status": "down"},
        "worker": {"ok": False, "status": "not checked"},
    }
    public = json.dumps(body)
    for leak in ("Error", "Exception", "10.9.8.7", "5432", "127.0.0.1"):
        assert leak not in public
    # The operators' details are in the server's log instead.
    logged = caplog.text
    assert "database is down: OperationalError" in logged and "10.9.8.7" in logged
    assert "redis is down: ConnectionError" in logged
