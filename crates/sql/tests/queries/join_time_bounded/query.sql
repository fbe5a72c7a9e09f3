-- The ASA toll booth example: match each car's exit with its entry within 15 minutes, then
-- aggregate the trips. A row from either input finds the matching rows of the other one that
-- arrived before it; the match is stamped with the later of the two times.
WITH trips AS (
    SELECT e.tollId, e.licensePlate, e.entryTime, x.exitTime, DATEDIFF(second, e, x) AS durationSeconds
    FROM entries e TIMESTAMP BY entryTime
    JOIN exits x TIMESTAMP BY exitTime
    ON e.tollId = x.tollId AND e.licensePlate = x.licensePlate
        AND DATEDIFF(minute, e, x) BETWEEN 0 AND 15
)
SELECT * INTO tripDurations FROM trips;

SELECT COUNT(*) AS trips, AVG(durationSeconds) AS avgSeconds, System.Timestamp() AS windowEnd
INTO tripStats
FROM trips
GROUP BY TumblingWindow(minute, 10)
