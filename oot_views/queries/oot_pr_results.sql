-- Every completed attempt of every backend's jobs for one upstream PR.
-- The page keeps the PR's newest head SHA and the latest attempt per job.
--
-- The subquery finds the PR's deliveries without FINAL (the pr_number bloom filter skips most
-- granules). FINAL then reads only their ranges of the sorting key, which start with
-- (downstream_repo, delivery_id), and every version of a record lies in its delivery's range.
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
    total_tests,
    passed_tests,
    failed_tests,
    swept
FROM {table:Identifier} FINAL
WHERE (downstream_repo, delivery_id) IN
    (
        SELECT downstream_repo, delivery_id
        FROM {table:Identifier}
        WHERE pr_number = {pr:UInt64} AND upstream_repo = {upstream_repo:String}
    )
  AND pr_number = {pr:UInt64}
  AND upstream_repo = {upstream_repo:String}
ORDER BY downstream_repo, workflow_name, job_name, run_attempt DESC
LIMIT 5000
