-- Latest record update over all time for some backends (lower-case names), for "not reporting" marks.
-- Older versions of a record were updated earlier, so max() without FINAL is the same.
SELECT lower(downstream_repo) AS repository_key, max(updated_at) AS last_update
FROM {table:Identifier}
WHERE has({repos:Array(String)}, lower(downstream_repo))
GROUP BY repository_key
