"""Hourly rollups of the records table for the pages that sum a whole time window.

The summary and metrics pages need, per backend and hour, pass-rate inputs
over the latest attempt of every job. Computing that from the records table
means FINAL and a GROUP BY over every row in the window, which takes seconds
on a million rows. Two tables hold it instead (see rollup_schema.sql):

- oot_job_latest: one row per group (backend, event type, head SHA, workflow,
  job) with its latest attempt's figures;
- oot_job_hourly: per backend, event type and hour, the sums over the groups
  whose newest completion falls in that hour.

A materialized view queues the group of every row inserted into the records
table, by any writer. `catch_up` folds the queued groups. It recomputes each
group from the newest version of each of its records, as FINAL would, so
deletions and newer versions count. Then it recomputes every hour that the
group left or entered. Each fold writes with a version taken from
ClickHouse's clock when it starts, so when two folds overlap, the one that
read the records later wins. A fold is idempotent: one interrupted part way
leaves the queue unfolded, and the next one redoes it.

A record's backend and event type never change (the relay sends them with
the job, and the records table's sorting key starts with the backend), so a
new version of a record touches only the group it was in.

The replicator folds after every run. Readers call `ensure_current` first,
which folds only when something is queued (a row written by another writer,
say). So a page never shows a rollup behind the records it could read.

NOTE: a writer that inserts into the records table without the replicator's
lock, while a fold runs, can have its rows stamped before the fold's mark
but visible only after the fold read the queue. Those groups stay unfolded
until a later change touches them or the rollups are rebuilt (`manage.py
provision --refold-rollups`). The service's own writers all take the lock.
"""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings

from oot_ingest.vocabulary import FAILURE_CONCLUSIONS, SUCCESS_CONCLUSIONS
from replicator import clickhouse

logger = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("rollup_schema.sql")
LATEST = "oot_job_latest"
HOURLY = "oot_job_hourly"
QUEUE = "oot_rollup_queue"
STATE = "oot_rollup_state"
STATE_NAME = "queue"
# Upper bounds, in seconds, of the ingestion-latency histogram of the metrics page.
LATENCY_BOUNDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
# Above this many queued groups of one backend and event type, a fold recomputes all of them,
# which costs the same scan and keeps the query's parameters small.
WHOLE_SCOPE_GROUPS = 2000
# The queue keeps two days (its TTL). A mark older than this refolds everything instead.
QUEUE_KEEPS = timedelta(hours=36)
# A fold with nothing queued moves the mark only when it is older than this, so that an idle
# replicator does not insert a row into oot_rollup_state every second.
MARK_REFRESH = timedelta(hours=1)

# The records' columns that a fold reads.
RECORD_COLUMNS = (
    "downstream_repo",
    "delivery_id",
    "dynamoKey",
    "event_type",
    "pytorch_head_sha",
    "workflow_name",
    "job_name",
    "run_attempt",
    "conclusion",
    "duration_seconds",
    "swept",
    "queue_time",
    "execution_time",
    "updated_at",
    "_inserted_at",
    "_version",
    "pr_number",
    "environment",
    "completed_at",
)
GROUP_HASH = "cityHash64(if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha), workflow_name, job_name)"
# "Latest" is the highest (run_attempt, completed_at): the attempt above bit 44, completed_at in
# milliseconds below it (2^44 ms reaches the year 2527). argMax over one UInt64 is much faster
# than over a tuple.
ATTEMPT_RANK = "bitShiftLeft(toUInt64(run_attempt), 44) + toUInt64(toUnixTimestamp64Milli(completed_at))"


@dataclass
class FoldStats:
    scopes: int = 0
    groups: int = 0
    whole_scopes: int = 0
    seconds: float = 0.0


def ensure_schema() -> None:
    """Create the rollup tables and the view that feeds their queue."""
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    for statement in text.split("\n;\n"):
        statement = statement.strip()
        if statement:
            clickhouse.client().command(statement.replace("{database}", settings.CLICKHOUSE_DATABASE))


def truncate() -> None:
    """Empty the rollups and their queue and mark, as a TRUNCATE of the records table needs."""
    database = settings.CLICKHOUSE_DATABASE
    for table in (QUEUE, LATEST, HOURLY, STATE):
        clickhouse.client().command(f"TRUNCATE TABLE IF EXISTS {database}.{table}")


def _query(sql: str, **parameters):
    return clickhouse.client().query(
        sql,
        parameters={"database": settings.CLICKHOUSE_DATABASE, "records": clickhouse.TABLE, **parameters},
        settings={"max_execution_time": max(60, settings.CLICKHOUSE_QUERY_TIMEOUT)},
    )


