-- Counts per health status in the latest snapshot.
SELECT health_status, count(*) AS n
FROM machines
GROUP BY 1
ORDER BY n DESC, health_status NULLS FIRST
