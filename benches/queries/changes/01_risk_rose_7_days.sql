-- Devices whose risk rose in the last 7 days, from the stored changes.
WITH lv(name, level) AS (VALUES ('None', 0), ('Informational', 1), ('Low', 2), ('Medium', 3), ('High', 4))
SELECT c.id, to_char(c.snapshot, '%Y%m%dT%H%M%SZ') AS snapshot, c.old_value AS before, c.new_value AS after
FROM machine_changes c
JOIN lv o ON o.name = c.old_value
JOIN lv n ON n.name = c.new_value
WHERE c.field = 'riskScore' AND n.level > o.level
  AND c.snapshot > (SELECT max(snapshot) FROM snapshots) - INTERVAL '7 days'
ORDER BY 1, 2
