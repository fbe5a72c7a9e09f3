-- The input of substreams_device_clock_behind without OVER: one clock for the partition.
-- d2's events, ten minutes behind d1's, are all late and dropped; d1's late event too.
SELECT deviceId, COUNT(*) AS readings, AVG(temp) AS avgTemp, System.Timestamp() AS windowEnd
INTO averages
FROM telemetry TIMESTAMP BY eventTime
GROUP BY deviceId, TumblingWindow(minute, 1)
