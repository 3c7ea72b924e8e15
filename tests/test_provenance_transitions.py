"""Per-job transitions under enforced provenance: replays, backwards moves, races and failed writes."""

import json
import threading

import pytest
from django.test import Client
from redis import Redis

from oot_ingest import counters, policy, provenance
from oot_ingest.counters import redis_client
from oot_ingest.models import AllowlistEntry, RateLimit
from oot_ingest.payload import Callback, build_record, decode_body
from tests.conftest import callback_body, post_callback, stored_item
from tests.services import free_port

REPO = "acme-ai/torch-npu"
DELIVERY = "11111111-2222-3333-4444-555555555555"
KEY = f"{REPO}/{DELIVERY}/npu-ci/test-float32/98765432100"


def set_mode(mode: str) -> None:
    AllowlistEntry.objects.filter(repository__iexact=REPO).update(provenance=mode)
    policy.clear_policy_cache()


def mint() -> str:
    token, _expires_at = provenance.mint_token(delivery_id=DELIVERY, repository=REPO, pr_number=4242, head_sha="a" * 40)
    return token


def signed_body(status: str, token: str, **overrides) -> dict:
    body = callback_body(status, **overrides)
    body["untrusted"]["callback_payload"]["callback_token"] = token
    return body


def parsed(body: dict) -> Callback:
    return build_record(decode_body(json.dumps(body).encode()))


def state_of(body: dict) -> str | None:
    return provenance.job_state(parsed(body))


@pytest.fixture
def enforced(stores, demo_allowlist):
    set_mode("enforce")
    return mint()


def test_dispatched_then_in_progress_then_completed(client, enforced):
    body = signed_body("in_progress", enforced)
    assert state_of(body) is None, "a job without a stored state is dispatched"

    started = post_callback(client, body)
    assert started.status_code == 200
    assert state_of(body) == "in_progress"

    finished = post_callback(client, signed_body("completed", enforced))
    assert finished.status_code == 200
    assert state_of(body) == "completed"


def test_completed_without_in_progress_is_allowed(client, enforced):
    response = post_callback(client, signed_body("completed", enforced))

    assert response.status_code == 200
    assert stored_item(KEY)["status"] == "completed"


def test_replayed_in_progress_is_409(client, enforced):
    assert post_callback(client, signed_body("in_progress", enforced)).status_code == 200

    replay = post_callback(client, signed_body("in_progress", enforced))

    assert replay.status_code == 409
    assert replay.json()["error"] == (
        "job test-float32 (check_run_id 98765432100) is already in_progress; this in_progress is a replay"
    )
    assert stored_item(KEY)["revision"] == 1


def test_replayed_completed_token_is_403(client, enforced):
    assert post_callback(client, signed_body("completed", enforced)).status_code == 200

    replay = post_callback(client, signed_body("completed", enforced, conclusion="failure"))

    assert replay.status_code == 403
    assert replay.json()["error"] == (
        "callback_token was already used: job test-float32 (check_run_id 98765432100) is already completed"
    )
    item = stored_item(KEY)
    assert item["conclusion"] == "success"
    assert item["revision"] == 1


def test_in_progress_after_completed_is_409(client, enforced):
    assert post_callback(client, signed_body("completed", enforced)).status_code == 200

    late = post_callback(client, signed_body("in_progress", enforced))

    assert late.status_code == 409
    assert "in_progress would go backwards" in late.json()["error"]
    assert stored_item(KEY)["revision"] == 1


def test_one_token_serves_every_job_of_dispatch(client, enforced):
    for check_run_id, job_name in ((1001, "test-float32"), (1002, "test-float16"), (1003, "build")):
        started = post_callback(
            client, signed_body("in_progress", enforced, check_run_id=check_run_id, job_name=job_name)
        )
        finished = post_callback(
            client, signed_body("completed", enforced, check_run_id=check_run_id, job_name=job_name)
        )
        assert started.status_code == 200, job_name
        assert finished.status_code == 200, job_name


def test_transition_conflict_comes_after_rate_limit(client, enforced):
    RateLimit.objects.create(repository=REPO, per_minute=1)
    policy.clear_policy_cache()
    assert post_callback(client, signed_body("in_progress", enforced)).status_code == 200

    replay = post_callback(client, signed_body("in_progress", enforced))

    assert replay.status_code == 429, "the rate limit outranks a replayed transition"


def test_off_mode_keeps_idempotent_rules(client, stores, demo_allowlist):
    set_mode("off")
    token = mint()

    first = post_callback(client, signed_body("completed", token))
    duplicate = post_callback(client, signed_body("completed", token))
    late = post_callback(client, signed_body("in_progress", token))

    assert first.status_code == 200
    assert duplicate.status_code == 200
    assert duplicate.json()["status"] == "completed"
    assert late.status_code == 200
    assert late.json()["status"] == "completed"
    assert state_of(signed_body("completed", token)) is None, "off mode stores no job state"


def test_failed_write_releases_reservation(client, enforced, settings):
    endpoint = settings.DYNAMODB_ENDPOINT
    settings.DYNAMODB_ENDPOINT = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    failed = post_callback(client, signed_body("completed", enforced))

    assert failed.status_code == 503
    assert failed.headers["Retry-After"]
    assert state_of(signed_body("completed", enforced)) is None
    claim_keys = redis_client().keys(provenance.CLAIM_KEY_PREFIX + "*")
    assert claim_keys == [], "the reservation must be released after a failed write"

    settings.DYNAMODB_ENDPOINT = endpoint
    retry = post_callback(client, signed_body("completed", enforced))

    assert retry.status_code == 200
    assert stored_item(KEY)["status"] == "completed"


def test_reservation_in_flight_is_409(client, enforced):
    body = signed_body("completed", enforced)
    check = provenance.check_callback(parsed(body), provenance.MODE_ENFORCE)
    provenance.reserve_transition(check)

    response = post_callback(client, body)

    assert response.status_code == 409
    assert "is being stored; retry" in response.json()["error"]

    provenance.finish_transition(check, written=False)
    assert post_callback(client, body).status_code == 200


def test_redis_down_rejects_when_enforced(client, enforced, monkeypatch):
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    monkeypatch.setattr(counters, "_redis", unreachable)

    response = post_callback(client, signed_body("in_progress", enforced))

    assert response.status_code == 503
    assert "Redis" in response.json()["error"]
    assert stored_item(KEY) is None


def _post_concurrently(bodies: list[dict]) -> list[int]:
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = [0] * len(bodies)

    def send(index: int) -> None:
        client = Client()
        barrier.wait()
        statuses[index] = post_callback(client, bodies[index]).status_code

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_completed_pass_once(stores, demo_allowlist):
    set_mode("enforce")
    token = mint()

    statuses = _post_concurrently([signed_body("completed", token) for _ in range(8)])

    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 403, 409}, statuses
    item = stored_item(KEY)
    assert item["revision"] == 1, "exactly one write may reach DynamoDB"


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_in_progress_pass_once(stores, demo_allowlist):
    set_mode("enforce")
    token = mint()

    statuses = _post_concurrently([signed_body("in_progress", token) for _ in range(8)])

    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 409}, statuses
    assert stored_item(KEY)["revision"] == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_jobs_of_one_dispatch_all_pass(stores, demo_allowlist):
    set_mode("enforce")
    token = mint()
    bodies = [
        signed_body("completed", token, check_run_id=2000 + index, job_name=f"shard-{index}") for index in range(8)
    ]

    statuses = _post_concurrently(bodies)

    assert statuses == [200] * 8
