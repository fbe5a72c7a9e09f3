-- Late events with the Drop policy: left out, and reported.
SELECT deviceId, COUNT(*) AS n, System.Timestamp() AS windowEnd
INTO counts
FROM telemetry TIMESTAMP BY ts
GROUP BY deviceId, TumblingWindow(second, 10)
