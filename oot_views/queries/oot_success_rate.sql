-- Series for the metrics page from the hourly rollup (replicator/rollup.py): one row per backend
-- (lower-case name) and time bucket, an hour for a 1-day window and a day otherwise. Pass-rate
-- inputs, queue and execution times cover the chosen event type. Records and their
-- ingestion-to-ClickHouse latency (from updated_at, the DynamoDB write, to _inserted_at) cover
-- every event type. The latency is given as the number of records at or under each of
-- latency_bounds seconds, so that buckets can be summed. Only the latest attempt per (head SHA,
-- workflow, job) counts; the window starts at the top of the hour `days` days ago.
SELECT
    repository_key,
    if({days:UInt32} <= 1, hour, toStartOfDay(hour)) AS bucket,
    sumIf(total, event_type = {event_type:String}) AS total,
    sumIf(successes, event_type = {event_type:String}) AS successes,
    sumIf(failures, event_type = {event_type:String}) AS failures,
    sumIf(queue_sum, event_type = {event_type:String}) / queue_samples AS avg_queue_seconds,
    sumIf(queue_count, event_type = {event_type:String}) AS queue_samples,
    sumIf(execution_sum, event_type = {event_type:String}) / execution_samples AS avg_execution_seconds,
    sumIf(execution_count, event_type = {event_type:String}) AS execution_samples,
    sum(hourly.total) AS records,
    {latency_bounds:Array(Float64)} AS latency_bounds,
    sumForEach(latency_at_most) AS latency_at_most,
    max(latency_max) AS latency_max
FROM {rollup:Identifier} AS hourly FINAL
WHERE hour >= toStartOfHour(now() - toIntervalDay({days:UInt32}))
GROUP BY repository_key, bucket
ORDER BY repository_key, bucket
