-- Machines joined with user_machines: the users with the most machines.
SELECT u.user_id, count(*) AS machines, count(*) FILTER (WHERE m.risk_score = 'High') AS high_risk
FROM user_machines u JOIN machines m ON m.id = u.machine_id
GROUP BY 1
ORDER BY 2 DESC, 1
LIMIT 20
