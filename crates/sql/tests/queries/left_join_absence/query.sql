-- ASA's "detect the absence of events" pattern: cars that entered and did not leave within
-- 15 minutes. A LEFT OUTER JOIN row with no match comes out once no exit can match any more,
-- stamped with the last time a match was possible: DATEDIFF counts minute boundaries, so for an
-- entry at 00:01:00 that is 00:16:59.999.
SELECT e.tollId, e.licensePlate, e.entryTime, System.Timestamp() AS detectedAt
INTO missingExits
FROM entries e TIMESTAMP BY entryTime
LEFT OUTER JOIN exits x TIMESTAMP BY exitTime
ON e.tollId = x.tollId AND e.licensePlate = x.licensePlate AND DATEDIFF(minute, e, x) BETWEEN 0 AND 15
WHERE x.licensePlate IS NULL
