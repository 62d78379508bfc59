SELECT snapshot, risk_score, health_status
FROM machines_history WHERE computer_dns_name = 'mymachine1.contoso.com'
ORDER BY 1
