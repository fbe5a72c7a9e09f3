-- Out-of-order events within a 5 second tolerance land in their own windows; beyond it they
-- are late and adjusted.
SELECT COUNT(*) AS n, MAX(v) AS maxV, System.Timestamp() AS windowEnd
INTO counts
FROM telemetry TIMESTAMP BY ts
GROUP BY TumblingWindow(second, 10)
