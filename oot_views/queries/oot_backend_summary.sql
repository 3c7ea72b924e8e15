-- Header cards of one backend: pass-rate inputs, PR count, timings, timeouts, environments.
-- Only the latest attempt per (head SHA, workflow, job) counts; the window applies to completed_at.
SELECT
    count() AS total,
    countIf(has({success_conclusions:Array(String)}, latest_conclusion)) AS successes,
    countIf(has({failure_conclusions:Array(String)}, latest_conclusion)) AS failures,
    countIf(latest_conclusion = 'timed_out') AS timed_out,
    uniqExactIf(latest_pr_number, latest_pr_number > 0) AS total_prs,
    uniqExact(latest_row_key) AS total_rows,
    avgIf(latest_queue_time, latest_queue_time IS NOT NULL) AS avg_queue_seconds,
    avgIf(latest_execution_time, latest_execution_time IS NOT NULL) AS avg_execution_seconds,
    avgIf(latest_duration_seconds, latest_duration_seconds > 0 AND NOT latest_swept) AS avg_duration_seconds,
    max(latest_completed_at) AS last_run,
    argMax(latest_environment, latest_completed_at) AS current_environment,
    groupUniqArray(10)(latest_environment) AS environments
FROM
(
    SELECT
        any(pr_number) AS latest_pr_number,
        any(if(pr_number > 0, toString(pr_number), pytorch_head_sha)) AS latest_row_key,
        argMax(conclusion, (run_attempt, completed_at)) AS latest_conclusion,
        argMax(queue_time, (run_attempt, completed_at)) AS latest_queue_time,
        argMax(execution_time, (run_attempt, completed_at)) AS latest_execution_time,
        argMax(duration_seconds, (run_attempt, completed_at)) AS latest_duration_seconds,
        argMax(swept, (run_attempt, completed_at)) AS latest_swept,
        argMax(environment, (run_attempt, completed_at)) AS latest_environment,
        max(completed_at) AS latest_completed_at
    FROM {table:Identifier} FINAL
    WHERE downstream_repo = {repo:String}
      AND completed_at >= now64(9) - toIntervalDay({days:UInt32})
      AND ({event_type:String} = '' OR event_type = {event_type:String})
    GROUP BY if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha), workflow_name, job_name
)
