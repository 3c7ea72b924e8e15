"""Load-balancer endpoints: /healthz reports that the process is up, /readyz checks every store."""

import pytest
from django.conf import settings

from oot_ingest import dynamo

pytestmark = pytest.mark.usefixtures("stores")


def test_healthz_answers_without_stores(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_readyz_reports_every_store(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["checks"] == {"dynamodb": "ok", "clickhouse": "ok", "redis": "ok"}
    assert "last_success_at" in body["replication"]


def test_readyz_fails_when_dynamodb_table_is_missing(client):
    dynamo.client().delete_table(TableName=settings.DYNAMODB_TABLE)
    dynamo.client().get_waiter("table_not_exists").wait(TableName=settings.DYNAMODB_TABLE)

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["checks"]["dynamodb"] != "ok"
    assert body["checks"]["redis"] == "ok"


def test_readyz_fails_when_redis_is_unreachable(client, monkeypatch):
    from redis import Redis

    from oot_ingest import counters

    monkeypatch.setattr(counters, "_redis", Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["redis"] != "ok"
