-- Two inputs in one job: each has its own watermark, so input B running far ahead in time does
-- not close input A's windows.
SELECT deviceId, COUNT(*) AS n, System.Timestamp() AS windowEnd
INTO countsA
FROM inputA TIMESTAMP BY ts
GROUP BY deviceId, TumblingWindow(second, 10);

SELECT * INTO copyB FROM inputB
