-- Pass-rate inputs and volume per backend and day, for the metrics page.
-- Only the latest attempt per (head SHA, workflow, job) counts; the window applies to completed_at.
SELECT
    downstream_repo,
    toDate(latest_completed_at) AS day,
    count() AS total,
    countIf(has({success_conclusions:Array(String)}, latest_conclusion)) AS successes,
    countIf(has({failure_conclusions:Array(String)}, latest_conclusion)) AS failures,
    avgIf(latest_queue_time, latest_queue_time IS NOT NULL) AS avg_queue_seconds,
    avgIf(latest_execution_time, latest_execution_time IS NOT NULL) AS avg_execution_seconds
FROM
(
    SELECT
        downstream_repo,
        argMax(conclusion, (run_attempt, completed_at)) AS latest_conclusion,
        argMax(queue_time, (run_attempt, completed_at)) AS latest_queue_time,
        argMax(execution_time, (run_attempt, completed_at)) AS latest_execution_time,
        max(completed_at) AS latest_completed_at
    FROM {table:Identifier} FINAL
    WHERE completed_at >= now64(9) - toIntervalDay({days:UInt32})
      AND ({event_type:String} = '' OR event_type = {event_type:String})
    GROUP BY downstream_repo, if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha), workflow_name, job_name
)
GROUP BY downstream_repo, day
ORDER BY downstream_repo, day
