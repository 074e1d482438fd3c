import pytest
from django.test import Client


@pytest.mark.django_db(transaction=True)
def test_healthz_reports_database_redis_and_worker_up(client: Client, celery_worker) -> None:
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["ok"] is True
    assert body["database"]["ok"] and "PostgreSQL" in body["database"]["detail"]
    assert body["redis"]["ok"] and body["worker"]["ok"]


@pytest.mark.django_db(transaction=True)
def test_healthz_says_503_when_the_worker_is_killed(client: Client, celery_worker) -> None:
    celery_worker.kill()
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["worker"] == {"ok": False, "detail": "no worker answered"}
    assert body["database"]["ok"] and body["redis"]["ok"]


def test_healthz_says_503_when_redis_is_unreachable(client: Client, settings, monkeypatch) -> None:
    from imbue import services

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(services, "_database_answers", lambda: (True, "PostgreSQL 18"))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["redis"]["ok"] is False
    assert response.json()["worker"] == {"ok": False, "detail": "Redis is down"}
