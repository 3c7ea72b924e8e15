-- Rollups of oot_workflow_job for the summary and metrics pages, kept by replicator/rollup.py.
-- A "group" is one job of one head SHA: (lower-case backend, event type, head SHA or record key
-- when the SHA is missing, workflow, job). Only its latest attempt counts towards pass rates.
-- Statements are separated by a line holding only ";".

-- Every row inserted into the records table, by any writer, queues its group for folding.
CREATE TABLE IF NOT EXISTS {database}.oot_rollup_queue
(
    repository_key String,
    downstream_repo String,
    event_type String,
    group_hash UInt64,
    -- The head SHA, or the record key when the SHA is missing: a fold reads only records with these.
    head String,
    queued_at DateTime64(9, 'UTC')
)
ENGINE = MergeTree
ORDER BY queued_at
TTL toDateTime(queued_at) + INTERVAL 2 DAY
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.oot_rollup_queue_mv TO {database}.oot_rollup_queue AS
SELECT
    lower(downstream_repo) AS repository_key,
    downstream_repo,
    event_type,
    cityHash64(if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha), workflow_name, job_name) AS group_hash,
    if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha) AS head,
    now64(9, 'UTC') AS queued_at
FROM {database}.oot_workflow_job
;
-- The latest attempt of each group, placed in time by the newest completed_at among its attempts.
CREATE TABLE IF NOT EXISTS {database}.oot_job_latest
(
    repository_key String,
    event_type String,
    group_hash UInt64,
    completed_at DateTime64(9, 'UTC'),
    conclusion String,
    duration_seconds Float64,
    swept Bool,
    queue_time Nullable(Float64),
    execution_time Nullable(Float64),
    latency_seconds Float64,
    pr_number UInt64,
    -- cityHash64 of the matrix row the group is in: its PR, else its head SHA, else its record key.
    row_hash UInt64,
    environment String,
    -- The fold's start time in nanoseconds: a later fold read the records later.
    _version UInt64,
    _is_deleted UInt8
)
ENGINE = ReplacingMergeTree(_version, _is_deleted)
ORDER BY (repository_key, event_type, group_hash)
-- A fold looks up a few scattered groups: small granules keep each lookup to a few rows.
SETTINGS index_granularity = 1024
;
-- Sums over the groups whose latest completion falls in each hour.
CREATE TABLE IF NOT EXISTS {database}.oot_job_hourly
(
    repository_key String,
    event_type String,
    hour DateTime('UTC'),
    total UInt64,
    successes UInt64,
    failures UInt64,
    timed_out UInt64,
    duration_sum Float64,
    duration_count UInt64,
    queue_sum Float64,
    queue_count UInt64,
    execution_sum Float64,
    execution_count UInt64,
    -- Groups whose latency is at or under each bound of rollup.LATENCY_BOUNDS.
    latency_at_most Array(UInt64),
    latency_max Float64,
    last_run DateTime64(9, 'UTC'),
    -- The distinct PR numbers (above 0) and matrix rows of the hour's groups.
    pr_numbers Array(UInt64),
    row_hashes Array(UInt64),
    -- The newest non-empty environment among the hour's groups, and its group's completion time.
    environment String,
    environment_at DateTime64(9, 'UTC'),
    _version UInt64,
    _is_deleted UInt8
)
ENGINE = ReplacingMergeTree(_version, _is_deleted)
ORDER BY (repository_key, event_type, hour)
;
-- One row: how far the queue has been folded.
CREATE TABLE IF NOT EXISTS {database}.oot_rollup_state
(
    name String,
    folded_until DateTime64(9, 'UTC'),
    _version UInt64
)
ENGINE = ReplacingMergeTree(_version)
ORDER BY name
