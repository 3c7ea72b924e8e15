"""Settings helpers: strict parsing of the environment and DATABASE_URL."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from hud.env import database_from_url, env_bool, env_int


@pytest.mark.parametrize("raw, expected", [("true", True), ("1", True), ("False", False), ("off", False), ("", True)])
def test_env_bool_accepts_boolean_words(monkeypatch, raw, expected):
    monkeypatch.setenv("OOT_FLAG", raw)
    assert env_bool("OOT_FLAG", True) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "yes please"])
def test_env_bool_rejects_other_words(monkeypatch, raw):
    monkeypatch.setenv("OOT_FLAG", raw)
    with pytest.raises(ImproperlyConfigured, match="OOT_FLAG"):
        env_bool("OOT_FLAG", False)


def test_env_int_rejects_text_and_values_below_minimum(monkeypatch):
    monkeypatch.setenv("OOT_NUMBER", "ten")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env_int("OOT_NUMBER", 1)
    monkeypatch.setenv("OOT_NUMBER", "0")
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env_int("OOT_NUMBER", 1, minimum=1)


def test_sqlite_url():
    assert database_from_url("sqlite:////tmp/hud.sqlite3") == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "/tmp/hud.sqlite3",
    }


def test_postgres_url_with_quoted_password():
    config = database_from_url("postgres://hud:p%40ss@127.0.0.1:5432/hud")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert config["NAME"] == "hud"
    assert config["USER"] == "hud"
    assert config["PASSWORD"] == "p@ss"
    assert config["HOST"] == "127.0.0.1"
    assert config["PORT"] == "5432"


def test_unknown_database_scheme_is_rejected():
    with pytest.raises(ImproperlyConfigured, match="mysql"):
        database_from_url("mysql://root@127.0.0.1/hud")


def test_migrations_apply_on_postgresql(tmp_path):
    """DATABASE_URL=postgres://... works end to end: the schema migrates on a real PostgreSQL."""
    import os
    import subprocess
    import sys
    import uuid

    psycopg = pytest.importorskip("psycopg")
    admin_url = os.environ.get("OOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL server at {admin_url}: {error}")
    name = f"oot_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        environment = {**os.environ, "DATABASE_URL": admin_url.rsplit("/", 1)[0] + f"/{name}"}
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        with psycopg.connect(environment["DATABASE_URL"]) as connection:
            tables = {
                row[0] for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            }
        assert "oot_ingest_allowlistentry" in tables
        assert "replicator_shardcheckpoint" in tables
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
