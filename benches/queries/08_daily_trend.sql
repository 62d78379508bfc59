-- Daily trend over the whole history (grouped by the snapshot, formatted once a day).
SELECT to_char(snapshot, '%Y%m%dT%H%M%SZ') AS snapshot, machines, active, high_risk
FROM (
  SELECT snapshot, count(*) AS machines,
         count(*) FILTER (WHERE health_status = 'Active') AS active,
         count(*) FILTER (WHERE risk_score = 'High') AS high_risk
  FROM machines_history
  GROUP BY snapshot
) t
ORDER BY 1
