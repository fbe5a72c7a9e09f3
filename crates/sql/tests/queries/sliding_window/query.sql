-- ASA documentation pattern: alert when a toll booth sees at least 2 cars within 10 seconds.
SELECT System.Timestamp() AS at, tollId, COUNT(*) AS cars
INTO busy
FROM entries TIMESTAMP BY entryTime
GROUP BY tollId, SlidingWindow(second, 10)
HAVING COUNT(*) >= 2
