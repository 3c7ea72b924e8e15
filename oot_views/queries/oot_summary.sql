-- One row per backend (lower-case name) over the time window: pass-rate inputs, volume, duration, last run.
-- Only the latest attempt per (head SHA, workflow, job) counts; the window applies to completed_at.
-- A record without a head SHA is a group of its own.
--
-- "Latest" is the highest (run_attempt, completed_at), packed into one UInt64 because argMax
-- over a tuple key is several times slower: the attempt above bit 44, completed_at in
-- milliseconds below it (2^44 ms reaches the year 2527).
--
-- PREWHERE drops rows before FINAL merges the versions of a record, so it uses only columns that
-- cannot drop a record's newest version while keeping an older one. event_type never changes
-- within a record. Every write raises updated_at, so the newest version has the highest.
-- A record that completed in the window was written at or after its completed_at, unless the
-- downstream's clock runs ahead of this service's, and the extra day allows for such a clock.
SELECT
    repository_key,
    count() AS total,
    countIf(has({success_conclusions:Array(String)}, latest.1)) AS successes,
    countIf(has({failure_conclusions:Array(String)}, latest.1)) AS failures,
    avgIf(latest.2, latest.2 > 0 AND NOT latest.3) AS avg_duration_seconds,
    max(latest_completed_at) AS last_run
FROM
(
    SELECT
        lower(downstream_repo) AS repository_key,
        argMax(
            (conclusion, duration_seconds, swept),
            bitShiftLeft(toUInt64(run_attempt), 44) + toUInt64(toUnixTimestamp64Milli(completed_at))
        ) AS latest,
        max(completed_at) AS latest_completed_at
    FROM {table:Identifier} FINAL
    PREWHERE updated_at >= formatDateTime(now64(9) - toIntervalDay({days:UInt32} + 1), '%Y-%m-%dT%H:%i:%S')
         AND event_type = {event_type:String}
    WHERE completed_at >= now64(9) - toIntervalDay({days:UInt32})
    GROUP BY repository_key, cityHash64(if(pytorch_head_sha = '', dynamoKey, pytorch_head_sha), workflow_name, job_name)
)
GROUP BY repository_key
