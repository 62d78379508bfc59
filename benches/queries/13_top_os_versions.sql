-- The most common os_platform / version pairs.
SELECT os_platform, version, count(*) AS n
FROM machines
GROUP BY 1, 2
ORDER BY n DESC, 1 NULLS FIRST, 2 NULLS FIRST
LIMIT 10
