SELECT id FROM machines WHERE list_contains(machine_tags, 'VIP') ORDER BY id
