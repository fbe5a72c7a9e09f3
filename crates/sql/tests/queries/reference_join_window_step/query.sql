-- A window's rows joined with reference data: each device's 10-second average is compared with
-- its own threshold as the table is when the window closes. The readings are read per device
-- clock (TIMESTAMP BY ... OVER), so d2's clock, ten minutes behind, closes its own windows.
WITH averages AS (
    SELECT deviceId, AVG(temperature) AS avgTemp, System.Timestamp() AS windowEnd
    FROM readings TIMESTAMP BY ts OVER deviceId
    GROUP BY deviceId, TumblingWindow(second, 10)
)
SELECT a.deviceId, a.avgTemp, t.threshold, a.windowEnd
INTO alerts
FROM averages a
JOIN thresholds t ON a.deviceId = t.deviceId
WHERE a.avgTemp > t.threshold
