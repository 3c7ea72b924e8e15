"""GET /api/oot/allowlist: the enabled allowlist as JSON for the relay, with an ETag."""

import pytest

from oot_ingest import policy
from oot_ingest.models import AllowlistEntry

URL = "/api/oot/allowlist"


@pytest.fixture(autouse=True)
def fresh_policy():
    policy.clear_policy_cache()
    yield
    policy.clear_policy_cache()


def test_allowlist_grouped_by_level(client, policy_world):
    response = client.get(URL)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "L1": [{"repository": "example-labs/torch-riscv", "oncalls": []}],
        "L2": [{"repository": "acme-ai/torch-npu", "oncalls": ["npu-oncall-a", "npu-oncall-b"]}],
        "L3": [{"repository": "contoso/xpu-backend", "oncalls": ["xpu-oncall"], "device": "xpu"}],
        "L4": [{"repository": "initech/rocm-ci", "oncalls": ["rocm-oncall"]}],
    }


def test_allowlist_empty(client, db):
    assert client.get(URL).json() == {"L1": [], "L2": [], "L3": [], "L4": []}


def test_allowlist_omits_disabled_entries(client, policy_world):
    repositories = [item["repository"] for items in client.get(URL).json().values() for item in items]

    assert policy_world.disabled.repository not in repositories


def test_matching_etag_gets_304(client, policy_world):
    first = client.get(URL)
    etag = first["ETag"]

    again = client.get(URL, headers={"If-None-Match": etag})

    assert etag.startswith('"')
    assert etag.endswith('"')
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag


@pytest.mark.parametrize("header", ["W/{etag}", '"other", {etag}', "*"])
def test_if_none_match_forms_get_304(client, policy_world, header):
    etag = client.get(URL)["ETag"]

    response = client.get(URL, headers={"If-None-Match": header.format(etag=etag)})

    assert response.status_code == 304


def test_stale_etag_gets_body(client, policy_world):
    response = client.get(URL, headers={"If-None-Match": '"0123456789abcdef"'})

    assert response.status_code == 200
    assert response.json()["L4"][0]["repository"] == "initech/rocm-ci"


def test_change_gives_new_etag(client, policy_world, monkeypatch):
    monkeypatch.setattr(policy, "POLICY_CACHE_SECONDS", 3600.0)
    before = client.get(URL)["ETag"]

    AllowlistEntry.objects.filter(pk=policy_world.l2.pk).update(level="L4")
    cached = client.get(URL)
    policy_world.l1.enabled = False
    policy_world.l1.save()
    changed = client.get(URL, headers={"If-None-Match": before})

    assert cached["ETag"] == before, "a bulk update is served from the cache until it expires"
    assert changed.status_code == 200
    assert changed["ETag"] != before
    assert changed.json()["L1"] == []
    assert [item["repository"] for item in changed.json()["L4"]] == ["acme-ai/torch-npu", "initech/rocm-ci"]


def test_cache_headers(client, policy_world):
    response = client.get(URL)

    assert response["Cache-Control"] == "public, max-age=60"


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_other_methods_get_405(client, policy_world, method):
    response = getattr(client, method)(URL)

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["error"] == f"method {method.upper()} is not allowed; use GET"


def test_head_gets_same_etag(client, policy_world):
    response = client.head(URL)

    assert response.status_code == 200
    assert response["ETag"] == client.get(URL)["ETag"]
