-- lag() over the whole history, partitioned by id: risk changes.
SELECT count(*) AS risk_changes
FROM (
  SELECT risk_score, lag(risk_score) OVER (PARTITION BY id ORDER BY snapshot) AS previous
  FROM machines_history
) t
WHERE previous IS NOT NULL AND previous <> risk_score
