-- Machines carrying a tag.
SELECT id FROM machines WHERE array_has(machine_tags, 'VIP') ORDER BY id
