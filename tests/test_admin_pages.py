"""The maintainers' admin: access, pages, validation, change history, import/export and relay tokens."""

import hashlib
import re

import pytest
import yaml
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from oot_ingest import policy
from oot_ingest.models import AllowlistEntry, PolicyChange, RateLimit, RejectedRequest, RelayToken

ADMIN = "/admin/oot_ingest"
IMPORT_URL = f"{ADMIN}/allowlistentry/import/"
EXPORT_URL = f"{ADMIN}/allowlistentry/export/"


@pytest.fixture(autouse=True)
def fresh_policy():
    policy.clear_policy_cache()
    yield
    policy.clear_policy_cache()


@pytest.fixture
def staff_client(client, policy_world):
    client.force_login(policy_world.staff)
    return client


def entry_form(entry: AllowlistEntry | None = None, **changes) -> dict:
    """Return the admin form fields of an allowlist entry, with `changes` applied."""
    data = {
        "repository": "",
        "level": "L2",
        "device": "",
        "oncalls": "",
        "enabled": "on",
        "notes": "",
        "not_reporting_hours": "",
        "provenance": "off",
    }
    if entry is not None:
        data.update(
            repository=entry.repository,
            level=entry.level,
            device=entry.device,
            oncalls=entry.oncalls,
            notes=entry.notes,
            provenance=entry.provenance,
        )
    data.update(changes)
    return {name: value for name, value in data.items() if value is not None}


def admin_urls(world) -> list[str]:
    token, _plain = RelayToken.issue("relay-prod")
    limit = RateLimit.objects.create(repository=world.l2.repository, per_minute=250)
    return [
        "/admin/",
        f"{ADMIN}/allowlistentry/",
        f"{ADMIN}/allowlistentry/add/",
        f"{ADMIN}/allowlistentry/{world.l3.pk}/change/",
        IMPORT_URL,
        EXPORT_URL,
        f"{ADMIN}/ratelimit/",
        f"{ADMIN}/ratelimit/add/",
        f"{ADMIN}/ratelimit/{limit.pk}/change/",
        f"{ADMIN}/relaytoken/",
        f"{ADMIN}/relaytoken/add/",
        f"{ADMIN}/relaytoken/{token.pk}/change/",
        f"{ADMIN}/relaytoken/{token.pk}/revoke/",
        f"{ADMIN}/rejectedrequest/",
        f"{ADMIN}/policychange/",
    ]


# Access


def test_anonymous_visitor_sent_to_login(client, policy_world):
    for url in admin_urls(policy_world):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url


def test_non_staff_user_sent_to_login(client, policy_world):
    client.force_login(policy_world.member)

    for url in admin_urls(policy_world):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url


def test_non_staff_user_cannot_import(client, policy_world):
    client.force_login(policy_world.member)

    response = client.post(IMPORT_URL, {"yaml_text": "", "apply": "Apply"})

    assert response.status_code == 302
    assert AllowlistEntry.objects.count() == 5


def test_import_export_need_permissions(client, policy_world, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password=None, is_staff=True)
    client.force_login(viewer)

    assert client.get(IMPORT_URL).status_code == 403
    assert client.get(EXPORT_URL).status_code == 403

    viewer.user_permissions.add(Permission.objects.get(codename="view_allowlistentry"))
    assert client.get(EXPORT_URL).status_code == 200
    assert client.get(IMPORT_URL).status_code == 403


