-- Latest record update per backend over all time, for "not reporting" marks.
SELECT downstream_repo, max(updated_at) AS last_update
FROM {table:Identifier}
GROUP BY downstream_repo
