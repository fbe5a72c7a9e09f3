-- Substreams: TIMESTAMP BY ... OVER deviceId gives each device its own event-time clock. d2's
-- clock is ten minutes behind: its events are processed on its own timeline (none is late or
-- adjusted), and d1's windows close as soon as d1's clock passes them, not ten minutes later.
SELECT deviceId, COUNT(*) AS readings, AVG(temp) AS avgTemp, System.Timestamp() AS windowEnd
INTO averages
FROM telemetry TIMESTAMP BY eventTime OVER deviceId
GROUP BY deviceId, TumblingWindow(minute, 1)
