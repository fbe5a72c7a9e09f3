-- ASA documentation pattern: counts per toll booth over 10-second windows every 5 seconds.
SELECT System.Timestamp() AS windowEnd, tollId, COUNT(*) AS cars, SUM(toll) AS total
INTO hops
FROM entries TIMESTAMP BY entryTime
GROUP BY tollId, HoppingWindow(second, 10, 5)