def test_posts_need_csrf_token(policy_world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(policy_world.staff)

    imported = client.post(IMPORT_URL, {"yaml_text": "L2:\n  - acme/new\n", "apply": "Apply"})
    added = client.post(f"{ADMIN}/allowlistentry/add/", entry_form(repository="acme/new"))
    token = client.post(f"{ADMIN}/relaytoken/add/", {"name": "relay-csrf"})

    assert (imported.status_code, added.status_code, token.status_code) == (403, 403, 403)
    assert not AllowlistEntry.objects.filter(repository="acme/new").exists()
    assert not RelayToken.objects.exists()


# Pages render for staff


def test_staff_pages_render(staff_client, policy_world):
    for url in admin_urls(policy_world):
        response = staff_client.get(url)
        assert response.status_code == 200, url


def test_allowlist_changelist_shows_entries_and_tools(staff_client, policy_world):
    page = staff_client.get(f"{ADMIN}/allowlistentry/").content.decode()

    for entry in (policy_world.l1, policy_world.l2, policy_world.l3, policy_world.l4, policy_world.disabled):
        assert entry.repository in page
    assert 'href="/admin/oot_ingest/allowlistentry/import/"' in page
    assert 'href="/admin/oot_ingest/allowlistentry/export/"' in page


def test_allowlist_changelist_filters_and_search(staff_client, policy_world):
    level = staff_client.get(f"{ADMIN}/allowlistentry/", {"level": "L3"}).content.decode()
    search = staff_client.get(f"{ADMIN}/allowlistentry/", {"q": "rocm-oncall"}).content.decode()

    assert "contoso/xpu-backend" in level
    assert "acme-ai/torch-npu" not in level
    assert "initech/rocm-ci" in search
    assert "contoso/xpu-backend" not in search


def test_rate_limit_changelist_states_default(staff_client, settings):
    settings.OOT_DEFAULT_RATE_LIMIT = 100

    page = staff_client.get(f"{ADMIN}/ratelimit/").content.decode()

    assert "Repositories not listed here get 100 callbacks a minute" in page


def test_rejection_log_lists_entries_read_only(staff_client, policy_world, settings):
    settings.OOT_REJECTION_RETENTION_DAYS = 30
    RejectedRequest.objects.create(
        repository="nobody/unlisted-backend", delivery_id="d-1", status_code=403, reason="not on the allowlist"
    )

    page = staff_client.get(f"{ADMIN}/rejectedrequest/").content.decode()

    assert "nobody/unlisted-backend" in page
    assert "not on the allowlist" in page
    assert "kept 30 days" in page
    assert staff_client.get(f"{ADMIN}/rejectedrequest/add/").status_code == 403


# Validation


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"repository": "acme/x", "level": "L3"}, "device", "An L3 entry needs a device"),
        ({"repository": "acme/x", "level": "L2", "device": "xpu"}, "device", "Only L3 entries have a device"),
        ({"repository": "acme"}, "repository", "Enter a GitHub repository as owner/repo"),
        ({"repository": "acme/x", "oncalls": "alice smith"}, "oncalls", "Invalid oncall handle 'alice smith'"),
        ({"repository": "ACME-AI/Torch-NPU"}, None, "This repository is already on the allowlist"),
    ],
)
def test_entry_form_rejects_invalid_input(staff_client, changes, field, message):
    response = staff_client.post(f"{ADMIN}/allowlistentry/add/", entry_form(**changes))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field or "__all__"])
    assert AllowlistEntry.objects.count() == 5


def test_entry_form_normalises_oncalls(staff_client):
    response = staff_client.post(
        f"{ADMIN}/allowlistentry/add/", entry_form(repository="acme/x", oncalls=" alice ,bob,, ")
    )

    assert response.status_code == 302
    assert AllowlistEntry.objects.get(repository="acme/x").oncalls == "alice, bob"


def test_rate_limit_form_rejects_zero_and_duplicates(staff_client, policy_world):
    RateLimit.objects.create(repository="acme-ai/torch-npu", per_minute=250)

    zero = staff_client.post(f"{ADMIN}/ratelimit/add/", {"repository": "acme/x", "per_minute": "0"})
    duplicate = staff_client.post(f"{ADMIN}/ratelimit/add/", {"repository": "ACME-AI/torch-npu", "per_minute": "5"})

    assert "per_minute" in zero.context["adminform"].form.errors
    assert "already has a rate limit" in " ".join(duplicate.context["adminform"].form.errors["__all__"])
    assert RateLimit.objects.count() == 1


# Change history


def test_level_change_recorded_with_user(staff_client, policy_world):
    entry = policy_world.l2
    url = f"{ADMIN}/allowlistentry/{entry.pk}/change/"

    response = staff_client.post(url, entry_form(entry, level="L4"))

    assert response.status_code == 302
    change = PolicyChange.objects.get(target=entry.repository)
    assert (change.action, change.field, change.old_value, change.new_value) == ("changed", "level", "L2", "L4")
    assert (change.user, change.actor, change.source) == (policy_world.staff, "maintainer", "admin")
    assert LogEntry.objects.filter(object_id=str(entry.pk), user=policy_world.staff).exists()
    assert policy.allowlist_entry(entry.repository).level == "L4", "the change must apply without waiting"


def test_level_change_to_l1_blocks_callbacks(staff_client, policy_world):
    entry = policy_world.l4
    assert policy.admission_error(entry.repository) is None

    staff_client.post(f"{ADMIN}/allowlistentry/{entry.pk}/change/", entry_form(entry, level="L1"))

    assert "level L1" in policy.admission_error(entry.repository)


