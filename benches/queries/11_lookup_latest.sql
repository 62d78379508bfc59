-- Point lookup by name in the latest snapshot.
SELECT id, computer_dns_name, os_platform, risk_score
FROM machines WHERE computer_dns_name = 'mymachine1.contoso.com'
