-- Latest machines joined with their addresses.
SELECT m.os_platform, count(DISTINCT m.id) AS machines, count(*) AS addresses,
       count(*) FILTER (WHERE i.operational_status = 'Up') AS up
FROM machines m JOIN ip_addresses i ON i.machine_id = m.id
GROUP BY 1
ORDER BY 1 NULLS FIRST
