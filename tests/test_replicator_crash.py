"""SIGKILL in the middle of a batch: after a restart every completed record is in ClickHouse exactly once.

The demo corpus goes into DynamoDB Local through the API's write path. The
process that owns the replicator in embedded mode (the chdb owner, with its
own chdb directory and Django database, and this session's DynamoDB Local
and Redis) runs as a subprocess. The first one reads part of the corpus and
is killed right after inserting a short page at the stream's tip, before
that batch's checkpoint. The rest of the corpus is written before the
restart, so the page the second owner reads from the checkpoint is longer
than the killed batch: only the stored batch boundary gives the re-sent
batch the same deduplication token. The second owner catches up and reports
what its chdb holds, because the test process owns the session's chdb
directory and cannot open another.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from boto3.dynamodb.conditions import Attr

from oot_ingest import dynamo
from oot_ingest.payload import build_record, decode_body
from replicator.convert import version
from tests.conftest import DEMO_CORPUS, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stores")]

# Callbacks written before the first owner starts; the rest follow its crash.
FIRST_PART = 3000
LOAD_THREADS = 4

OWNER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    import django

    os.environ["DJANGO_SETTINGS_MODULE"] = "hud.settings"
    django.setup()

    from django.core.management import call_command
    from django.utils import timezone

    from replicator import clickhouse, embedded, runner, stream
    from replicator.models import ReplicatorStatus

    phase, report_path = sys.argv[1], Path(sys.argv[2])
    call_command("migrate", verbosity=0)
    clickhouse.ensure_schema()
    client = clickhouse.client()
    # No merges in this private chdb directory: a merge would fold a twice
    # stored row into one and hide the duplicate this test looks for.
    client.command(f"ALTER TABLE {clickhouse.TABLE} MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 1")
    client.command(f"SYSTEM STOP MERGES {clickhouse.TABLE}")
    # A killed owner's lock expires after this TTL; keep the restart short.
    runner.LOCK_TTL_SECONDS = 5
    runner.RENEW_INTERVAL_SECONDS = 1

    if phase == "crash":
        advance, convert = stream.advance_checkpoint, stream.rows_for_batch
        batch_sizes = []

        def convert_and_count(stream_arn, shard_id, records):
            batch_sizes.append(len(records))
            return convert(stream_arn, shard_id, records)

        def advance_or_hang(checkpoint, sequence_number, record_at=None):
            short_page = batch_sizes[-1] < stream.PAGE_LIMIT
            if checkpoint.pending_sequence_number and len(batch_sizes) >= 2 and short_page:
                # The batch is in ClickHouse and its checkpoint is not. Wait for SIGKILL.
                report_path.write_text(f"{batch_sizes[-1]} records up to {sequence_number}")
                time.sleep(3600)
            return advance(checkpoint, sequence_number, record_at)

        stream.rows_for_batch = convert_and_count
        stream.advance_checkpoint = advance_or_hang
        embedded.start()
        time.sleep(3600)

    started = timezone.now()
    embedded.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = ReplicatorStatus.objects.order_by("-last_run_at").first()
        if status and status.last_success_at and status.last_success_at > started and status.caught_up \\
                and status.last_run_records == 0:
            break
        time.sleep(0.2)
    else:
        sys.exit("replication did not catch up within 300 s")

    table = clickhouse.TABLE
    final = client.query(f"SELECT dynamoKey, _version FROM {table} FINAL").result_rows
    raw_count = client.query(f"SELECT count() FROM {table}").result_rows[0][0]
    distinct = client.query(f"SELECT uniqExact(dynamoKey, _version) FROM {table}").result_rows[0][0]
    # A part made by a merge covers more than one insert's block number.
    merged_parts = client.query(
        "SELECT countIf(max_block_number > min_block_number) FROM system.parts "
        "WHERE table = {table:String} AND active",
        parameters={"table": table},
    ).result_rows[0][0]
    report_path.write_text(json.dumps({
        "final": [[key, int(value)] for key, value in final],
        "raw_count": raw_count,
        "distinct_versions": distinct,
        "merged_parts": merged_parts,
    }))
    """
)


def corpus_records() -> list[dict]:
    """Return the record of every callback in the demo corpus, as the API builds it."""
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as lines:
        return [build_record(decode_body(json.dumps(json.loads(line)["body"]).encode())).record for line in lines]


def store(records: list[dict]) -> None:
    """Write records through the write path, in order per job."""
    # One writer per share of the keys, so each job's callbacks keep their order.
    shares: list[list[dict]] = [[] for _ in range(LOAD_THREADS)]
    for record in records:
        shares[zlib.crc32(record["dynamoKey"].encode()) % LOAD_THREADS].append(record)

    def write(share: list[dict]) -> None:
        for record in share:
            dynamo.write_record(record)

    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        list(pool.map(write, shares))


def completed_versions() -> dict[str, int]:
    """Return dynamoKey -> ClickHouse version of every completed record in DynamoDB."""
    versions = {}
    arguments = {"FilterExpression": Attr("status").eq("completed"), "ConsistentRead": True}
    while True:
        page = dynamo.table().scan(**arguments)
        for item in page["Items"]:
            versions[item["dynamoKey"]] = version(item["status"], int(item["revision"]))
        if "LastEvaluatedKey" not in page:
            return versions
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def owner(tmp_path, *arguments: str) -> subprocess.Popen:
    environment = {
        **os.environ,
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REPLICATOR_INTERVAL_SECONDS": "0.2",
        "OOT_SWEEP_INTERVAL_SECONDS": "86400",
        "LOG_LEVEL": "INFO",
    }
    return subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, *arguments],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_file(path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return
        if process.poll() is not None:
            raise AssertionError(f"owner exited early:\n{process.stdout.read()[-5000:]}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"owner did not insert a short page within {timeout:.0f} s")


def test_sigkill_mid_batch_loses_and_duplicates_nothing(tmp_path):
    records = corpus_records()
    assert len(records) > 7000
    store(records[:FIRST_PART])

    marker = tmp_path / "killed-after-insert"
    crashing = owner(tmp_path, "crash", str(marker))
    wait_for_file(marker, crashing)
    crashing.send_signal(signal.SIGKILL)
    crashing.wait(timeout=30)
    assert crashing.returncode == -signal.SIGKILL

    store(records[FIRST_PART:])
    expected = completed_versions()
    assert len(expected) > 1000

    report_path = tmp_path / "report.json"
    restarted = owner(tmp_path, "restart", str(report_path))
    output, _ = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, output[-5000:]
    report = json.loads(report_path.read_text())

    final = dict(report["final"])
    assert len(report["final"]) == len(final), "a key appears twice under FINAL"
    assert final.keys() == expected.keys(), "every completed record, and nothing else, must be in ClickHouse"
    stale = {key for key, value in expected.items() if final[key] != value}
    assert not stale, f"{len(stale)} records have an older version, e.g. {sorted(stale)[:3]}"
    assert report["merged_parts"] == 0, "a merge ran and could have hidden a duplicate row"
    assert report["raw_count"] == report["distinct_versions"], "some row was stored twice"
    assert "re-sending a batch interrupted before its checkpoint" in output
