-- One page of the backend's matrix: the newest rows (a PR, or a head SHA for
-- events without a PR), and every attempt of each row's newest head SHA.
-- A record without started_at is placed in time by completed_at.
WITH
    jobs AS
    (
        SELECT
            if(pr_number > 0, toString(pr_number), pytorch_head_sha) AS row_key,
            if(toUnixTimestamp64Nano(started_at) = 0, completed_at, started_at) AS placed_at,
            duration_seconds,
            *
        FROM {table:Identifier} FINAL
        WHERE downstream_repo = {repo:String}
          AND completed_at >= now64(9) - toIntervalDay({days:UInt32})
          AND ({event_type:String} = '' OR event_type = {event_type:String})
    ),
    page AS
    (
        SELECT row_key, max(placed_at) AS row_time, argMax(pytorch_head_sha, placed_at) AS head_sha
        FROM jobs
        GROUP BY row_key
        ORDER BY row_time DESC, row_key DESC
        LIMIT {per_page:UInt32} OFFSET {offset:UInt32}
    )
SELECT
    jobs.row_key AS row_key,
    page.row_time AS row_time,
    jobs.dynamoKey AS dynamoKey,
    jobs.pr_number AS pr_number,
    jobs.upstream_repo AS upstream_repo,
    jobs.pytorch_head_sha AS pytorch_head_sha,
    jobs.event_type AS event_type,
    jobs.workflow_name AS workflow_name,
    jobs.job_name AS job_name,
    jobs.check_run_id AS check_run_id,
    jobs.run_attempt AS run_attempt,
    jobs.status AS status,
    jobs.conclusion AS conclusion,
    jobs.workflow_run_url AS workflow_run_url,
    jobs.artifact_url AS artifact_url,
    jobs.queue_time AS queue_time,
    jobs.execution_time AS execution_time,
    jobs.started_at AS started_at,
    jobs.completed_at AS completed_at,
    jobs.duration_seconds AS duration_seconds,
    jobs.total_tests AS total_tests,
    jobs.passed_tests AS passed_tests,
    jobs.failed_tests AS failed_tests,
    jobs.skipped_tests AS skipped_tests,
    jobs.failed_tests_json AS failed_tests_json,
    jobs.failed_tests_entries_cut AS failed_tests_entries_cut,
    jobs.swept AS swept
FROM jobs
INNER JOIN page ON jobs.row_key = page.row_key AND jobs.pytorch_head_sha = page.head_sha
ORDER BY row_time DESC, row_key DESC, job_name, run_attempt DESC
