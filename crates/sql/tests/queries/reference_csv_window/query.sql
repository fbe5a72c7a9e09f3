-- Reference data from a CSV file feeding a window: readings are grouped by their device's site,
-- a column of the table. Unquoted numbers in the CSV are numbers, quoted fields stay strings.
SELECT d.site, COUNT(*) AS readings, AVG(r.temperature) AS avgTemp, System.Timestamp() AS windowEnd
INTO perSite
FROM readings r TIMESTAMP BY ts
JOIN devices d ON r.deviceId = d.deviceId AND d.active = 1
GROUP BY d.site, TumblingWindow(second, 10)
