-- Stale machines: last seen more than 7 days before the newest last_seen.
SELECT count(*) AS stale
FROM machines
WHERE last_seen < (SELECT max(last_seen) FROM machines) - INTERVAL '7 days'
