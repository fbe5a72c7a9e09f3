-- ASA documentation pattern: per-device average over 10-second tumbling windows, only the
-- windows whose average is above a threshold.
SELECT deviceId, AVG(temperature) AS avgTemp, COUNT(*) AS readings, System.Timestamp() AS windowEnd
INTO alerts
FROM telemetry TIMESTAMP BY eventTime
GROUP BY deviceId, TumblingWindow(second, 10)
HAVING AVG(temperature) > 25
