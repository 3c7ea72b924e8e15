-- The spellings of one backend's name in the records (the relay's spelling may differ in case
-- from the allowlist's). Any version of a record carries its name, so no FINAL is needed.
SELECT DISTINCT downstream_repo
FROM {table:Identifier}
WHERE lower(downstream_repo) = {repo:String}
LIMIT 20
