-- Two partitions: the slower one holds the watermark back until it has been idle (in
-- processing time) for longer than the 5 second idle timeout.
SELECT COUNT(*) AS n, System.Timestamp() AS windowEnd
INTO counts
FROM telemetry TIMESTAMP BY ts
GROUP BY TumblingWindow(second, 10)
