-- Machines first seen in the last 7 days, by platform.
SELECT os_platform, count(*) AS n
FROM machines
WHERE first_seen >= (SELECT max(last_seen) FROM machines) - INTERVAL '7 days'
GROUP BY 1
ORDER BY 1 NULLS FIRST
