-- The ClickHouse copy of the DynamoDB records: completed jobs only.
-- {engine} is ReplacingMergeTree, or SharedReplacingMergeTree on ClickHouse Cloud.
CREATE TABLE IF NOT EXISTS {database}.oot_workflow_job
(
    dynamoKey String,
    status String,
    revision UInt64,
    updated_at String,
    swept Bool DEFAULT false,
    downstream_repo String,
    downstream_repo_level String,
    upstream_repo String,
    pr_number UInt64,
    pytorch_head_sha String,
    event_type String,
    delivery_id String,
    workflow_name String,
    job_name String,
    check_run_id String,
    run_id String,
    run_attempt UInt32,
    workflow_run_url String,
    queue_time Nullable(Float64),
    execution_time Nullable(Float64),
    started_at DateTime64(9, 'UTC'),
    completed_at DateTime64(9, 'UTC'),
    conclusion String,
    total_tests UInt64,
    passed_tests UInt64,
    failed_tests UInt64,
    skipped_tests UInt64,
    failed_tests_json String,
    failed_tests_entries_cut UInt64,
    failed_tests_bytes_cut UInt64,
    artifact_url String,
    environment String,
    -- status rank in the top bits, the record's revision below: never insert time.
    _version UInt64,
    _is_deleted UInt8 DEFAULT 0,
    _inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    -- 0 when either timestamp is missing (stored as the epoch).
    duration_seconds Float64 ALIAS if(
        toUnixTimestamp64Nano(started_at) = 0 OR toUnixTimestamp64Nano(completed_at) = 0,
        0,
        greatest(toFloat64(dateDiff('millisecond', started_at, completed_at)) / 1000, 0)
    ),
    INDEX idx_status status TYPE bloom_filter GRANULARITY 4,
    INDEX idx_pr_number pr_number TYPE bloom_filter GRANULARITY 4,
    INDEX idx_downstream_repo downstream_repo TYPE bloom_filter GRANULARITY 4,
    INDEX idx_started_at started_at TYPE minmax GRANULARITY 4,
    INDEX idx_completed_at completed_at TYPE minmax GRANULARITY 4
)
ENGINE = {engine}(_version, _is_deleted)
ORDER BY (downstream_repo, delivery_id, dynamoKey)
-- Granules of 1,024 rows rather than ClickHouse's default 8,192: delivery ids are random, so one
-- PR's records are scattered over the table, and the PR page reads whole granules around each.
SETTINGS index_granularity = 1024, non_replicated_deduplication_window = 10000
