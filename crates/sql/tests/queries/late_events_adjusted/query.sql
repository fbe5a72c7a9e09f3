-- Late events with the default policy: moved forward to the watermark and counted there.
SELECT deviceId, COUNT(*) AS n, System.Timestamp() AS windowEnd
INTO counts
FROM telemetry TIMESTAMP BY ts
GROUP BY deviceId, TumblingWindow(second, 10)