def _command(sql: str, **parameters) -> None:
    clickhouse.client().command(
        sql,
        parameters={"database": settings.CLICKHOUSE_DATABASE, "records": clickhouse.TABLE, **parameters},
        settings={"max_execution_time": max(60, settings.CLICKHOUSE_QUERY_TIMEOUT)},
    )


def _folded_until():
    rows = _query(
        "SELECT folded_until FROM {database:Identifier}.oot_rollup_state FINAL WHERE name = {name:String}",
        name=STATE_NAME,
    ).result_rows
    return rows[0][0] if rows else None


def _clock():
    """ClickHouse's current time, and the same instant in nanoseconds as a fold version."""
    moment, nanoseconds = _query("SELECT now64(9, 'UTC'), toUnixTimestamp64Nano(now64(9, 'UTC'))").result_rows[0]
    return moment, int(nanoseconds)


def is_current() -> bool:
    """Return whether every queued group has been folded and the rollups have been built at all."""
    folded_until = _folded_until()
    if folded_until is None:
        return not _query("SELECT 1 FROM {database:Identifier}.{records:Identifier} LIMIT 1").result_rows
    return not _query(
        "SELECT 1 FROM {database:Identifier}.oot_rollup_queue WHERE queued_at > {since:DateTime64(9, 'UTC')} LIMIT 1",
        since=folded_until,
    ).result_rows


def backlog() -> tuple[float | None, int]:
    """Return the fold mark as a Unix time (None before the first fold) and the rows queued after it."""
    folded_until = _folded_until()
    if folded_until is None:
        queued = _query("SELECT count() FROM {database:Identifier}.oot_rollup_queue").result_rows[0][0]
        return None, int(queued)
    queued = _query(
        "SELECT count() FROM {database:Identifier}.oot_rollup_queue WHERE queued_at > {since:DateTime64(9, 'UTC')}",
        since=folded_until,
    ).result_rows[0][0]
    return folded_until.timestamp(), int(queued)


def ensure_current() -> None:
    """Fold queued groups, if any, so that a reader sees the rollups of every record it could read."""
    if not is_current():
        catch_up()


def catch_up(whole: bool = False) -> FoldStats:
    """Fold every group queued since the last fold; with `whole`, refold every group there is.

    Call it under the replicator's lock (a replication run holds it already).
    The view stamps a queued row when the insert runs, and the row becomes
    visible when the insert ends, so a fold that read the queue in between
    would move its mark past a row it never saw.
    """
    started = time.perf_counter()
    fold_moment, version = _clock()
    folded_until = _folded_until()
    stats = FoldStats()
    if whole or folded_until is None or fold_moment - folded_until > QUEUE_KEEPS:
        scopes = {key: None for key in _all_scopes()}
    else:
        scopes = _queued_scopes(folded_until)
    whole_scopes: list[tuple[str, str]] = []
    groups: list[tuple[str, str, int]] = []
    heads: set[str] = set()
    for (repository_key, event_type), queued in scopes.items():
        if queued is None or len(queued[0]) > WHOLE_SCOPE_GROUPS:
            whole_scopes.append((repository_key, event_type))
        else:
            groups.extend((repository_key, event_type, group_hash) for group_hash in queued[0])
            heads.update(queued[1])
    if scopes:
        _fold(whole_scopes, groups, sorted(heads), version)
    stats.scopes = len(scopes)
    stats.whole_scopes = len(whole_scopes)
    stats.groups = len(groups)
    if not scopes and folded_until is not None and fold_moment - folded_until < MARK_REFRESH:
        stats.seconds = time.perf_counter() - started
        return stats
    _command(
        "INSERT INTO {database:Identifier}.oot_rollup_state (name, folded_until, _version)"
        " VALUES ({name:String}, {until:DateTime64(9, 'UTC')}, {version:UInt64})",
        name=STATE_NAME,
        until=fold_moment,
        version=version,
    )
    stats.seconds = time.perf_counter() - started
    if stats.scopes:
        logger.info(
            "rollups folded scopes=%s whole=%s groups=%s seconds=%.3f",
            stats.scopes,
            stats.whole_scopes,
            stats.groups,
            stats.seconds,
        )
    return stats


def _all_scopes() -> list[tuple[str, str]]:
    """Return every (backend, event type) in the records or in the rollups, for a fold from scratch."""
    rows = _query(
        "SELECT DISTINCT lower(downstream_repo), event_type FROM {database:Identifier}.{records:Identifier}"
        " UNION DISTINCT SELECT DISTINCT repository_key, event_type FROM {database:Identifier}.oot_job_latest"
    ).result_rows
    return sorted((row[0], row[1]) for row in rows)


