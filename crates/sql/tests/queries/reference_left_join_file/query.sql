-- LEFT JOIN with reference data read from a JSON lines file: every reading comes out once per
-- matching row (device 2 has two), and a reading whose device has no row comes out once with
-- the table's columns NULL. Keys compare as values: the reading's 1.0 finds the row of 1.
SELECT r.deviceId, r.temperature, d.site, d.floor
INTO enriched
FROM readings r TIMESTAMP BY ts
LEFT JOIN devices d ON r.deviceId = d.deviceId
