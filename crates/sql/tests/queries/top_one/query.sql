-- ASA documentation pattern: the fastest car of each 10-second window, as a whole record.
-- Ties keep the first event in arrival order; a NULL speed sorts first, so it is never the
-- fastest with DESC.
SELECT TopOne() OVER (ORDER BY speed DESC, plate ASC) AS fastest, COUNT(*) AS cars, System.Timestamp() AS windowEnd
INTO fastest
FROM entries TIMESTAMP BY entryTime
GROUP BY TumblingWindow(second, 10)