def test_rate_limit_changes_recorded(staff_client, policy_world):
    repo = policy_world.l2.repository
    staff_client.post(f"{ADMIN}/ratelimit/add/", {"repository": repo, "per_minute": "100"})
    limit = RateLimit.objects.get()

    staff_client.post(f"{ADMIN}/ratelimit/{limit.pk}/change/", {"repository": repo, "per_minute": "250"})

    changes = list(PolicyChange.objects.filter(kind="rate_limit").order_by("id"))
    assert [(change.action, change.field) for change in changes] == [("added", ""), ("changed", "per_minute")]
    assert (changes[1].old_value, changes[1].new_value, changes[1].actor) == ("100", "250", "maintainer")
    assert policy.rate_limit_for(repo) == 250


def test_delete_recorded(staff_client, policy_world):
    entry = policy_world.l1

    response = staff_client.post(f"{ADMIN}/allowlistentry/{entry.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    removed = PolicyChange.objects.get(action="removed")
    assert removed.target == entry.repository
    assert "level=L1" in removed.old_value


def test_bulk_delete_recorded_and_applied(staff_client, policy_world):
    selected = [policy_world.l2.pk, policy_world.l4.pk]
    policy.current_policy()

    staff_client.post(
        f"{ADMIN}/allowlistentry/",
        {"action": "delete_selected", "_selected_action": selected, "post": "yes"},
    )

    assert set(PolicyChange.objects.filter(action="removed").values_list("target", flat=True)) == {
        "acme-ai/torch-npu",
        "initech/rocm-ci",
    }
    assert policy.admission_error("initech/rocm-ci") == "repository initech/rocm-ci is not on the allowlist"


def test_disable_action_recorded(staff_client, policy_world):
    staff_client.post(
        f"{ADMIN}/allowlistentry/",
        {"action": "disable_selected", "_selected_action": [policy_world.l3.pk, policy_world.disabled.pk]},
    )

    policy_world.l3.refresh_from_db()
    assert policy_world.l3.enabled is False
    change = PolicyChange.objects.get()
    assert (change.target, change.field, change.old_value, change.new_value) == (
        "contoso/xpu-backend",
        "enabled",
        "True",
        "False",
    )


def test_history_page_lists_changes(staff_client, policy_world):
    entry = policy_world.l2
    staff_client.post(f"{ADMIN}/allowlistentry/{entry.pk}/change/", entry_form(entry, level="L3", device="npu"))

    page = staff_client.get(f"{ADMIN}/policychange/", {"field": "level"}).content.decode()

    assert "acme-ai/torch-npu" in page
    assert "maintainer" in page
    assert staff_client.get(f"{ADMIN}/policychange/add/").status_code == 403


# Import and export


def test_import_preview_changes_nothing(staff_client, policy_world):
    text = "L2:\n  - acme-ai/torch-npu\n  - acme/new\n"

    response = staff_client.post(IMPORT_URL, {"yaml_text": text, "preview": "Preview"})

    page = response.content.decode()
    assert response.status_code == 200
    assert "would import (dry run): 1 created, 1 updated, 4 removed" in page
    assert "acme/new" in page
    assert response.context["form"].initial["yaml_text"] == text
    assert AllowlistEntry.objects.count() == 5
    assert not PolicyChange.objects.exists()


def test_import_apply_pasted_text(staff_client, policy_world):
    text = "L2:\n  - acme/new\nL4:\n  - acme-ai/torch-npu: [alice]\n"

    response = staff_client.post(IMPORT_URL, {"yaml_text": text, "apply": "Apply"}, follow=True)

    assert "Allowlist imported: 1 created, 1 updated, 4 removed." in response.content.decode()
    assert set(AllowlistEntry.objects.values_list("repository", "level")) == {
        ("acme/new", "L2"),
        ("acme-ai/torch-npu", "L4"),
    }
    level_change = PolicyChange.objects.get(field="level")
    assert (level_change.user, level_change.source) == (policy_world.staff, "admin import")


def test_import_apply_uploaded_file_keeping_others(staff_client, policy_world):
    upload = SimpleUploadedFile("allowlist.yml", b"L3:\n  npu:\n    acme/new: [alice]\n")

    staff_client.post(IMPORT_URL, {"yaml_file": upload, "keep": "on", "apply": "Apply"})

    assert AllowlistEntry.objects.count() == 6
    created = AllowlistEntry.objects.get(repository="acme/new")
    assert (created.level, created.device, created.oncalls) == ("L3", "npu", "alice")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"yaml_text": "L5:\n  - acme/x\n"}, "Invalid allowlist: unknown key &#x27;L5&#x27;"),
        ({"yaml_text": "L2:\n  - acme/x\n  - acme/x\n"}, "acme/x is listed twice: at L2[0] and at L2[1]"),
        ({"yaml_file": SimpleUploadedFile("a.yml", b"\xff\xfe")}, "The file is not UTF-8 text."),
        (
            {"yaml_file": SimpleUploadedFile("a.yml", b"L2: []\n"), "yaml_text": "L2: []\n"},
            "Choose a file or paste text, not both.",
        ),
    ],
)
def test_import_errors_shown_and_nothing_changed(staff_client, policy_world, data, message):
    response = staff_client.post(IMPORT_URL, {**data, "apply": "Apply"})

    assert response.status_code == 200
    assert message in response.content.decode()
    assert AllowlistEntry.objects.count() == 5


