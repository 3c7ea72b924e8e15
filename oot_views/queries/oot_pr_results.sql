-- Every completed attempt of every backend's jobs for one upstream PR.
-- The page keeps the PR's newest head SHA and the latest attempt per job.
--
-- The PR's rows are found without FINAL, through the pr_number bloom filter: FINAL would read the
-- whole sorting-key range around each of the PR's deliveries, which are spread over the table.
-- Every version of a record has the same PR and upstream repository, so the query takes all
-- versions of the PR's records and keeps the newest per key, as FINAL would. The newest is the
-- highest _version, and the latest insert among equals. A key whose newest is a deletion is dropped.
SELECT * EXCEPT (_is_deleted)
FROM
(
    SELECT
        dynamoKey,
        downstream_repo,
        downstream_repo_level,
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
        if(toUnixTimestamp64Nano(started_at) = 0, completed_at, started_at) AS placed_at,
        started_at,
        completed_at,
        duration_seconds,
        queue_time,
        execution_time,
        total_tests,
        passed_tests,
        failed_tests,
        skipped_tests,
        failed_tests_json,
        failed_tests_entries_cut,
        swept,
        _is_deleted
    FROM {table:Identifier}
    PREWHERE pr_number = {pr:UInt64} AND upstream_repo = {upstream_repo:String}
    ORDER BY dynamoKey, _version DESC, _inserted_at DESC
    LIMIT 1 BY dynamoKey
)
WHERE _is_deleted = 0
ORDER BY downstream_repo, workflow_name, job_name, run_attempt DESC
LIMIT 5000
