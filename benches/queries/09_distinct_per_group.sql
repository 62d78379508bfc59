-- count(DISTINCT id) and count(DISTINCT snapshot) per group over the history.
SELECT os_platform, count(DISTINCT id) AS machines, count(DISTINCT snapshot) AS snapshots
FROM machines_history
GROUP BY 1
ORDER BY 1 NULLS FIRST
