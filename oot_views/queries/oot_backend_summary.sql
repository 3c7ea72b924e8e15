-- Header cards of one backend (all spellings of its name) from the hourly rollup
-- (replicator/rollup.py), as on the summary page: pass-rate inputs, timeouts, timings, PR and row
-- counts, the last run and the latest environment. Only the latest attempt per (head SHA,
-- workflow, job) counts, in the hour of its group's newest completion. The window starts at the
-- top of the hour `days` days ago, as on every page.
SELECT
    sum(hourly.total) AS total,
    sum(hourly.successes) AS successes,
    sum(hourly.failures) AS failures,
    sum(hourly.timed_out) AS timed_out,
    length(groupUniqArrayArray(pr_numbers)) AS total_prs,
    length(groupUniqArrayArray(row_hashes)) AS total_rows,
    sum(queue_sum) / sum(queue_count) AS avg_queue_seconds,
    sum(execution_sum) / sum(execution_count) AS avg_execution_seconds,
    sum(duration_sum) / sum(duration_count) AS avg_duration_seconds,
    max(hourly.last_run) AS last_run,
    argMaxIf(hourly.environment, environment_at, hourly.environment != '') AS current_environment
FROM {rollup:Identifier} AS hourly FINAL
WHERE repository_key IN arrayMap(name -> lower(name), {repos:Array(String)})
  AND event_type = {event_type:String}
  AND hour >= toStartOfHour(now() - toIntervalDay({days:UInt32}))