def test_export_downloads_yaml(staff_client, policy_world):
    response = staff_client.get(EXPORT_URL)

    assert response["Content-Disposition"] == 'attachment; filename="allowlist.yml"'
    document = yaml.safe_load(response.content)
    assert document["L3"] == {"xpu": {"contoso/xpu-backend": ["xpu-oncall"]}}
    assert "fabrikam/tpu-bridge" in document["L2"], "disabled entries are exported too"


def test_export_action_exports_selection(staff_client, policy_world):
    response = staff_client.post(
        f"{ADMIN}/allowlistentry/",
        {"action": "export_selected_as_yaml", "_selected_action": [policy_world.l4.pk]},
    )

    assert response.content.decode() == 'L4:\n  - initech/rocm-ci: "rocm-oncall"\n'


# Relay tokens


def create_token(client, name: str) -> tuple[RelayToken, str, object]:
    response = client.post(f"{ADMIN}/relaytoken/add/", {"name": name})
    match = re.search(r'<code id="relay-token">([^<]+)</code>', response.content.decode())
    assert match, "the creation page must show the token"
    return RelayToken.objects.get(name=name), match.group(1), response


def test_token_shown_once_on_creation(staff_client, policy_world):
    token, plain, response = create_token(staff_client, "relay-prod")

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert token.digest == hashlib.sha256(plain.encode()).hexdigest()
    assert policy.check_token(plain)
    for url in (f"{ADMIN}/relaytoken/", f"{ADMIN}/relaytoken/{token.pk}/change/", "/admin/"):
        assert plain not in staff_client.get(url).content.decode(), url


def test_token_never_stored_in_plain(staff_client, policy_world):
    token, plain, _response = create_token(staff_client, "relay-prod")

    stored = [str(value) for row in RelayToken.objects.values_list() for value in row]
    stored += [str(value) for row in PolicyChange.objects.values_list() for value in row]
    stored += [str(value) for row in LogEntry.objects.values_list() for value in row]
    stored += [str(session.get_decoded()) for session in Session.objects.all()]
    assert not any(plain in value for value in stored)
    change = PolicyChange.objects.get(kind="relay_token")
    assert (change.target, change.action, change.user) == ("relay-prod", "added", policy_world.staff)


def test_token_revoked_from_its_page(staff_client, policy_world):
    token, plain, _response = create_token(staff_client, "relay-prod")
    url = f"{ADMIN}/relaytoken/{token.pk}/revoke/"

    assert f'href="{url}"' in staff_client.get(f"{ADMIN}/relaytoken/{token.pk}/change/").content.decode()
    assert "Yes, revoke relay-prod" in staff_client.get(url).content.decode()
    response = staff_client.post(url)

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert not policy.check_token(plain)
    assert PolicyChange.objects.filter(target="relay-prod", action="revoked", user=policy_world.staff).exists()


def test_token_revoked_by_action(staff_client, policy_world):
    first, first_plain, _ = create_token(staff_client, "relay-a")
    _second, second_plain, _ = create_token(staff_client, "relay-b")

    staff_client.post(f"{ADMIN}/relaytoken/", {"action": "revoke_selected", "_selected_action": [first.pk]})

    assert not policy.check_token(first_plain)
    assert policy.check_token(second_plain)
    active = staff_client.get(f"{ADMIN}/relaytoken/", {"status": "active"}).content.decode()
    assert "relay-b" in active
    assert "relay-a" not in active


def test_token_cannot_be_deleted(staff_client, policy_world):
    token, _plain, _response = create_token(staff_client, "relay-prod")

    assert staff_client.get(f"{ADMIN}/relaytoken/{token.pk}/delete/").status_code == 403
