-- Header cards of one backend (all spellings of its name): pass-rate inputs, PR and row counts,
-- timings, timeouts and the latest environment. Only the latest attempt per (head SHA, workflow,
-- job) counts, "latest" being the highest (run_attempt, completed_at) packed as in oot_summary;
-- the window applies to completed_at.
-- PREWHERE filters only on event_type and updated_at, for the reasons given in oot_summary.
SELECT
    count() AS total,
    countIf(has({success_conclusions:Array(String)}, latest.1)) AS successes,
    countIf(has({failure_conclusions:Array(String)}, latest.1)) AS failures,
    countIf(latest.1 = 'timed_out') AS timed_out,
    uniqExactIf(group_pr_number, group_pr_number > 0) AS total_prs,
    uniqExact(group_row_key) AS total_rows,
    avgIf(latest.2, latest.2 IS NOT NULL) AS avg_queue_seconds,
    avgIf(latest.3, latest.3 IS NOT NULL) AS avg_execution_seconds,
    avgIf(latest.4, latest.4 > 0 AND NOT latest.5) AS avg_duration_seconds,
    max(latest_completed_at) AS last_run,
    argMaxIf(latest.6, latest_completed_at, latest.6 != '') AS current_environment
FROM
(
    SELECT
        any(pr_number) AS group_pr_number,
        any(if(pr_number > 0, toString(pr_number), if(pytorch_head_sha != '', pytorch_head_sha, dynamoKey))) AS group_row_key,
        argMax(
            (conclusion, queue_time, execution_time, duration_seconds, swept, environment),
            bitShiftLeft(toUInt64(run_attempt), 44) + toUInt64(toUnixTimestamp64Milli(completed_at))
        ) AS latest,
        max(completed_at) AS latest_completed_at
    FROM {table:Identifier} FINAL
    PREWHERE updated_at >= formatDateTime(now64(9) - toIntervalDay({days:UInt32} + 1), '%Y-%m-%dT%H:%i:%S')
         AND event_type = {event_type:String}
    WHERE downstream_repo IN {repos:Array(String)}
      AND completed_at >= now64(9) - toIntervalDay({days:UInt32})
    GROUP BY cityHash64(if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha), workflow_name, job_name)
)
