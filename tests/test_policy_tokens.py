"""Relay tokens at POST /api/oot/results: OOT_RELAY_TOKEN, admin tokens, revocation and last use."""

import hashlib
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from oot_ingest import counters, dynamo, policy
from oot_ingest.models import PolicyChange, RelayToken
from tests.conftest import TOKEN, callback_body, post_callback


@pytest.fixture(autouse=True)
def callback_stores(db):
    dynamo.ensure_table()
    counters.redis_client().flushdb()
    policy.clear_policy_cache()
    yield
    policy.clear_policy_cache()


def body_for(world) -> dict:
    return callback_body(repo=world.l2.repository, delivery_id=str(uuid.uuid4()))


def test_environment_token_accepted(client, policy_world):
    assert post_callback(client, body_for(policy_world), token=TOKEN).status_code == 200


def test_both_header_names_accepted(client, policy_world):
    response = client.post(
        "/api/oot/results",
        data=body_for(policy_world),
        content_type="application/json",
        headers={"x-hud-internal-bot": TOKEN},
    )
    assert response.status_code == 200


@pytest.mark.parametrize("token", [None, "", "wrong-token", TOKEN + "x", "tëst-relay-token"])
def test_wrong_or_missing_token_gets_401(client, policy_world, token):
    response = post_callback(client, body_for(policy_world), token=token)

    assert response.status_code == 401
    assert "relay token" in response.json()["error"]


def test_admin_token_accepted_and_stored_as_digest(client, policy_world):
    token, plain = RelayToken.issue("relay-staging")

    response = post_callback(client, body_for(policy_world), token=plain)

    assert response.status_code == 200
    assert token.digest == hashlib.sha256(plain.encode()).hexdigest()
    assert plain not in {value for value in RelayToken.objects.values_list("name", "digest").get()}


def test_revoked_token_gets_401(client, policy_world):
    token, plain = RelayToken.issue("relay-old")
    assert post_callback(client, body_for(policy_world), token=plain).status_code == 200

    token.revoke()
    response = post_callback(client, body_for(policy_world), token=plain)

    assert response.status_code == 401
    assert post_callback(client, body_for(policy_world), token=TOKEN).status_code == 200


def test_admin_token_alone_is_enough(client, policy_world, settings):
    settings.OOT_RELAY_TOKEN = ""
    assert post_callback(client, body_for(policy_world), token="anything").status_code == 503

    _token, plain = RelayToken.issue("relay-only")

    assert post_callback(client, body_for(policy_world), token=plain).status_code == 200
    assert post_callback(client, body_for(policy_world), token="anything").status_code == 401


def test_no_active_token_gives_503(client, policy_world, settings):
    settings.OOT_RELAY_TOKEN = ""
    token, plain = RelayToken.issue("relay-only")
    token.revoke()

    response = post_callback(client, body_for(policy_world), token=plain)

    assert response.status_code == 503
    assert "no relay token is configured" in response.json()["error"]


def test_last_used_written_at_most_once_a_minute(client, policy_world, monkeypatch):
    token, plain = RelayToken.issue("relay-prod")
    assert token.last_used_at is None

    post_callback(client, body_for(policy_world), token=plain)
    token.refresh_from_db()
    first_use = token.last_used_at
    assert first_use is not None

    # A fresh in-process memo stands for another server process: the
    # conditional UPDATE still keeps the first time within the minute.
    monkeypatch.setattr(policy, "_last_used_written", {})
    post_callback(client, body_for(policy_world), token=plain)
    token.refresh_from_db()
    assert token.last_used_at == first_use

    two_minutes_ago = timezone.now() - timedelta(minutes=2)
    RelayToken.objects.filter(pk=token.pk).update(last_used_at=two_minutes_ago)
    monkeypatch.setattr(policy, "_last_used_written", {})
    post_callback(client, body_for(policy_world), token=plain)
    token.refresh_from_db()
    assert token.last_used_at > two_minutes_ago


def test_command_creates_lists_and_revokes(client, policy_world):
    output, errors = StringIO(), StringIO()
    call_command("relay_token", "create", "relay-cli", stdout=output, stderr=errors)
    plain = output.getvalue().strip()

    assert "not shown again" in errors.getvalue()
    assert RelayToken.objects.get(name="relay-cli").digest == hashlib.sha256(plain.encode()).hexdigest()
    assert post_callback(client, body_for(policy_world), token=plain).status_code == 200

    listing = StringIO()
    call_command("relay_token", "list", stdout=listing)
    assert "relay-cli\tactive" in listing.getvalue()
    assert plain not in listing.getvalue()

    call_command("relay_token", "revoke", "relay-cli", stdout=StringIO())
    assert post_callback(client, body_for(policy_world), token=plain).status_code == 401
    actions = list(PolicyChange.objects.filter(target="relay-cli").values_list("action", "source"))
    assert sorted(actions) == [("added", "command"), ("revoked", "command")]


def test_command_errors(db):
    call_command("relay_token", "create", "relay-cli", stdout=StringIO(), stderr=StringIO())

    with pytest.raises(CommandError, match="already exists"):
        call_command("relay_token", "create", "relay-cli", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="no relay token named 'missing'"):
        call_command("relay_token", "revoke", "missing")
    call_command("relay_token", "revoke", "relay-cli", stdout=StringIO())
    with pytest.raises(CommandError, match="already revoked"):
        call_command("relay_token", "revoke", "relay-cli")
