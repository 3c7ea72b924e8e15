"""ClickHouse clients belong to the process: threads borrow them for one call each."""

import threading

from django.test import override_settings

from replicator import clickhouse


def one(query: str):
    return clickhouse.client().query(query).result_rows[0][0]


def test_pool_reuses_client_after_thread_ends():
    answers = []
    for number in range(3):
        thread = threading.Thread(target=lambda n=number: answers.append(one(f"SELECT {n}")))
        thread.start()
        thread.join()
    assert answers == [0, 1, 2]
    assert clickhouse._pool.idle_count() >= 1
    before = clickhouse._pool.idle_count()
    assert one("SELECT 7") == 7
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
    one("SELECT 1")
    before = clickhouse._pool.idle_count()
    try:
        one("SELECT no_such_column")
    except Exception as error:  # noqa: BLE001 - any ClickHouse error will do
        assert "no_such_column" in str(error)
    else:
        raise AssertionError("the query should have failed")
    assert clickhouse._pool.idle_count() == before
    assert one("SELECT 3") == 3


def test_pool_closes_clients_of_old_url(tmp_path):
    # chdb rejects a second data directory in a process while a handle on the first is open.
    assert one("SELECT 1") == 1
    with override_settings(CLICKHOUSE_URL=f"chdb://{tmp_path / 'other'}"):
        assert one("SELECT 5") == 5
    assert one("SELECT 4") == 4
