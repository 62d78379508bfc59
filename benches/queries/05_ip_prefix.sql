-- An address prefix search through ip_addresses.
SELECT machine_id, ip_address FROM ip_addresses WHERE ip_address LIKE '10.12.%' ORDER BY 1, 2
