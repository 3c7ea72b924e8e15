"""`manage.py prune_rejections`: the retention period, batches and the dry run."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from oot_ingest.models import RejectedRequest


@pytest.fixture
def rejections(db):
    """Five rejections 40 days old, two 10 days old and one from now."""
    now = timezone.now()
    ages = [40] * 5 + [10] * 2 + [0]
    RejectedRequest.objects.bulk_create(
        RejectedRequest(created_at=now - timedelta(days=age), repository="acme/x", status_code=403, reason=f"{age}")
        for age in ages
    )


def ages_left() -> list[str]:
    return sorted(RejectedRequest.objects.values_list("reason", flat=True))


def test_prune_uses_retention_setting(rejections, settings):
    settings.OOT_REJECTION_RETENTION_DAYS = 30
    output = StringIO()

    call_command("prune_rejections", stdout=output)

    assert ages_left() == ["0", "10", "10"]
    assert "deleted 5 rejection log entries" in output.getvalue()


def test_prune_days_option_overrides_setting(rejections):
    call_command("prune_rejections", "--days", "5", stdout=StringIO())

    assert ages_left() == ["0"]


def test_prune_in_small_batches(rejections):
    output = StringIO()

    call_command("prune_rejections", "--days", "5", "--batch-size", "2", stdout=output)

    assert ages_left() == ["0"]
    assert "deleted 7 rejection log entries" in output.getvalue()


def test_prune_dry_run_deletes_nothing(rejections):
    output = StringIO()

    call_command("prune_rejections", "--days", "5", "--dry-run", stdout=output)

    assert "would delete 7 rejection log entries" in output.getvalue()
    assert len(ages_left()) == 8


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--days", "0"], "--days must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--sleep", "-1"], "--sleep must not be negative, got -1.0"),
    ],
)
def test_prune_rejects_invalid_options(rejections, arguments, message):
    with pytest.raises(CommandError) as error:
        call_command("prune_rejections", *arguments)

    assert str(error.value) == message
    assert len(ages_left()) == 8
