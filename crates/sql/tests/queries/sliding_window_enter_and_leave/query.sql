-- A sliding window without HAVING shows every change of its content: a row when an event
-- enters and when one leaves (10 seconds later), never for an empty window.
SELECT tollId, COUNT(*) AS cars, SUM(v) AS total, System.Timestamp() AS at
INTO sliding
FROM entries TIMESTAMP BY entryTime
GROUP BY tollId, SlidingWindow(second, 10)
