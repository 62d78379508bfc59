-- Exposure per device group in the latest snapshot.
SELECT rbac_group_name, exposure_level, count(*) AS n
FROM machines
GROUP BY 1, 2
ORDER BY 1 NULLS FIRST, 2 NULLS FIRST
