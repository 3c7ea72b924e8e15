-- One page of a backend's matrix (all spellings of its name). A row is a PR, or a head SHA for
-- events without a PR. The page contains the newest rows, each with every attempt of its newest
-- head SHA. A record without started_at is placed in time by completed_at.
--
-- The page is chosen first from a few light columns under FINAL, then the full records are read
-- only for the page's deliveries. That second read takes every version of those records without
-- FINAL, since every version of a record has the same backend and delivery id. It keeps the
-- newest per key, as FINAL would: the highest _version, and the latest insert among equals. A key
-- whose newest is a deletion is dropped. Filters on columns a new version may change apply only
-- after that. page_rows is a scalar
-- subquery, which ClickHouse evaluates once.
-- PREWHERE filters only on event_type and updated_at, for the reasons given in oot_summary.
WITH
    (
        SELECT groupArray((row_key, row_time, head_sha, deliveries))
        FROM
        (
            SELECT
                row_key,
                max(placed_at) AS row_time,
                argMax(pytorch_head_sha, placed_at) AS head_sha,
                arrayDistinct(arrayMap(pair -> pair.2, arrayFilter(pair -> pair.1 = head_sha, groupArray((pytorch_head_sha, delivery_id))))) AS deliveries
            FROM
            (
                SELECT
                    if(pr_number > 0, toString(pr_number), if(pytorch_head_sha != '', pytorch_head_sha, dynamoKey)) AS row_key,
                    if(toUnixTimestamp64Nano(started_at) = 0, completed_at, started_at) AS placed_at,
                    pytorch_head_sha,
                    delivery_id
                FROM {table:Identifier} FINAL
                PREWHERE updated_at >= formatDateTime(now64(9) - toIntervalDay({days:UInt32} + 1), '%Y-%m-%dT%H:%i:%S')
                     AND event_type = {event_type:String}
                WHERE downstream_repo IN {repos:Array(String)}
                  AND completed_at >= toStartOfHour(now64(9) - toIntervalDay({days:UInt32}))
            )
            GROUP BY row_key
            ORDER BY row_time DESC, row_key DESC
            LIMIT {per_page:UInt32} OFFSET {offset:UInt32}
        )
    ) AS page_rows
SELECT * EXCEPT (_is_deleted)
FROM
(
    SELECT
        if(pr_number > 0, toString(pr_number), if(pytorch_head_sha != '', pytorch_head_sha, dynamoKey)) AS row_key,
        arrayFirst(page_row -> page_row.1 = row_key, page_rows).2 AS row_time,
        dynamoKey,
        downstream_repo,
        pr_number,
        upstream_repo,
        pytorch_head_sha,
        event_type,
        workflow_name,
        job_name,
        check_run_id,
        run_attempt,
        status,
        conclusion,
        workflow_run_url,
        artifact_url,
        queue_time,
        execution_time,
        started_at,
        completed_at,
        total_tests,
        passed_tests,
        failed_tests,
        skipped_tests,
        failed_tests_json,
        failed_tests_entries_cut,
        swept,
        _is_deleted
    FROM {table:Identifier}
    PREWHERE downstream_repo IN {repos:Array(String)}
         AND delivery_id IN (SELECT arrayJoin(arrayFlatten(arrayMap(page_row -> page_row.4, page_rows))))
    ORDER BY dynamoKey, _version DESC, _inserted_at DESC
    LIMIT 1 BY dynamoKey
)
WHERE _is_deleted = 0
  AND event_type = {event_type:String}
  AND completed_at >= toStartOfHour(now64(9) - toIntervalDay({days:UInt32}))
  AND has(arrayMap(page_row -> (page_row.1, page_row.3), page_rows), (row_key, pytorch_head_sha))
ORDER BY row_time DESC, row_key DESC, workflow_name, job_name, run_attempt DESC
