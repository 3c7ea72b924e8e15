-- Series for the metrics page: one row per backend (lower-case name) and time bucket, an hour
-- for a 1-day window and a day otherwise. Pass-rate inputs, queue and execution times cover the
-- chosen event type. Records and their ingestion-to-ClickHouse latency (from updated_at, the
-- DynamoDB write, to _inserted_at) cover every event type. The latency is given as the number
-- of records at or under each of latency_bounds seconds, so that buckets can be summed.
-- Only the latest attempt per (head SHA, workflow, job) counts, "latest" being the highest
-- (run_attempt, completed_at) packed as in oot_summary; the window applies to completed_at.
-- PREWHERE filters only on event_type and updated_at, for the reasons given in oot_summary.
SELECT
    repository_key,
    if({days:UInt32} <= 1, toStartOfHour(latest_completed_at), toStartOfDay(latest_completed_at)) AS bucket,
    countIf(matches) AS total,
    countIf(matches AND has({success_conclusions:Array(String)}, latest.1)) AS successes,
    countIf(matches AND has({failure_conclusions:Array(String)}, latest.1)) AS failures,
    avgIf(latest.2, matches AND latest.2 IS NOT NULL) AS avg_queue_seconds,
    countIf(matches AND latest.2 IS NOT NULL) AS queue_samples,
    avgIf(latest.3, matches AND latest.3 IS NOT NULL) AS avg_execution_seconds,
    countIf(matches AND latest.3 IS NOT NULL) AS execution_samples,
    count() AS records,
    [1., 2., 5., 10., 30., 60., 300., 3600.] AS latency_bounds,
    sumForEach(arrayMap(bound -> toUInt64(latest.4 <= bound), latency_bounds)) AS latency_at_most,
    max(latest.4) AS latency_max
FROM
(
    SELECT
        lower(downstream_repo) AS repository_key,
        event_type = {event_type:String} AS matches,
        argMax(
            (
                conclusion,
                queue_time,
                execution_time,
                greatest(0, dateDiff('millisecond', parseDateTime64BestEffortOrZero(updated_at, 6), _inserted_at)) / 1000
            ),
            bitShiftLeft(toUInt64(run_attempt), 44) + toUInt64(toUnixTimestamp64Milli(completed_at))
        ) AS latest,
        max(completed_at) AS latest_completed_at
    FROM {table:Identifier} FINAL
    PREWHERE updated_at >= formatDateTime(now64(9) - toIntervalDay({days:UInt32} + 1), '%Y-%m-%dT%H:%i:%S')
    WHERE completed_at >= now64(9) - toIntervalDay({days:UInt32})
    GROUP BY repository_key, event_type, cityHash64(if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha), workflow_name, job_name)
)
GROUP BY repository_key, bucket
ORDER BY repository_key, bucket
