-- ASA documentation pattern: how many different car makes passed in each 10-second window.
SELECT COUNT(DISTINCT make) AS makes, COUNT(*) AS cars, System.Timestamp() AS windowEnd
INTO makes
FROM entries TIMESTAMP BY entryTime
GROUP BY TumblingWindow(second, 10)
