-- Changes per property per day over the whole history, from the stored changes.
SELECT to_char(snapshot, '%Y%m%dT%H%M%SZ') AS snapshot, field, changes
FROM (
  SELECT snapshot, field, count(*) AS changes
  FROM machine_changes
  WHERE change = 'changed'
  GROUP BY snapshot, field
) t
ORDER BY 1, 2
