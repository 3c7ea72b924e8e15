"""System checks that report a disabled or unusable rate-limit configuration."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from oot_ingest.checks import check_rate_limit_settings


def check_ids() -> list[str]:
    return [problem.id for problem in check_rate_limit_settings()]


def test_default_settings_pass():
    assert check_ids() == []


def test_disabled_rate_limit_is_an_error(settings):
    settings.RATELIMIT_ENABLE = False

    (problem,) = check_rate_limit_settings()

    assert problem.id == "oot_ingest.E001"
    assert problem.is_serious()
    assert "OOT_DEFAULT_RATE_LIMIT" in problem.hint


def test_disabled_rate_limit_stops_manage_check(settings):
    settings.RATELIMIT_ENABLE = False

    with pytest.raises(SystemCheckError) as error:
        call_command("check")

    assert "oot_ingest.E001" in str(error.value)


@pytest.mark.parametrize("value", [0, -5, "100", 2.5, True, None, 1_000_001])
def test_invalid_default_limit_is_an_error(settings, value):
    settings.OOT_DEFAULT_RATE_LIMIT = value

    assert check_ids() == ["oot_ingest.E002"]


def test_raised_default_limit_passes(settings):
    settings.OOT_DEFAULT_RATE_LIMIT = 100_000

    assert check_ids() == []


def test_missing_cache_is_an_error(settings):
    settings.RATELIMIT_USE_CACHE = "ratelimit"

    assert check_ids() == ["oot_ingest.E003"]


def test_dummy_cache_is_an_error(settings):
    settings.CACHES = {**settings.CACHES, "default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}

    assert check_ids() == ["oot_ingest.E004"]


def test_per_process_cache_is_a_warning(settings):
    settings.RATELIMIT_USE_CACHE = "local"

    (problem,) = check_rate_limit_settings()

    assert problem.id == "oot_ingest.W001"
    assert not problem.is_serious()
