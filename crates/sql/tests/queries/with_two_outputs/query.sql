-- One WITH step feeding two outputs: a filter and a windowed summary.
WITH readings AS (
    SELECT deviceId, CAST(temperature AS float) AS temp, eventTime
    FROM telemetry TIMESTAMP BY eventTime
    WHERE temperature IS NOT NULL
)
SELECT deviceId, temp INTO hot FROM readings WHERE temp > 30;

SELECT deviceId, MAX(temp) AS maxTemp, System.Timestamp() AS windowEnd
INTO summary
FROM readings
GROUP BY deviceId, TumblingWindow(minute, 1)
