-- ASA's array flattening: one row per element of a device's readings array, then a windowed
-- aggregate over the flattened rows.
WITH flat AS (
    SELECT d.deviceId, r.ArrayIndex AS idx, r.ArrayValue.sensor AS sensor, r.ArrayValue.value AS value
    FROM telemetry d TIMESTAMP BY ts
    CROSS APPLY GetArrayElements(d.readings) AS r
    WHERE r.ArrayValue.value IS NOT NULL
)
SELECT * INTO readings FROM flat;

SELECT sensor, SUM(value) AS total, COUNT(*) AS n INTO totals FROM flat GROUP BY sensor, TumblingWindow(second, 10)
