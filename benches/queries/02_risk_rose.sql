-- Machines whose risk rose between the last two snapshots.
WITH last2 AS (
  SELECT snapshot FROM (SELECT DISTINCT snapshot FROM machines_history) s
  ORDER BY snapshot DESC LIMIT 2
),
r AS (
  SELECT id, snapshot,
         CASE risk_score WHEN 'None' THEN 0 WHEN 'Informational' THEN 1 WHEN 'Low' THEN 2
                         WHEN 'Medium' THEN 3 WHEN 'High' THEN 4 END AS level
  FROM machines_history
  WHERE snapshot IN (SELECT snapshot FROM last2)
)
SELECT cur.id, prev.level AS before, cur.level AS after
FROM r cur JOIN r prev ON cur.id = prev.id AND cur.snapshot > prev.snapshot
WHERE cur.level > prev.level
ORDER BY cur.id