def _queued_scopes(since) -> dict[tuple[str, str], tuple[list[int], list[str]]]:
    """Return the group hashes and heads queued after `since`, per (backend, event type)."""
    rows = _query(
        "SELECT repository_key, event_type, groupUniqArray(group_hash), groupUniqArray(head)"
        " FROM {database:Identifier}.oot_rollup_queue WHERE queued_at > {since:DateTime64(9, 'UTC')}"
        " GROUP BY repository_key, event_type",
        since=since,
    ).result_rows
    return {(row[0], row[1]): (list(row[2]), list(row[3])) for row in rows}


def _fold(
    whole_scopes: list[tuple[str, str]], groups: list[tuple[str, str, int]], heads: list[str], version: int
) -> None:
    """Recompute the given groups and every group of the whole scopes, then each hour they left or entered.

    A scope is a (backend, event type); a group is a (backend, event type, group hash).
    `heads` are the groups' head SHAs (or record keys). Like the backend and the
    event type, they never change within a record, so filtering the records on
    them keeps every version of the groups' records.
    All scopes go through the same few queries, so a run that touched many
    backends costs little more than one that touched a single one.
    """
    scope = {"whole": whole_scopes, "groups": groups, "version": version}
    # Each side of the OR only when it has members: an empty side keeps ClickHouse from using
    # the sorting key of oot_job_latest.
    conditions = []
    if whole_scopes:
        conditions.append("(repository_key, event_type) IN {whole:Array(Tuple(String, String))}")
    if groups:
        conditions.append("(repository_key, event_type, group_hash) IN {groups:Array(Tuple(String, String, UInt64))}")
    in_scope = "(" + " OR ".join(conditions) + ")"
    groups_only = "(repository_key, event_type, group_hash) IN {groups:Array(Tuple(String, String, UInt64))}"
    keys = sorted({key for key, _ in whole_scopes} | {key for key, _, _ in groups})
    spellings = [
        row[0]
        for row in _query(
            "SELECT DISTINCT downstream_repo FROM {database:Identifier}.{records:Identifier}"
            " WHERE lower(downstream_repo) IN {keys:Array(String)}",
            keys=keys,
        ).result_rows
    ]
    hours_before = _hours(groups_only, scope) if groups else set()

    if whole_scopes:
        _recompute_groups(whole_scopes, [], [], spellings, version)
    if groups:
        _recompute_groups([], groups, heads, spellings, version)
    # Groups in scope that the records no longer hold (deleted by a person) leave the rollup.
    _command(
        f"""
        INSERT INTO {{database:Identifier}}.oot_job_latest
        SELECT repository_key, event_type, group_hash, completed_at, conclusion, duration_seconds, swept,
               queue_time, execution_time, latency_seconds, pr_number, row_hash, environment, {{version:UInt64}}, 1
        FROM {{database:Identifier}}.oot_job_latest FINAL
        WHERE {in_scope} AND _version < {{version:UInt64}}
        """,
        **scope,
    )

    # Whole scopes recompute every hour they have. Other groups recompute the hours they were in
    # before this fold and the hours they are in now.
    hours = (hours_before | _hours(groups_only, scope)) if groups else set()
    hours_parameter = {"whole": whole_scopes, "hours": sorted(hours), "version": version}
    bounds = "[" + ", ".join(repr(bound) for bound in LATENCY_BOUNDS) + "]"
    hour_in_scope = (
        "((repository_key, event_type) IN {whole:Array(Tuple(String, String))}"
        " OR (repository_key, event_type, {hour}) IN {hours:Array(Tuple(String, String, DateTime('UTC')))})"
    )
    _command(
        f"""
        INSERT INTO {{database:Identifier}}.oot_job_hourly
        SELECT
            repository_key, event_type, toStartOfHour(completed_at) AS hour,
            count(),
            countIf(has({{success_conclusions:Array(String)}}, conclusion)),
            countIf(has({{failure_conclusions:Array(String)}}, conclusion)),
            countIf(conclusion = 'timed_out'),
            sumIf(duration_seconds, duration_seconds > 0 AND NOT swept),
            countIf(duration_seconds > 0 AND NOT swept),
            sumIf(assumeNotNull(queue_time), queue_time IS NOT NULL),
            countIf(queue_time IS NOT NULL),
            sumIf(assumeNotNull(execution_time), execution_time IS NOT NULL),
            countIf(execution_time IS NOT NULL),
            sumForEach(arrayMap(bound -> toUInt64(latency_seconds <= bound), {bounds})),
            max(latency_seconds),
            max(completed_at),
            groupUniqArrayIf(pr_number, pr_number > 0),
            groupUniqArray(row_hash),
            argMaxIf(environment, completed_at, environment != ''),
            maxIf(completed_at, environment != ''),
            {{version:UInt64}}, 0
        FROM {{database:Identifier}}.oot_job_latest FINAL
        WHERE {hour_in_scope.replace("{hour}", "toStartOfHour(completed_at)")}
        GROUP BY repository_key, event_type, hour
        """,
        success_conclusions=list(SUCCESS_CONCLUSIONS),
        failure_conclusions=list(FAILURE_CONCLUSIONS),
        **hours_parameter,
    )
    # Hours in scope that no group falls in any more are dropped.
    _command(
        f"""
        INSERT INTO {{database:Identifier}}.oot_job_hourly
        SELECT repository_key, event_type, hour, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, [], 0, last_run, [], [], '',
               environment_at, {{version:UInt64}}, 1
        FROM {{database:Identifier}}.oot_job_hourly FINAL
        WHERE {hour_in_scope.replace("{hour}", "hour")} AND _version < {{version:UInt64}}
        """,
        **hours_parameter,
    )


