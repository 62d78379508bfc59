SELECT snapshot, count(*) AS machines,
       count(*) FILTER (WHERE health_status = 'Active') AS active,
       count(*) FILTER (WHERE risk_score = 'High') AS high_risk
FROM machines_history
GROUP BY 1
ORDER BY 1
