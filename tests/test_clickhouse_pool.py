"""ClickHouse clients belong to the process: threads borrow them for one call each."""

import threading

import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError
from django.test import override_settings

from replicator import clickhouse


def select_value(query: str):
    """Run a one-value SELECT through the process's client and return the value."""
    return clickhouse.client().query(query).result_rows[0][0]


def test_pool_reuses_client_after_thread_ends():
    answers = []
    for number in range(3):
        thread = threading.Thread(target=lambda n=number: answers.append(select_value(f"SELECT {n}")))
        thread.start()
        thread.join()
    assert answers == [0, 1, 2]
    before = clickhouse._pool.idle_count()
    assert before >= 1
    assert select_value("SELECT 7") == 7
    assert clickhouse._pool.idle_count() == before


def test_pool_gives_concurrent_calls_distinct_clients():
    first_url, first = clickhouse._pool.take()
    second_url, second = clickhouse._pool.take()
    try:
        assert first is not second
        assert first.query("SELECT 1").result_rows == [(1,)]
        assert second.query("SELECT 2").result_rows == [(2,)]
    finally:
        clickhouse._pool.give_back(first_url, first)
        clickhouse._pool.give_back(second_url, second)
    assert clickhouse._pool.idle_count() >= 2


def test_pool_keeps_client_after_failed_call():
    select_value("SELECT 1")
    before = clickhouse._pool.idle_count()
    with pytest.raises(ClickHouseError, match="no_such_column"):
        select_value("SELECT no_such_column")
    assert clickhouse._pool.idle_count() == before
    assert select_value("SELECT 3") == 3


def test_pool_closes_clients_of_old_url(tmp_path):
    # chdb rejects a second data directory in a process while a handle on the first is open.
    assert select_value("SELECT 1") == 1
    with override_settings(CLICKHOUSE_URL=f"chdb://{tmp_path / 'other'}"):
        assert select_value("SELECT 5") == 5
    assert select_value("SELECT 4") == 4
