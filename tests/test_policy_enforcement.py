"""Admission and rate limiting at POST /api/oot/results, keyed by trusted.verified_repo."""

import logging
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import django_ratelimit.core
import pytest
from django.core.cache import caches
from django.test import Client, RequestFactory

from oot_ingest import counters, dynamo, policy
from oot_ingest.models import RateLimit, RejectedRequest
from tests.conftest import callback_body, post_callback, stored_item
from tests.services import free_port

pytestmark = pytest.mark.usefixtures("callback_stores")

WINDOW_SECONDS = 60
# A fixed epoch time on a minute boundary, far from any real clock.
BASE_TIME = 1_900_000_020


class PinnedClock:
    """A stand-in for the `time` module inside django-ratelimit, so the fixed window cannot roll over mid-test."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def window_start(repository: str) -> int:
    """Return the first second of a django-ratelimit window for `repository` (windows are offset per key)."""
    offset = zlib.crc32(repository.lower().encode("utf-8")) % WINDOW_SECONDS
    return BASE_TIME - BASE_TIME % WINDOW_SECONDS + offset + 1


@pytest.fixture
def callback_stores(db):
    """The records table and an empty Redis, without the slow table re-creation of `stores`.

    Tests stay apart in DynamoDB because each one sends its own delivery id.
    """
    dynamo.ensure_table()
    counters.redis_client().flushdb()
    policy.clear_policy_cache()
    yield
    policy.clear_policy_cache()


@pytest.fixture
def delivery_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def clock(monkeypatch):
    pinned = PinnedClock(BASE_TIME)
    monkeypatch.setattr(django_ratelimit.core, "time", pinned)
    return pinned


@pytest.fixture
def default_limit(settings):
    settings.OOT_DEFAULT_RATE_LIMIT = 100
    return 100


def job_body(repo: str, index: int, delivery_id: str) -> dict:
    return callback_body(
        repo=repo, delivery_id=delivery_id, job_name=f"test-shard-{index}", check_run_id=str(5_000_000 + index)
    )


def job_key(repo: str, index: int, delivery_id: str) -> str:
    return f"{repo}/{delivery_id}/npu-ci/test-shard-{index}/{5_000_000 + index}"


# Admission


@pytest.mark.parametrize("backend", ["l2", "l3", "l4"])
def test_reporting_levels_are_accepted(client, policy_world, backend, delivery_id):
    repo = getattr(policy_world, backend).repository

    response = post_callback(client, callback_body(repo=repo, delivery_id=delivery_id))

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "in_progress"


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        ("unknown", "repository nobody/unlisted-backend is not on the allowlist"),
        ("disabled", "repository fabrikam/tpu-bridge is disabled on the allowlist"),
        ("l1", "repository example-labs/torch-riscv is at level L1; results are accepted from L2 and above"),
    ],
)
def test_rejected_repository_gets_403_and_log_entry(client, policy_world, backend, reason, delivery_id):
    target = getattr(policy_world, backend)
    repo = target if isinstance(target, str) else target.repository
    body = callback_body(repo=repo, delivery_id=delivery_id)

    response = post_callback(client, body)

    assert response.status_code == 403
    assert response.json() == {"ok": False, "error": reason}
    logged = RejectedRequest.objects.get()
    assert (logged.repository, logged.delivery_id, logged.status_code, logged.reason) == (
        repo,
        delivery_id,
        403,
        reason,
    )
    assert stored_item(f"{repo}/{delivery_id}/npu-ci/test-float32/98765432100") is None


def test_admission_ignores_case_of_verified_repo(client, policy_world, delivery_id):
    response = post_callback(client, callback_body(repo="ACME-AI/Torch-NPU", delivery_id=delivery_id))

    assert response.status_code == 200


def test_untrusted_repository_fields_ignored(client, policy_world, delivery_id):
    body = callback_body(repo=policy_world.unknown, delivery_id=delivery_id)
    body["untrusted"]["callback_payload"]["payload"]["repository"] = {"full_name": policy_world.l2.repository}
    body["untrusted"]["callback_payload"]["workflow"]["url"] = "https://github.com/acme-ai/torch-npu/actions/runs/1"

    response = post_callback(client, body)

    assert response.status_code == 403


# Rate limits


def send_concurrently(repo: str, count: int, delivery_id: str, monkeypatch) -> list[int]:
    """Post `count` jobs of `repo` from 8 threads at once; return their statuses in job order."""
    # Keep the policy snapshot loaded here, so worker threads never query the test database.
    monkeypatch.setattr(policy, "POLICY_CACHE_SECONDS", 3600.0)
    policy.current_policy()

    def send(index: int) -> int:
        return post_callback(Client(), job_body(repo, index, delivery_id)).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(send, range(count)))


def test_forty_job_matrix_within_limit(policy_world, clock, default_limit, monkeypatch, delivery_id):
    repo = policy_world.l2.repository
    clock.now = window_start(repo)
    statuses = send_concurrently(repo, 40, delivery_id, monkeypatch)

    assert statuses == [200] * 40
    assert all(stored_item(job_key(repo, index, delivery_id)) for index in range(40))
    assert not RejectedRequest.objects.exists()


def test_callback_101_in_a_minute_gets_429(client, policy_world, clock, default_limit, delivery_id):
    repo = policy_world.l2.repository
    clock.now = window_start(repo)

    statuses = [post_callback(client, job_body(repo, index, delivery_id)).status_code for index in range(default_limit)]
    clock.advance(WINDOW_SECONDS - 2)
    over = post_callback(client, job_body(repo, default_limit, delivery_id))

    assert statuses == [200] * default_limit
    assert over.status_code == 429
    assert over.json() == {
        "ok": False,
        "error": "repository acme-ai/torch-npu is over its rate limit of 100 callbacks a minute; retry after 1 s",
    }
    assert over["Retry-After"] == "1"
    assert stored_item(job_key(repo, default_limit, delivery_id)) is None
    logged = RejectedRequest.objects.get()
    assert (logged.repository, logged.status_code) == (repo, 429)


def test_429_retry_after_counts_down_to_window_end(client, policy_world, clock, settings, delivery_id):
    settings.OOT_DEFAULT_RATE_LIMIT = 2
    repo = policy_world.l2.repository
    clock.now = window_start(repo)

    for index in range(2):
        assert post_callback(client, job_body(repo, index, delivery_id)).status_code == 200
    early = post_callback(client, job_body(repo, 2, delivery_id))
    clock.advance(30)
    later = post_callback(client, job_body(repo, 3, delivery_id))

    assert early["Retry-After"] == str(WINDOW_SECONDS - 1)
    assert later["Retry-After"] == str(WINDOW_SECONDS - 31)


def test_limit_resets_in_next_window(client, policy_world, clock, settings, delivery_id):
    settings.OOT_DEFAULT_RATE_LIMIT = 2
    repo = policy_world.l2.repository
    clock.now = window_start(repo)
    for index in range(3):
        post_callback(client, job_body(repo, index, delivery_id))

    clock.advance(WINDOW_SECONDS)
    response = post_callback(client, job_body(repo, 3, delivery_id))

    assert response.status_code == 200


def test_other_repository_budget_untouched(client, policy_world, clock, settings, delivery_id):
    settings.OOT_DEFAULT_RATE_LIMIT = 3
    limited, other = policy_world.l2.repository, policy_world.l4.repository
    clock.now = window_start(limited)

    for index in range(3):
        assert post_callback(client, job_body(limited, index, delivery_id)).status_code == 200
    assert post_callback(client, job_body(limited, 3, delivery_id)).status_code == 429
    other_statuses = [post_callback(client, job_body(other, index, delivery_id)).status_code for index in range(3)]

    assert other_statuses == [200, 200, 200]
    assert post_callback(client, job_body(other, 3, delivery_id)).status_code == 429


def test_case_variants_share_one_budget(client, policy_world, clock, settings, delivery_id):
    settings.OOT_DEFAULT_RATE_LIMIT = 2
    clock.now = window_start("acme-ai/torch-npu")

    assert post_callback(client, job_body("acme-ai/torch-npu", 0, delivery_id)).status_code == 200
    assert post_callback(client, job_body("ACME-AI/torch-npu", 1, delivery_id)).status_code == 200
    assert post_callback(client, job_body("Acme-Ai/Torch-Npu", 2, delivery_id)).status_code == 429


def test_repository_limit_overrides_default(client, policy_world, clock, default_limit, delivery_id):
    repo = policy_world.l3.repository
    RateLimit.objects.create(repository=repo.upper(), per_minute=3)
    clock.now = window_start(repo)

    statuses = [post_callback(client, job_body(repo, index, delivery_id)).status_code for index in range(4)]

    assert statuses == [200, 200, 200, 429]
    assert RejectedRequest.objects.get().reason.startswith(f"repository {repo} is over its rate limit of 3 callbacks")


def test_rejected_callbacks_use_no_budget(client, policy_world, clock, settings, delivery_id):
    settings.OOT_DEFAULT_RATE_LIMIT = 1
    repo = policy_world.l2.repository
    clock.now = window_start(repo)
    invalid = job_body(repo, 0, delivery_id)
    del invalid["untrusted"]["callback_payload"]["workflow"]["job_name"]

    assert post_callback(client, invalid).status_code == 400
    assert post_callback(client, job_body(repo, 1, delivery_id), token="wrong-token").status_code == 401
    assert post_callback(client, job_body(repo, 2, delivery_id)).status_code == 200


@pytest.mark.parametrize("backend", ["hud.cache.OneTripIncrRedisCache", "django.core.cache.backends.redis.RedisCache"])
def test_redis_down_fails_open_with_warning_and_counter(
    client, policy_world, settings, caplog, monkeypatch, delivery_id, backend
):
    closed_port = free_port()
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": backend,
            "LOCATION": f"redis://127.0.0.1:{closed_port}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        },
    }
    settings.OOT_DEFAULT_RATE_LIMIT = 1
    unchecked_before = policy.rate_limit_unavailable_count()
    shared_before = counters.read_all().get("rate_limit_unavailable", 0)
    repo = policy_world.l2.repository
    # Forget warnings that earlier tests in this process logged.
    monkeypatch.setattr(policy, "_unavailable_warned_at", -1e9)

    with caplog.at_level(logging.WARNING, logger="oot_ingest.policy"):
        statuses = [post_callback(client, job_body(repo, index, delivery_id)).status_code for index in range(3)]

    assert statuses == [200, 200, 200], "an unreachable rate-limit cache must admit callbacks, never fail them"
    assert all(stored_item(job_key(repo, index, delivery_id)) for index in range(3))
    assert policy.rate_limit_unavailable_count() == unchecked_before + 3
    assert counters.read_all().get("rate_limit_unavailable", 0) == shared_before + 3
    warnings = [record for record in caplog.records if "rate limit not checked" in record.getMessage()]
    assert len(warnings) == 1, "repeated failures must log one warning a minute, not one per callback"
    assert f"repo={repo}" in warnings[0].getMessage()


def test_disabled_rate_limit_logged(client, policy_world, settings, caplog, monkeypatch, delivery_id):
    settings.RATELIMIT_ENABLE = False
    settings.OOT_DEFAULT_RATE_LIMIT = 1
    monkeypatch.setattr(policy, "_disabled_logged", False)
    repo = policy_world.l2.repository

    with caplog.at_level(logging.ERROR, logger="oot_ingest.policy"):
        statuses = [post_callback(client, job_body(repo, index, delivery_id)).status_code for index in range(2)]

    assert statuses == [200, 200]
    errors = [record for record in caplog.records if "rate limit disabled" in record.getMessage()]
    assert len(errors) == 1


def window_counter(repo: str, limit: int) -> int:
    """Read the repository's counter for the current window through django-ratelimit's own get_usage."""
    usage = django_ratelimit.core.get_usage(
        RequestFactory().post("/api/oot/results"),
        group=policy.RATE_LIMIT_GROUP,
        key=lambda _group, _request: repo.lower(),
        rate=(limit, WINDOW_SECONDS),
        increment=False,
    )
    return usage["count"]


def rate_limit_keys() -> list[bytes]:
    return counters.redis_client().keys("*rl:*")


def test_window_counter_readable_by_get_usage(client, policy_world, clock, settings, delivery_id):
    settings.OOT_DEFAULT_RATE_LIMIT = 5
    repo = policy_world.l2.repository
    clock.now = window_start(repo)

    for index in range(3):
        assert post_callback(client, job_body(repo, index, delivery_id)).status_code == 200

    assert window_counter(repo, 5) == 3
    assert len(rate_limit_keys()) == 1


def test_window_counter_expires_after_window(client, policy_world, clock, settings, delivery_id):
    settings.OOT_DEFAULT_RATE_LIMIT = 2
    repo = policy_world.l2.repository
    clock.now = window_start(repo)
    redis = counters.redis_client()

    assert post_callback(client, job_body(repo, 0, delivery_id)).status_code == 200
    (key,) = rate_limit_keys()
    first_ttl = redis.ttl(key)
    assert WINDOW_SECONDS < first_ttl <= WINDOW_SECONDS + django_ratelimit.core.EXPIRATION_FUDGE

    # Shorten the counter's life: a later count must keep this expiry, not start a new one.
    redis.pexpire(key, 300)
    statuses = [post_callback(client, job_body(repo, index, delivery_id)).status_code for index in (1, 2)]
    assert statuses == [200, 429]
    assert 0 < redis.pttl(key) <= 300

    time.sleep(0.5)
    assert redis.exists(key) == 0
    assert post_callback(client, job_body(repo, 3, delivery_id)).status_code == 200
    assert window_counter(repo, 2) == 1


def test_concurrent_callbacks_admit_exactly_limit(policy_world, clock, settings, monkeypatch, delivery_id):
    settings.OOT_DEFAULT_RATE_LIMIT = 10
    repo = policy_world.l2.repository
    clock.now = window_start(repo)
    statuses = send_concurrently(repo, 24, delivery_id, monkeypatch)

    assert statuses.count(200) == 10
    assert statuses.count(429) == 14
    assert window_counter(repo, 10) == 24


def test_locmem_rate_limit_cache_counts_via_get_usage(client, policy_world, clock, settings, delivery_id):
    settings.RATELIMIT_USE_CACHE = "local"
    settings.OOT_DEFAULT_RATE_LIMIT = 2
    caches["local"].clear()
    repo = policy_world.l2.repository
    clock.now = window_start(repo)

    statuses = [post_callback(client, job_body(repo, index, delivery_id)).status_code for index in range(3)]
    caches["local"].clear()

    assert statuses == [200, 200, 429]
    assert rate_limit_keys() == [], "a LocMemCache must count in process memory, not in Redis"
