-- One row per backend (lower-case name) over the time window: pass-rate inputs, volume, duration, last run.
-- Read from the hourly rollup (replicator/rollup.py): only the latest attempt per (head SHA, workflow,
-- job) counts, placed in the hour of its group's newest completed_at. The window starts at the top
-- of the hour `days` days ago, the same start as every page's.
SELECT
    repository_key,
    sum(total) AS total,
    sum(successes) AS successes,
    sum(failures) AS failures,
    sum(duration_sum) / sum(duration_count) AS avg_duration_seconds,
    max(last_run) AS last_run
FROM {rollup:Identifier} FINAL
WHERE event_type = {event_type:String}
  AND hour >= toStartOfHour(now() - toIntervalDay({days:UInt32}))
GROUP BY repository_key
