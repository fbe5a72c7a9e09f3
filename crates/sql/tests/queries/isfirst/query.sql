-- The first reading of each device in each minute. ISFIRST uses the same (start, end] minutes
-- as TumblingWindow, so an event at exactly 00:01:00 belongs to the first minute.
SELECT deviceId, reading
INTO firsts
FROM telemetry TIMESTAMP BY eventTime
WHERE ISFIRST(minute, 1) OVER (PARTITION BY deviceId) = 1
