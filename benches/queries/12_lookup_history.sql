-- Point lookup by name across the history.
SELECT to_char(snapshot, '%Y%m%dT%H%M%SZ') AS snapshot, risk_score, health_status
FROM machines_history WHERE computer_dns_name = 'mymachine1.contoso.com'
ORDER BY 1
