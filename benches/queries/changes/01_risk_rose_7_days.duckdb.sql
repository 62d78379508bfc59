-- The same question asked of the history with lag().
WITH lv(name, level) AS (VALUES ('None', 0), ('Informational', 1), ('Low', 2), ('Medium', 3), ('High', 4)),
h AS (
  SELECT id, snapshot, risk_score,
         lag(risk_score) OVER (PARTITION BY id ORDER BY snapshot) AS before
  FROM machines_history
)
SELECT h.id, h.snapshot, h.before, h.risk_score AS after
FROM h
JOIN lv o ON o.name = h.before
JOIN lv n ON n.name = h.risk_score
WHERE n.level > o.level
  AND strptime(h.snapshot, '%Y%m%dT%H%M%SZ')
      > (SELECT max(strptime(snapshot, '%Y%m%dT%H%M%SZ')) FROM machines_history) - INTERVAL 7 DAY
ORDER BY 1, 2