def _recompute_groups(
    whole_scopes: list[tuple[str, str]],
    groups: list[tuple[str, str, int]],
    heads: list[str],
    spellings: list[str],
    version: int,
) -> None:
    """Write the latest attempt of every group of the whole scopes, or of the given groups, into oot_job_latest.

    Whole scopes read their backends' records under FINAL, which merges the
    sorted parts in one pass. Single groups read every version of the
    records with their heads, without FINAL, and keep the newest version per
    sorting key as FINAL would (the highest _version, the latest insert among
    equals, none if that version is a deletion): FINAL would have to merge
    the whole range of every backend the groups are in.
    """
    if whole_scopes:
        condition = "(repository_key, event_type) IN {whole:Array(Tuple(String, String))}"
        source = """{database:Identifier}.{records:Identifier} FINAL
            PREWHERE downstream_repo IN {spellings:Array(String)} AND event_type IN {event_types:Array(String)}"""
    else:
        condition = "(repository_key, event_type, group_hash) IN {groups:Array(Tuple(String, String, UInt64))}"
        source = f"""
            (
                SELECT {", ".join(RECORD_COLUMNS)}, _is_deleted
                FROM {{database:Identifier}}.{{records:Identifier}}
                PREWHERE downstream_repo IN {{spellings:Array(String)}}
                     AND event_type IN {{event_types:Array(String)}}
                     AND if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha) IN {{heads:Array(String)}}
                ORDER BY downstream_repo, delivery_id, dynamoKey, _version DESC, _inserted_at DESC
                LIMIT 1 BY downstream_repo, delivery_id, dynamoKey
            )
            WHERE _is_deleted = 0"""
    event_types = sorted({event for _, event in whole_scopes} | {event for _, event, _ in groups})
    _command(
        f"""
        INSERT INTO {{database:Identifier}}.oot_job_latest
        SELECT
            repository_key, event_type, group_hash, newest_completed_at,
            latest.1, latest.2, latest.3, latest.4, latest.5, latest.6, latest.7, latest.8, latest.9,
            {{version:UInt64}}, 0
        FROM
        (
            SELECT
                lower(downstream_repo) AS repository_key,
                event_type,
                {GROUP_HASH} AS group_hash,
                argMax(
                    (
                        conclusion,
                        duration_seconds,
                        swept,
                        queue_time,
                        execution_time,
                        greatest(
                            0, dateDiff('millisecond', parseDateTime64BestEffortOrZero(updated_at, 6), _inserted_at)
                        ) / 1000,
                        pr_number,
                        cityHash64(
                            if(
                                pr_number > 0,
                                toString(pr_number),
                                if(pytorch_head_sha != '', pytorch_head_sha, dynamoKey)
                            )
                        ),
                        environment
                    ),
                    {ATTEMPT_RANK}
                ) AS latest,
                max(completed_at) AS newest_completed_at
            FROM {source}
            GROUP BY repository_key, event_type, group_hash
            HAVING {condition}
        )
        """,
        whole=whole_scopes,
        groups=groups,
        heads=heads,
        spellings=spellings,
        event_types=event_types,
        version=version,
    )


def _hours(condition: str, scope: dict) -> set[tuple]:
    rows = _query(
        "SELECT DISTINCT repository_key, event_type, toStartOfHour(completed_at)"
        f" FROM {{database:Identifier}}.oot_job_latest FINAL WHERE {condition}",
        **scope,
    ).result_rows
    return {tuple(row) for row in rows}
