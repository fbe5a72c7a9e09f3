-- A windowless moving average per device over the last 10 seconds, (t - 10s, t].
SELECT deviceId, temp, AVG(temp) OVER (PARTITION BY deviceId LIMIT DURATION(second, 10)) AS avg10
INTO smoothed
FROM telemetry TIMESTAMP BY ts
