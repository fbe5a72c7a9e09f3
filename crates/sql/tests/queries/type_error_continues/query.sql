-- An event whose temperature is a string cannot be averaged: it is reported and skipped, and
-- the window carries on without it.
SELECT deviceId, AVG(temp) AS avgTemp, COUNT(*) AS n
INTO stats
FROM telemetry TIMESTAMP BY ts
GROUP BY deviceId, TumblingWindow(second, 10)
