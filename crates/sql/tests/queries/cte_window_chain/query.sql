-- A windowed step feeding a windowed statement. The step's rows are stamped with their window
-- end (10s), which falls inside the reader's (0s, 10s] window because windows include their end.
WITH perDevice AS (
    SELECT deviceId, AVG(temp) AS avgTemp
    FROM telemetry TIMESTAMP BY ts
    GROUP BY deviceId, TumblingWindow(second, 10)
)
SELECT COUNT(*) AS devices, MAX(avgTemp) AS hottest, System.Timestamp() AS windowEnd
INTO fleet
FROM perDevice
GROUP BY TumblingWindow(second, 10)
