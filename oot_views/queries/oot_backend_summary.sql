-- Header cards of one backend (all spellings of its name). Pass-rate inputs, timeouts, timings and
-- the last run come from the hourly rollup (replicator/rollup.py), as on the summary page: only
-- the latest attempt per (head SHA, workflow, job) counts. PR and row counts and the latest
-- environment come from the backend's records in the window, a small range of the sorting key.
-- The window starts at the top of the hour `days` days ago, as on every page.
-- PREWHERE filters only on event_type, which never changes within a record.
SELECT
    rollup.total AS total,
    rollup.successes AS successes,
    rollup.failures AS failures,
    rollup.timed_out AS timed_out,
    records.total_prs AS total_prs,
    records.total_rows AS total_rows,
    rollup.avg_queue_seconds AS avg_queue_seconds,
    rollup.avg_execution_seconds AS avg_execution_seconds,
    rollup.avg_duration_seconds AS avg_duration_seconds,
    rollup.last_run AS last_run,
    records.current_environment AS current_environment
FROM
(
    SELECT
        sum(hourly.total) AS total,
        sum(hourly.successes) AS successes,
        sum(hourly.failures) AS failures,
        sum(hourly.timed_out) AS timed_out,
        sum(queue_sum) / sum(queue_count) AS avg_queue_seconds,
        sum(execution_sum) / sum(execution_count) AS avg_execution_seconds,
        sum(duration_sum) / sum(duration_count) AS avg_duration_seconds,
        max(hourly.last_run) AS last_run
    FROM {rollup:Identifier} AS hourly FINAL
    WHERE repository_key IN arrayMap(name -> lower(name), {repos:Array(String)})
      AND event_type = {event_type:String}
      AND hour >= toStartOfHour(now() - toIntervalDay({days:UInt32}))
) AS rollup
CROSS JOIN
(
    SELECT
        uniqExactIf(pr_number, pr_number > 0) AS total_prs,
        uniqExact(if(pr_number > 0, toString(pr_number), if(pytorch_head_sha != '', pytorch_head_sha, dynamoKey))) AS total_rows,
        argMaxIf(environment, completed_at, environment != '') AS current_environment
    FROM {table:Identifier} FINAL
    PREWHERE event_type = {event_type:String}
    WHERE downstream_repo IN {repos:Array(String)}
      AND completed_at >= toStartOfHour(now64(9) - toIntervalDay({days:UInt32}))
) AS records
