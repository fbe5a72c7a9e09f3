-- SELECT *, expr AS name: the row as it came plus extra columns, both for input events (a JSON
-- row: the columns are added as fields) and for a step's rows (known columns: appended).
WITH enriched AS (
    SELECT *, UPPER(deviceId) AS device, System.Timestamp() AS at FROM telemetry TIMESTAMP BY ts
),
readings AS (
    SELECT deviceId, temp FROM telemetry TIMESTAMP BY ts
)
SELECT * INTO everything FROM enriched;
SELECT device, temp INTO hot FROM enriched WHERE temp > 30;
SELECT *, temp * 2 AS doubled INTO doubled FROM readings
