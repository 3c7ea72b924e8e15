-- One row per backend over the time window: pass-rate inputs, volume, duration, last run.
-- Only the latest attempt per (head SHA, workflow, job) counts; the window applies to completed_at.
SELECT
    downstream_repo,
    count() AS total,
    countIf(has({success_conclusions:Array(String)}, latest_conclusion)) AS successes,
    countIf(has({failure_conclusions:Array(String)}, latest_conclusion)) AS failures,
    avgIf(latest_duration_seconds, latest_duration_seconds > 0 AND NOT latest_swept) AS avg_duration_seconds,
    max(latest_completed_at) AS last_run
FROM
(
    SELECT
        downstream_repo,
        argMax(conclusion, (run_attempt, completed_at)) AS latest_conclusion,
        argMax(duration_seconds, (run_attempt, completed_at)) AS latest_duration_seconds,
        argMax(swept, (run_attempt, completed_at)) AS latest_swept,
        max(completed_at) AS latest_completed_at
    FROM {table:Identifier} FINAL
    WHERE completed_at >= now64(9) - toIntervalDay({days:UInt32})
      AND ({event_type:String} = '' OR event_type = {event_type:String})
    GROUP BY downstream_repo, if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha), workflow_name, job_name
)
GROUP BY downstream_repo
